"""An artifact is a folder: model file(s) + `manifest.json`. It is everything a runner needs
(the board bundle is the same folder), and it appears whole or not at all: exports write into
a hidden temp folder beside the target and rename it into place at the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from targets.manifest import MANIFEST, sha256_file
from vitedge.errors import VitedgeError


def file_entries(folder: Path) -> list[dict[str, Any]]:
    """sha256 and size of every file in the artifact except the manifest itself."""
    return [
        {"path": path.relative_to(folder).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    ]


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Complete `manifest` with file checksums and a timestamp, and write it."""
    full = {**manifest, "files": file_entries(folder), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(folder / MANIFEST, full)
    return full


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target`, on any error
    (Ctrl-C included) it is deleted, so no half-written artifact is ever left behind."""
    target = Path(target)
    if target.exists() and not force:
        raise VitedgeError(f"output folder {target} already exists", "pass --force to replace it, or choose another --out")
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
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise VitedgeError(f"disk full while writing {target}", "free some space or choose another --out") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
