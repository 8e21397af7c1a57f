"""Turn an artifact into a board bundle: the artifact's files, plus what a board needs to run
them without torch or vitedge.

The bundle is still an artifact (its manifest lists every file with its sha256, so
`open_artifact` and `verify_checksums` accept it), with four files added:
`run_bundle.py` (the standalone runner), `preprocess.py` (vitedge's own
`calibration/preprocess.py`, copied byte for byte rather than rewritten, so the board
prepares pixels exactly as the desktop did), `requirements.txt` and `labels.txt`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from ..calibration import preprocess
from ..core.errors import VitedgeError
from ..core.io import atomic_folder
from ..core.manifest import (
    MANIFEST,
    inside,
    read_manifest,
    verify_checksums,
    write_manifest,
)
from ..core.precision import float_precision

BUNDLE_SOURCE = Path(__file__).with_name("bundle")
RUNNER = "run_bundle.py"
PREPROCESS = "preprocess.py"
REQUIREMENTS = "requirements.txt"
LABELS = "labels.txt"
BUNDLE_FILES = (RUNNER, PREPROCESS, REQUIREMENTS, LABELS)
# Oldest releases with aarch64 + x86_64 wheels for Python 3.9-3.12 that read our exports
# (opset 17, QDQ int8); the board may well have newer ones.
RUNTIME_MINIMUM = {"onnxruntime": "1.17", "openvino": "2024.4"}
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}


def is_bundle(folder: Path) -> bool:
    """A bundle is an artifact whose manifest says how it was bundled and that has its runner."""
    folder = Path(folder)
    return (folder / RUNNER).is_file() and (folder / MANIFEST).is_file() and "bundle" in read_manifest(folder)


def _runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    import openvino

    return openvino.get_version()


def _choose_runtime(manifest: dict[str, Any], runtime: str | None) -> str:
    fmt = manifest["format"]
    if fmt not in DEFAULT_RUNTIME:
        raise VitedgeError(
            f"cannot bundle a {fmt!r} artifact", "bundle an ONNX or OpenVINO artifact made by `vitedge export`"
        )
    runtime = runtime or DEFAULT_RUNTIME[fmt]
    if runtime not in RUNTIME_MINIMUM:
        raise VitedgeError(f"unknown bundle runtime {runtime!r}", f"use one of {', '.join(RUNTIME_MINIMUM)}")
    if fmt == "openvino" and runtime != "openvino":
        raise VitedgeError(
            "an OpenVINO IR artifact runs only with --runtime openvino", "export to ONNX for an onnxruntime bundle"
        )
    return runtime


def requirements_text(runtime: str) -> str:
    template = (BUNDLE_SOURCE / REQUIREMENTS).read_text()
    return template.format(
        bundle=RUNNER,
        runtime=runtime,
        runtime_minimum=RUNTIME_MINIMUM[runtime],
        runtime_version=_runtime_version(runtime),
        numpy_version=np.__version__,
        pillow_version=PIL.__version__,
    )


def build_bundle(artifact: Path, out: Path, *, runtime: str | None = None, force: bool = False) -> Path:
    """Write a bundle for `artifact` to `out` (whole or not at all) and return `out`.

    `runtime` is "onnxruntime" or "openvino"; by default the artifact's own runtime. The
    artifact's checksums are verified first, so a corrupt model never reaches a board, and
    every path is checked (by `read_manifest` and `inside`) so that, whatever the manifest
    says, only files inside `artifact` are read and only files inside `out` are written."""
    artifact, out = Path(artifact), Path(out)
    manifest = read_manifest(artifact)
    verify_checksums(artifact, manifest)
    runtime = _choose_runtime(manifest, runtime)
    if out.resolve() == artifact.resolve() or out.resolve().is_relative_to(artifact.resolve()):
        raise VitedgeError(f"--out {out} is inside the artifact {artifact}", "choose a folder outside the artifact")
    labels = tuple(manifest["data_config"].get("labels") or ())
    with atomic_folder(out, force=force) as staging:
        for entry in manifest["files"]:
            if entry["path"] in BUNDLE_FILES:
                continue  # rebundling a bundle: take the runner files fresh from this vitedge
            target = inside(staging, entry["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(inside(artifact, entry["path"]), target)
        shutil.copyfile(BUNDLE_SOURCE / RUNNER, staging / RUNNER)
        shutil.copyfile(preprocess.__file__, staging / PREPROCESS)
        (staging / REQUIREMENTS).write_text(requirements_text(runtime))
        if labels:
            (staging / LABELS).write_text("".join(f"{label}\n" for label in labels))
        source = {k: v for k, v in manifest.items() if k not in ("files", "created", "bundle")}
        bundle = {
            "runtime": runtime,
            "runner": RUNNER,
            "artifact": str(artifact.resolve()),
            "artifact_created": manifest.get("created"),
            # what the board's runtime is told to compute the float parts in (core/precision.py)
            "inference_precision": float_precision(manifest["precision"], "cpu"),
        }
        write_manifest(staging, {**source, "bundle": bundle})
        verify_checksums(staging, read_manifest(staging))
    return out
