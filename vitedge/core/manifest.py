"""An artifact's `manifest.json`: written with every file's sha256 by the exporters and the
bundle builder, read and checked by every runner through this module only (runners never
know how an artifact was made), and never allowed to name a path outside its folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import VitedgeError
from .io import write_json_atomic

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_artifact(path: Path) -> bool:
    """A folder `vitedge export` wrote (it holds the manifest)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the artifact `folder`, with its fields and
    every path it names checked: a manifest that points outside its folder is refused here, so
    no reader (runner, bundle builder, size summary) can be steered outside the artifact."""
    folder = Path(folder)
    if folder.is_file():  # the model file or the manifest itself: the checksums are of the folder's files
        holder = (
            f"the folder that holds it, {folder.parent}"
            if is_artifact(folder.parent)
            else "a folder written by `vitedge export`"
        )
        raise VitedgeError(f"{folder} is a file, not a vitedge artifact folder", f"pass {holder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise VitedgeError(
            f"{folder} is not a vitedge artifact (no {MANIFEST})", "pass a folder written by `vitedge export`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VitedgeError(f"{path} is not valid JSON: {exc}", "re-export the artifact") from None
    if not isinstance(manifest, dict):
        raise VitedgeError(
            f"{path} is not a vitedge manifest (a JSON {type(manifest).__name__}, not an object)",
            "re-export the artifact",
        )
    for key in ("format", "precision", "model_file", "files", "data_config"):
        if key not in manifest:
            raise VitedgeError(f"{path} lacks the field {key!r}", "re-export the artifact with this version of vitedge")
    files = manifest["files"]
    if not isinstance(files, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("path"), str)
        and isinstance(e.get("sha256"), str)
        and isinstance(e.get("bytes"), int)
        for e in files
    ):
        raise VitedgeError(
            f"{path}: 'files' must list {{path, sha256, bytes}} entries",
            "re-export the artifact with this version of vitedge",
        )
    for name in [manifest["model_file"], *(e["path"] for e in files)]:
        _check_relative(name, path)
    labels, batch = manifest.get("labels", []), manifest.get("batch", "dynamic")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise VitedgeError(f"{path}: 'labels' must be a list of class names", "re-export the artifact")
    if batch != "dynamic" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise VitedgeError(
            f"{path}: 'batch' must be \"dynamic\" or a whole number >= 1, not {batch!r}", "re-export the artifact"
        )
    return manifest


def _check_relative(name: object, manifest_path: Path) -> None:
    """A manifest path must be a plain relative path below its folder: not absolute, no `..`."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise VitedgeError(
            f"{manifest_path} names the file {name!r}, which is not a relative path inside the artifact",
            "re-export the artifact; never edit file names in a manifest by hand",
        )
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise VitedgeError(
            f"{manifest_path} names the file {name!r}, outside the artifact folder",
            "an artifact is self-contained: re-export it, or copy the file into the folder and re-export",
        )


def inside(folder: Path, name: str) -> Path:
    """`folder / name`, refused when it resolves outside `folder` (a symlink that leaves it)."""
    root = Path(folder).resolve()
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root):
        raise VitedgeError(
            f"{Path(folder) / name} leads outside the artifact folder {folder} (to {resolved})",
            "replace the link by the file itself (an artifact is self-contained)",
        )
    return Path(folder) / name


def loaded_files(manifest: dict[str, Any]) -> list[str]:
    """The files a runtime reads to load the model: the model file, and for OpenVINO the
    weights `.bin` it opens implicitly beside the `.xml`."""
    model_file = manifest["model_file"]
    if manifest["format"] == "openvino" and model_file.endswith(".xml"):
        return [model_file, model_file[: -len(".xml")] + ".bin"]
    return [model_file]


def model_path(folder: Path, manifest: dict[str, Any]) -> Path:
    """Where the model file of `manifest` is, checked to lie inside `folder`."""
    for name in loaded_files(manifest):
        inside(folder, name)
    return inside(folder, manifest["model_file"])


def verify_checksums(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact whose files differ from what its manifest recorded, whose model is not
    among the recorded files (it would load unchecked), or that reaches outside its folder."""
    listed = {entry["path"] for entry in manifest["files"]}
    for name in loaded_files(manifest):
        if name not in listed:
            raise VitedgeError(
                f"{Path(folder) / MANIFEST}: the model file {name} is not among the checksummed files, so it cannot be verified",
                "re-export the artifact (its manifest must list every file it loads)",
            )
    for entry in manifest["files"]:
        path = inside(folder, entry["path"])
        if not path.is_file():
            raise VitedgeError(f"artifact file {path} is missing", "copy the whole artifact folder, or re-export it")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise VitedgeError(
                f"{path} does not match the sha256 in its manifest (corrupt or modified)",
                "re-export the artifact or copy it again",
            )


def file_entries(folder: Path) -> list[dict[str, Any]]:
    """sha256 and size of every file in the artifact except the manifest itself."""
    return [
        {"path": path.relative_to(folder).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    ]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Complete `manifest` with file checksums and a timestamp, and write it."""
    full = {
        **manifest,
        "files": file_entries(folder),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(folder / MANIFEST, full)
    return full
