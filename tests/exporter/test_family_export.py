"""Every ViT family exports to ONNX and OpenVINO fp32 and passes parity on real CIFAR-10 images
(its own preprocessing); one model of each source (timm, transformers, torchvision) also to
calibrated int8 within the int8 gate; and the CLI exports a transformers folder."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from tests.support.families import TIMM_MODELS, hf_folder, hf_tiny, timm_tiny, torchvision_tiny
from vitedge.calibration.calibset import build_calibration_set
from vitedge.calibration.preprocess import DataConfig
from vitedge.calibration.sources import open_source
from vitedge.core.manifest import read_manifest
from vitedge.exporter.export import export_artifact
from vitedge.workflows.parity import verify_artifact

HF_KINDS = ("vit", "deit", "deit-teacher", "beit", "dinov2")
FAMILIES = [*sorted(TIMM_MODELS), *(f"hf-{kind}" for kind in HF_KINDS), "torchvision"]


def make(name: str, tmp_path):
    if name.startswith("hf-"):
        return hf_tiny(tmp_path / name, name.removeprefix("hf-"))
    return torchvision_tiny() if name == "torchvision" else timm_tiny(name)


def parity_inputs(loaded, samples: int = 64) -> np.ndarray:
    return build_calibration_set(open_source("cifar10"), loaded.data_config, samples, seed=1, cache=False).inputs


@pytest.mark.parametrize("name", FAMILIES)
def test_fp32_onnx_and_openvino_match_pytorch(tmp_path, name):
    loaded = make(name, tmp_path)
    inputs = parity_inputs(loaded)
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(inputs)).numpy()
    # the bound below means something only if the logits are far from constant
    assert float(logits.std(axis=0).mean()) > 0.05 and float(np.abs(logits).max()) > 0.5
    for to in ("onnx", "openvino"):
        folder = export_artifact(loaded, to=to, precision="fp32", out=tmp_path / to)
        report = verify_artifact(folder, loaded, inputs, threads=1)
        assert report.passed and report.max_abs < 1e-4 and report.top1_agreement == 1.0, (to, report.failures)
        assert DataConfig.from_dict(read_manifest(folder)["data_config"]) == loaded.data_config


@pytest.mark.parametrize(
    ("name", "to", "precision"),
    [
        ("eva02_small_patch14_224", "onnx", "int8-dynamic"),
        ("hf-vit", "onnx", "int8-static"),
        ("torchvision", "onnx", "int8-dynamic"),
    ],
)
def test_int8_within_the_int8_gate(tmp_path, name, to, precision):
    """ONNX Runtime's int8 paths within the int8 cosine bound. Random weights leave many images
    near-tied between two classes, so top-1 agreement moves with the CPU's int8 kernel (97.7%
    on a VNNI Xeon, 92-97% on an AVX2-only EPYC for the same files) and is held to 90% here, as
    in the other random-weight int8 tests. The export's defaults (7-bit weights, a scale per
    channel) hold on every CPU: with full-range weights, eva02 int8-dynamic fell to cosine
    0.9935 on an x86 without VNNI, where u8×s8 products saturate (tests/workflows/test_parity.py)."""
    loaded = make(name, tmp_path)
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 64, seed=0, cache=False)
    folder = export_artifact(loaded, to=to, precision=precision, out=tmp_path / "int8", calibration=calibration)
    report = verify_artifact(folder, loaded, parity_inputs(loaded, 128), tolerances={"top1_agreement": 0.9}, threads=1)
    assert report.passed, report.failures
    assert report.cosine_mean >= 0.995 and report.top1_agreement >= 0.9
    assert report.max_abs > 1e-4  # it really is int8: fp32 would agree to 1e-6


def test_cli_exports_a_transformers_folder(tmp_path, capsys, monkeypatch):
    from vitedge.cli import run

    folder = hf_folder(tmp_path / "vit", "vit")
    out = tmp_path / "artifact"
    monkeypatch.setattr(
        sys,
        "argv",
        ["vitedge", "export", str(folder), "--to", "onnx", "--precision", "fp32", "--out", str(out)]
        + ["--verify-samples", "64", "--threads", "1", "--json"],
    )
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert int(exit_info.value.code or 0) == 0
    report = json.loads(capsys.readouterr().out)["parity"]
    assert report["passed"] and report["samples"] == 64 and report["max_abs"] < 1e-4
    manifest = read_manifest(out)
    assert manifest["source"]["architecture"]["name"] == "transformers:ViTForImageClassification"
    assert manifest["data_config"]["mean"] == [0.5, 0.5, 0.5]
