"""`vitedge` commands: export."""

from vitedge.cli import app, console, out  # noqa: F401
