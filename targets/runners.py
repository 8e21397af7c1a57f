"""Open a runner for an artifact folder (by its manifest's format) on a target device."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VitedgeError
from ..core.manifest import model_path as checked_model_path
from ..core.manifest import read_manifest, verify_checksums
from .base import Runner


def open_artifact(folder: Path, *, target: str = "cpu", threads: int | None = None, check: bool = True) -> Runner:
    """Read the manifest, check every file's sha256, and load the model for `target`. The model
    path is checked to lie inside `folder` even with `check=False`: nothing outside is read."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if check:
        verify_checksums(folder, manifest)
    model_path = checked_model_path(folder, manifest)
    precision = manifest["precision"]
    if manifest["format"] == "onnx":
        from .onnxruntime import open_onnx

        return open_onnx(model_path, precision=precision, device=target, threads=threads)
    if manifest["format"] == "openvino":
        from .openvino import open_openvino

        return open_openvino(model_path, precision=precision, device=target, threads=threads)
    if manifest["format"] == "executorch":
        from .executorch import open_executorch

        return open_executorch(
            model_path,
            precision=precision,
            device=target,
            threads=threads,
            batch=manifest.get("batch", "dynamic"),
            max_batch=manifest.get("max_batch"),
        )
    raise VitedgeError(
        f"{folder}: unknown artifact format {manifest['format']!r}", "re-export it with `vitedge export`"
    )
