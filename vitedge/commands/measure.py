"""`vitedge` commands: measure."""

from vitedge.cli import app, console, out  # noqa: F401
