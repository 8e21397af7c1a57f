"""Every architecture-changing step exports: TorchScript ONNX exporter (opset 17, dynamic
batch) with ONNX Runtime parity at another batch size, and OpenVINO conversion of the same
file with parity. Token merging is the one to watch (argsort/gather/scatter-add)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.registry import apply_steps, parse_step_spec
from vitedge.models import Architecture, LoadedModel, build_architecture
from vitedge.training import cifar_vit_architecture

CHAINS = {
    "prune-structured": ["prune-structured:ratio=0.5"],
    "lowrank": ["lowrank:rank=16"],
    "nystrom": ["nystrom:landmarks=8"],
    "tokens-merge": ["tokens:r=8"],
    "tokens-drop": ["tokens:r=8,mode=drop"],
    "tokens-first-block": ["tokens:r=12,blocks=1"],
    "prune+tokens": ["prune-heads:ratio=0.5", "prune-mlp:ratio=0.25", "tokens:r=4"],
}


def _class_token_vit(tiny: LoadedModel) -> LoadedModel:
    torch.manual_seed(0)
    base = cifar_vit_architecture(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    architecture = Architecture(base.name, {**base.kwargs, "class_token": True, "global_pool": "token"})
    return LoadedModel(build_architecture(architecture).eval(), tiny.data_config, "tiny-vit-cls", architecture)


def _export(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(1, 3, 32, 32),),
            str(path),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path


# Steps that touch tokens run on both ViT flavours; per-layer steps on the average-pooled one.
CASES = [(chain, False) for chain in CHAINS] + [(chain, True) for chain in ("nystrom", "tokens-merge", "tokens-drop", "tokens-first-block", "prune+tokens")]


@pytest.mark.parametrize(("chain", "class_token"), CASES, ids=[f"{chain}-{'cls' if cls else 'avgpool'}" for chain, cls in CASES])
def test_compressed_model_exports_to_onnx_and_openvino(tiny_vit, cifar_batch, tmp_path, chain, class_token) -> None:
    import onnxruntime as ort
    import openvino as ov

    loaded = _class_token_vit(tiny_vit) if class_token else tiny_vit
    compressed = apply_steps(loaded, [parse_step_spec(spec) for spec in CHAINS[chain]])
    inputs = cifar_batch[0][:5]
    with torch.no_grad():
        expected = compressed.module(torch.from_numpy(inputs)).numpy()
    path = _export(compressed.module, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs})[0]
    assert got.shape == (5, 10)
    assert np.abs(got - expected).max() < 1e-4
    core = ov.Core()  # read_model, not ov.convert_model: that one forks telemetry senders that stall offline
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.abs(compiled(inputs)[0] - expected).max() < 1e-3
