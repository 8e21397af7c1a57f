from vitedge.cli import run

run()
