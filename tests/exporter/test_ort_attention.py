"""ViT attention as ONNX Runtime's Attention node: the node computes what the modules compute
(fp32, every family it takes), int8-dynamic runs it as QAttention with no float attention
products left, the patch-embedding Conv stays float, and the manifest says the file is for
ONNX Runtime only; `ort_fusions=False` and attentions the node cannot express keep standard ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.exporter.test_export import _ort_runs
from tests.support import make_tiny_vit
from tests.support.families import TINY, hf_tiny, spread, timm_tiny
from vitedge.compress.registry import apply_steps, parse_step_spec
from vitedge.core.manifest import read_manifest
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.exporter.onnx import export_onnx
from vitedge.exporter.ort_attention import ort_attention
from vitedge.models import Architecture, LoadedModel, build_architecture, data_config_for
from vitedge.targets.onnxruntime import open_onnx


def _no_qkv_bias() -> LoadedModel:
    torch.manual_seed(0)
    architecture = Architecture("vit_tiny_patch16_224", {**TINY, "qkv_bias": False})
    module = spread(build_architecture(architecture)).eval()
    return LoadedModel(module, data_config_for(module), architecture.name, architecture)


def _spread(loaded: LoadedModel) -> LoadedModel:
    spread(loaded.module)
    return loaded


def _pruned() -> LoadedModel:
    """The compressed recipe's shape (docs/compressed-recipe.md): half of 4 heads and five
    eighths of the MLP removed, so the node's head count and layout come from the pruned module."""
    steps = [parse_step_spec(spec) for spec in ("prune-heads:ratio=0.5", "prune-mlp:ratio=0.625")]
    loaded = apply_steps(make_tiny_vit(num_heads=4), steps)
    assert loaded.module.blocks[0].attn.num_heads == 2
    return _spread(loaded)


MODELS = {
    "timm vit": lambda tmp: _spread(make_tiny_vit()),
    "timm vit, no qkv bias": lambda tmp: _no_qkv_bias(),
    "timm vit, heads and MLP pruned": lambda tmp: _pruned(),
    "timm deit, distillation token": lambda tmp: timm_tiny("deit_small_distilled_patch16_224"),
    "transformers vit": lambda tmp: hf_tiny(tmp / "hf"),
    "transformers dinov2": lambda tmp: hf_tiny(tmp / "hf", kind="dinov2"),
}


def _ops(path: Path) -> list[tuple[str, str]]:
    return [(node.domain, node.op_type) for node in onnx.load(str(path), load_external_data=False).graph.node]


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_node_computes_what_the_model_computes(name, tmp_path):
    loaded = MODELS[name](tmp_path)
    size = loaded.data_config.input_size
    path = export_onnx(loaded.module, tmp_path / "fused.onnx", input_size=size, ort_attention=True)
    blocks = sum(1 for module in loaded.module.modules() if type(module).__name__.endswith("Attention"))
    assert _ops(path).count(("com.microsoft", "Attention")) == blocks == 2
    inputs = np.random.default_rng(0).standard_normal((3, *size)).astype(np.float32)
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(inputs))
    reference = getattr(reference, "logits", reference).numpy()
    fused = open_onnx(path, precision="fp32", threads=1)(inputs)
    assert np.abs(reference).max() > 0.1  # logits that differ by whole units, so a wrong layout shows
    np.testing.assert_allclose(fused, reference, atol=2e-5, rtol=0)


def test_the_model_is_left_as_it_was(tmp_path):
    loaded = make_tiny_vit()
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = loaded.module(inputs)
        with ort_attention(loaded.module) as swapped:
            inside = loaded.module(inputs)
        after = loaded.module(inputs)
    assert swapped == 2
    assert all("forward" not in vars(module) for module in loaded.module.modules())
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_int8_dynamic_runs_attention_as_qattention_and_a_float_patch_conv(tmp_path):
    """What ORT runs: one QAttention per block (q/k/v in one int8 GEMM), no float MatMul left
    for Q·Kᵀ or A·V, the Linears as int8 GEMMs, the patch embedding as a float Conv."""
    folder = export_artifact(make_tiny_vit(), to="onnx", precision="int8-dynamic", out=tmp_path / "dyn")
    ops = [node.op_type for node in _ort_runs(folder / "model.onnx", tmp_path).node]
    assert ops.count("QAttention") == 2
    assert "MatMul" not in ops and "FusedMatMul" not in ops and "Softmax" not in ops
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulIntegerToFloat") == 3 * 2 + 1  # proj, fc1, fc2; head
    assert "Conv" in ops and "ConvInteger" not in ops
    manifest = read_manifest(folder)
    assert manifest["runs_on"] == {"runtimes": ["onnxruntime"], "contrib_ops": {"QAttention": 2}}
    assert manifest["quantization"]["op_types"] == ["MatMul", "Gemm", "Attention"]
    assert manifest["options"]["ort_fusions"] is True


def test_without_ort_fusions_the_file_is_standard_onnx(tmp_path):
    options = ExportOptions(ort_fusions=False)
    folder = export_artifact(
        make_tiny_vit(), to="onnx", precision="int8-dynamic", out=tmp_path / "std", options=options
    )
    assert not [op for op in _ops(folder / "model.onnx") if op[0] not in ("", "ai.onnx")]
    assert read_manifest(folder)["runs_on"] == {"runtimes": ["any ONNX runtime"], "contrib_ops": {}}


@pytest.mark.parametrize("precision", ["fp32", "int8-static"])
def test_other_onnx_precisions_keep_standard_ops(precision, tmp_path):
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source

    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 8, seed=0, cache=False)
    folder = export_artifact(loaded, to="onnx", precision=precision, out=tmp_path / precision, calibration=calibration)
    assert read_manifest(folder)["runs_on"]["runtimes"] == ["any ONNX runtime"]


def test_attention_the_node_cannot_express_exports_as_before(tmp_path):
    """EVA's rotary embeddings are not in ORT's Attention: those blocks keep their own ops."""
    loaded = timm_tiny("eva02_small_patch14_224")
    folder = export_artifact(loaded, to="onnx", precision="int8-dynamic", out=tmp_path / "eva")
    assert read_manifest(folder)["runs_on"]["contrib_ops"] == {}


@pytest.mark.parametrize(
    ("flag", "runtimes"), [("--ort-fusions", ["onnxruntime"]), ("--standard-ops", ["any ONNX runtime"])]
)
def test_cli_chooses_the_flavour(flag, runtimes, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from tests.support.cli import cli

    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-dynamic", flag, "--no-verify"]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--out", str(tmp_path / "a"))
    assert code == 0, stderr
    assert read_manifest(tmp_path / "a")["runs_on"]["runtimes"] == runtimes
