"""Every file vitedge writes appears whole or not at all: text, JSON and figures go to a temp
file beside the target and are renamed into place; folders (artifacts, run outputs, bundles)
are staged in a hidden temp folder beside the target and renamed at the end."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import VitedgeError


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path` and rename it into place: a reader never sees
    half a file, a full disk or an unwritable folder becomes one line, and no partial file is
    left either way."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise VitedgeError(f"disk full while writing {path}", "free some space or choose another --out") from None
        raise VitedgeError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable --out folder") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """`write_bytes_atomic` of `text` in UTF-8."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_figure_atomic(figure: Any, path: Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG via temp file + rename, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target`, on any error
    (Ctrl-C included) it is deleted, so no half-written artifact is ever left behind."""
    target = Path(target)
    if target.exists() and not force:
        raise VitedgeError(
            f"output folder {target} already exists", "pass --force to replace it, or choose another --out"
        )
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".partial"))
    except OSError as exc:
        raise VitedgeError(f"cannot write to {parent}: {exc.strerror}", "choose a writable --out folder") from None
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise VitedgeError(f"disk full while writing {target}", "free some space or choose another --out") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
