"""`vitedge` commands: compress."""

from vitedge.cli import app, console, out  # noqa: F401
