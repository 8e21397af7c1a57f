"""Determinism: the same command twice gives the same bytes and the same numbers.

`vitedge export --to onnx` (fp32) run twice in two processes writes byte-identical
`model.onnx` files (the manifest differs only in its `created` time); `vitedge eval` run
twice prints identical accuracy. The int8 and OpenVINO paths are checked in-process below;
docs/reliability.md records which of them are deterministic and why the others are not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import make_tiny_vit
from vitedge.calibration.calibset import build_calibration_set
from vitedge.core.manifest import read_manifest, sha256_file
from vitedge.exporter.export import export_artifact
from vitedge.models import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(make_tiny_vit(), tmp_path_factory.mktemp("determinism") / "tiny.safetensors")


def vitedge(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VITEDGE_CACHE": str(cwd / "cache"), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "vitedge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done


def test_onnx_fp32_export_twice_is_byte_identical(checkpoint: Path, tmp_path: Path) -> None:
    """Two processes (different hash seeds, fresh tracer state), same command."""
    for name in ("first", "second"):
        vitedge(["export", str(checkpoint), "--to", "onnx", "--out", name, "--no-verify"], tmp_path)
    first, second = read_manifest(tmp_path / "first"), read_manifest(tmp_path / "second")
    assert sha256_file(tmp_path / "first" / "model.onnx") == sha256_file(tmp_path / "second" / "model.onnx")
    assert first["files"] == second["files"]
    assert {k: v for k, v in first.items() if k != "created"} == {k: v for k, v in second.items() if k != "created"}


def test_eval_twice_gives_identical_accuracy(checkpoint: Path, tmp_path: Path) -> None:
    runs = [
        json.loads(
            vitedge(["eval", str(checkpoint), "--data", "cifar10", "--samples", "300", "--json"], tmp_path).stdout
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["samples"] == 300 and 0.0 <= runs[0]["top1"] <= 100.0


@pytest.fixture(scope="module")
def calibration(cifar_test):
    return build_calibration_set(cifar_test, make_tiny_vit().data_config, 32, seed=0, cache=False)


def model_files(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


# What was measured here (see docs/reliability.md): every path below gives identical files
# when run twice in one process. Marked paths are the ones whose bytes are not guaranteed.
@pytest.mark.parametrize(
    ("to", "precision"),
    [
        ("onnx", "int8-dynamic"),
        ("onnx", "int8-static"),
        ("openvino", "fp32"),
        ("openvino", "fp16"),
        ("openvino", "int8"),
    ],
)
def test_other_paths_twice_in_one_process(calibration, tmp_path: Path, to: str, precision: str) -> None:
    model = make_tiny_vit()
    calib = calibration if precision in ("int8-static", "int8") else None
    first = export_artifact(model, to=to, precision=precision, out=tmp_path / "first", calibration=calib)
    second = export_artifact(model, to=to, precision=precision, out=tmp_path / "second", calibration=calib)
    assert model_files(first) == model_files(second)


def test_calibration_draw_is_reproducible(cifar_test) -> None:
    config = make_tiny_vit().data_config
    one = build_calibration_set(cifar_test, config, 40, seed=3, cache=False)
    two = build_calibration_set(cifar_test, config, 40, seed=3, cache=False)
    other = build_calibration_set(cifar_test, config, 40, seed=4, cache=False)
    assert one.identities == two.identities and np.array_equal(one.inputs, two.inputs)
    assert one.identities != other.identities
