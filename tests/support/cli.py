"""Run the real `vitedge` entry point in-process, as a user's shell would."""

from __future__ import annotations

import sys

import pytest


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:  # noqa: ANN001 - pytest fixtures
    """`vitedge ARGS` through `vitedge.cli.run` (user errors → exit 2): (exit code, stdout, stderr)."""
    from vitedge.cli import console, run

    monkeypatch.setattr(sys, "argv", ["vitedge", *args])
    monkeypatch.setenv("COLUMNS", "200")
    # the stderr console reads COLUMNS once, when made: pytest-xdist's workers start with
    # COLUMNS=80, which wrapped a long temporary path out of the line a test looks for
    monkeypatch.setattr(console, "width", 200)
    with pytest.raises(SystemExit) as exit_info:
        run()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err
