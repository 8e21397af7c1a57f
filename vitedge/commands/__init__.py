"""CLI commands by area; each module adds its commands to `vitedge.cli.app` on import."""
