"""Turn an artifact into a board bundle: the artifact's files, plus what a board needs to run
them without torch or vitedge.

The bundle is still an artifact (its manifest lists every file with its sha256, so
`open_artifact` and `verify_checksums` accept it), with these files added:
`run_bundle.py` (the standalone runner), `preprocess.py` (vitedge's own
`calibration/preprocess.py`, copied byte for byte rather than rewritten, so the board
prepares pixels exactly as the desktop did), `cpu.py` and `errors.py` (vitedge's CPU facts and
its one-line error reader, likewise copied), `requirements.txt` and `labels.txt`.

An ExecuTorch bundle is the one that needs torch on the board: ExecuTorch's Python runtime
(the pybindings in its wheel) links libtorch and exchanges torch tensors. Its requirements
pin the torch release that wheel was built against and name PyTorch's CPU wheel index, since
PyPI's only aarch64 torch wheel is the CUDA build (it pulls gigabytes of CUDA libraries onto
a Raspberry Pi).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from ..calibration import preprocess
from ..core import cpu, errors
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
CPU = "cpu.py"
ERRORS = "errors.py"
REQUIREMENTS = "requirements.txt"
LABELS = "labels.txt"
BUNDLE_FILES = (RUNNER, PREPROCESS, CPU, ERRORS, REQUIREMENTS, LABELS)
# Oldest releases with aarch64 + x86_64 wheels for Python 3.9-3.12 that read our exports
# (opset 17, QDQ int8); the board may well have newer ones. ExecuTorch reads programs of its
# own minor release only, and its 1.5 wheels are built against torch 2.14.
RUNTIME_REQUIREMENTS = {
    "onnxruntime": ("onnxruntime>=1.17",),
    "openvino": ("openvino>=2024.4",),
    "executorch": ("executorch>=1.5,<1.6", "torch>=2.14,<2.15"),
}
# pip options a runtime's requirements need (requirements.txt takes them as lines of their own)
RUNTIME_PIP_OPTIONS = {"executorch": ("--extra-index-url https://download.pytorch.org/whl/cpu",)}
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}


def is_bundle(folder: Path) -> bool:
    """A bundle is an artifact whose manifest says how it was bundled and that has its runner."""
    folder = Path(folder)
    return (folder / RUNNER).is_file() and (folder / MANIFEST).is_file() and "bundle" in read_manifest(folder)


def _runtime_version(runtime: str) -> str:
    from importlib import metadata

    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    if runtime == "openvino":
        import openvino

        return openvino.get_version()
    try:  # executorch, torch: read without importing them
        return metadata.version(runtime)
    except metadata.PackageNotFoundError:
        return "not installed on this machine"


def _choose_runtime(manifest: dict[str, Any], runtime: str | None) -> str:
    fmt = manifest["format"]
    if fmt not in DEFAULT_RUNTIME:
        raise VitedgeError(
            f"cannot bundle a {fmt!r} artifact",
            "bundle an ONNX, OpenVINO or ExecuTorch artifact made by `vitedge export`",
        )
    runtime = runtime or DEFAULT_RUNTIME[fmt]
    if runtime not in RUNTIME_REQUIREMENTS:
        raise VitedgeError(f"unknown bundle runtime {runtime!r}", f"use one of {', '.join(RUNTIME_REQUIREMENTS)}")
    if fmt == "openvino" and runtime != "openvino":
        raise VitedgeError(
            "an OpenVINO IR artifact runs only with --runtime openvino", "export to ONNX for an onnxruntime bundle"
        )
    if (fmt == "executorch") != (runtime == "executorch"):
        raise VitedgeError(
            f"a {fmt} artifact cannot run with --runtime {runtime}",
            "ExecuTorch runs .pte programs only: export with --to executorch for an executorch bundle",
        )
    return runtime


def requirements_text(runtime: str) -> str:
    template = (BUNDLE_SOURCE / REQUIREMENTS).read_text()
    needs = (
        f"numpy, Pillow and {runtime}; nothing else (no torch)"
        if runtime != "executorch"
        else "numpy, Pillow, executorch and torch (ExecuTorch's Python runtime links libtorch)"
    )
    built = f"{runtime} {_runtime_version(runtime)}" + (
        f", torch {_runtime_version('torch')}" if runtime == "executorch" else ""
    )
    lines = [*RUNTIME_PIP_OPTIONS.get(runtime, ()), *RUNTIME_REQUIREMENTS[runtime]]
    return template.format(
        bundle=RUNNER,
        needs=needs,
        built=built,
        numpy_version=np.__version__,
        pillow_version=PIL.__version__,
        runtime_lines="\n".join(lines),
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
    from ..models import artifact_data_config

    labels = artifact_data_config(artifact, manifest).labels
    with atomic_folder(out, marker=MANIFEST, force=force) as staging:
        for entry in manifest["files"]:
            if entry["path"] in BUNDLE_FILES:
                continue  # rebundling a bundle: take the runner files fresh from this vitedge
            target = inside(staging, entry["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(inside(artifact, entry["path"]), target)
        shutil.copyfile(BUNDLE_SOURCE / RUNNER, staging / RUNNER)
        shutil.copyfile(preprocess.__file__, staging / PREPROCESS)
        shutil.copyfile(cpu.__file__, staging / CPU)
        shutil.copyfile(errors.__file__, staging / ERRORS)
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
