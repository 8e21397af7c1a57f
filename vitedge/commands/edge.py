"""`vitedge` commands: edge."""

from vitedge.cli import app, console, out  # noqa: F401
