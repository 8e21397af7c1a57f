"""Helpers shared by the board tests (bundle, SSH runner, target detection): a minimal ONNX
artifact, a torch-free virtualenv, a virtualenv holding exactly a board's packages (linked from
this machine's installation, no download), and vitedge's own logits for comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import make_tiny_vit
from vitedge.calibration import preprocess
from vitedge.calibration.preprocess import preprocess_batch
from vitedge.core.io import atomic_folder
from vitedge.core.manifest import MANIFEST, read_manifest, write_manifest
from vitedge.targets.runners import open_artifact
from vitedge.workflows.parity import compare_logits

BUNDLE_PACKAGES = ("numpy", "pillow", "onnxruntime")
# What an ExecuTorch bundle needs on a board, the least that runs it (README, "On a board"):
# torch with what it requires, and ExecuTorch without the export-side dependencies its wheel
# declares (pandas, coremltools, hydra, ...), of which its runtime imports only these three.
EXECUTORCH_BOARD = {
    "with_requirements": ("numpy", "pillow", "torch"),
    "alone": ("executorch", "flatbuffers", "ruamel.yaml", "tabulate"),
}


def make_onnx_artifact(folder: Path, *, seed: int = 0) -> Path:
    """The tiny ViT exported to ONNX fp32 by torch alone, with a minimal manifest: the
    bundle must accept an artifact that carries no more than that."""
    loaded = make_tiny_vit(seed)
    with atomic_folder(folder, marker=MANIFEST) as staging:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                loaded.module,
                torch.zeros(1, 3, 32, 32),
                str(staging / "model.onnx"),
                opset_version=17,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        write_manifest(
            staging,
            {
                "format": "onnx",
                "precision": "fp32",
                "model_file": "model.onnx",
                "input_name": "input",
                "output_name": "logits",
                "data_config": loaded.data_config.to_dict(),
            },
        )
    return folder


def make_venv(folder: Path, packages: tuple[str, ...]) -> Path:
    """A plain virtualenv (no system site-packages) with only `packages`; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    if not packages:
        return python
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", *packages],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(
            f"pip install {' '.join(packages)} into a fresh venv failed (needs the PyPI mirror):\n{done.stderr[-2000:]}"
        )
    return python


def requirement_closure(names: tuple[str, ...]) -> dict[str, importlib_metadata.Distribution]:
    """The installed distributions `names` and everything they require (markers evaluated for
    this machine, extras left out)."""
    from packaging.requirements import Requirement

    found: dict[str, importlib_metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-").replace(".", "-")
        if key in found:
            continue
        try:
            distribution = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError:
            continue
        found[key] = distribution
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def make_linked_venv(folder: Path, with_requirements: tuple[str, ...], alone: tuple[str, ...] = ()) -> Path:
    """A virtualenv that sees exactly these installed distributions (`with_requirements` with
    what they require, `alone` by themselves), linked from this machine's site-packages rather
    than downloaded, and nothing else: no vitedge. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    chosen = requirement_closure(with_requirements)
    for name in alone:
        chosen[name] = importlib_metadata.distribution(name)
    for distribution in chosen.values():
        top = {Path(str(entry)).parts[0] for entry in distribution.files or ()}
        for name in top - {"..", "__pycache__"}:
            source = Path(distribution.locate_file(name))
            if source.exists() and not (site / name).exists():
                os.symlink(source, site / name)
    return folder / "bin" / "python"


def clean_env() -> dict[str, str]:
    """The environment minus anything that could let the venv see vitedge or torch."""
    return {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }


def run_bundle(python: Path, bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), str(bundle / "run_bundle.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=120,
    )


def vitedge_logits(artifact: Path, paths: list[Path]) -> np.ndarray:
    """vitedge's own path: decode with Pillow, preprocess, run through `open_artifact`."""
    runner = open_artifact(artifact)
    config = preprocess.DataConfig.from_dict(read_manifest(artifact)["data_config"])
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(preprocess.to_rgb(image))
    return runner(preprocess_batch(images, config))


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def bundle_logits(python: Path, bundle: Path, images: list[Path], cwd: Path) -> np.ndarray:
    """Every logit of every image, as `run_bundle.py classify --json` reports them."""
    done = run_bundle(python, bundle, "classify", "--json", *map(str, images), cwd=cwd)
    assert done.returncode == 0, done.stderr
    return np.array([item["logits"] for item in json.loads(done.stdout)["images"]])


def check_against_vitedge(
    python: Path, bundle: Path, images: list[Path], expected: np.ndarray, precision: str, cwd: Path
) -> None:
    """The board's logits against vitedge's runner under the artifact's own parity gate: the
    board may run another runtime (OpenVINO) or another onnxruntime release than the desktop,
    so exact equality or the exact order of near-tied classes is not the claim; agreement
    within what the precision promises is (fp32: max |Δ| <= 1e-4, which bf16 fails)."""
    got = bundle_logits(python, bundle, images, cwd)
    report = compare_logits(expected, got, precision=precision, identities=[p.name for p in images])
    assert report.passed, (report.failures, report.worst)
    ranked = np.sort(expected, axis=1)
    clear = ranked[:, -1] - ranked[:, -2] > 2 * report.max_abs  # no rounding can swap these
    assert (got.argmax(axis=1) == expected.argmax(axis=1))[clear].all() and clear.any()
