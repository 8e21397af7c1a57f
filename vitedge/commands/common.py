"""What more than one command shares: option parsers and the line printed per training epoch."""

from __future__ import annotations

from ..cli import console
from ..core.errors import VitedgeError


def parse_samples(value: str) -> int | None:
    """--samples N or --samples all (None: every image)."""
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise VitedgeError(
            f"--samples must be a number or 'all', got {value!r}", "e.g. --samples 1000 or --samples all"
        ) from None
    if count <= 0:
        raise VitedgeError(f"--samples must be positive, got {count}", "e.g. --samples 1000")
    return count


def print_epoch(log) -> None:  # noqa: ANN001 - compress.train.EpochLog
    """One line per epoch, for `train` and `distill` alike."""
    test = f" test top-1 {log.test_top1:.2f}%" if log.test_top1 is not None else ""
    console.print(
        f"epoch {log.epoch}: loss {log.loss:.4f} train top-1 {log.train_top1:.2f}%{test} ({log.seconds:.0f} s)"
    )
