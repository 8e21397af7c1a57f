"""Reading an artifact's `manifest.json` and checking its files against it. Runners read
artifacts through this module only; they never know how an artifact was made."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vitedge.errors import VitedgeError

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST if folder.is_dir() else folder
    if not path.is_file():
        raise VitedgeError(f"{folder} is not a vitedge artifact (no {MANIFEST})", "pass a folder written by `vitedge export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VitedgeError(f"{path} is not valid JSON: {exc}", "re-export the artifact") from None
    for key in ("format", "precision", "model_file", "files", "data_config"):
        if key not in manifest:
            raise VitedgeError(f"{path} lacks the field {key!r}", "re-export the artifact with this version of vitedge")
    return manifest


def verify_checksums(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact whose files differ from what its manifest recorded."""
    for entry in manifest["files"]:
        path = Path(folder) / entry["path"]
        if not path.is_file():
            raise VitedgeError(f"artifact file {path} is missing", "copy the whole artifact folder, or re-export it")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise VitedgeError(f"{path} does not match the sha256 in its manifest (corrupt or modified)", "re-export the artifact or copy it again")
