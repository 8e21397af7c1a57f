"""Helpers shared by the board tests (bundle, SSH runner, target detection): a minimal ONNX
artifact, a torch-free virtualenv, and vitedge's own logits for comparison."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import make_tiny_vit
from vitedge.calibration import preprocess
from vitedge.calibration.preprocess import preprocess_batch
from vitedge.core.io import atomic_folder
from vitedge.core.manifest import read_manifest, write_manifest
from vitedge.targets.runners import open_artifact

BUNDLE_PACKAGES = ("numpy", "pillow", "onnxruntime")


def make_onnx_artifact(folder: Path, *, seed: int = 0) -> Path:
    """The tiny ViT exported to ONNX fp32 by torch alone, with a minimal manifest: the
    bundle must accept an artifact that carries no more than that."""
    loaded = make_tiny_vit(seed)
    with atomic_folder(folder) as staging:
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
