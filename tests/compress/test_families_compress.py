"""Each compression step on timm Eva (EVA-02, RoPE ViT) and transformers ViT/DeiT: it either
changes the model, survives a checkpoint round trip and still exports with fp32 parity, or
refuses in one line naming the family and the families it works on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.families import hf_tiny, timm_tiny
from vitedge.calibration.calibset import build_calibration_set
from vitedge.calibration.sources import open_source
from vitedge.compress.registry import STEPS, apply_step, load_model
from vitedge.core.errors import VitedgeError
from vitedge.exporter.export import export_artifact
from vitedge.models import save_checkpoint
from vitedge.workflows.parity import verify_artifact

EVA = "timm Eva (EVA-02, RoPE ViTs)"
OPTIONS = {
    "nystrom": {"landmarks": 4},
    "prune-magnitude": {"ratio": 0.5},
    "prune-taylor": {"ratio": 0.5, "samples": 32},
    "prune-heads": {"ratio": 0.5},
    "prune-mlp": {"ratio": 0.5},
    "prune-structured": {"ratio": 0.5},
    "lowrank": {"rank": 8},
    "tokens": {"r": 2},
    "distill": {"epochs": 1, "batch_size": 32},
    "finetune": {"epochs": 1, "batch_size": 32},
}
WORKS = {"nystrom", "prune-magnitude", "prune-taylor", "lowrank", "distill", "finetune"}
REFUSED = {
    "eva02": {
        "prune-heads": f"step prune-heads does not support {EVA} models; it works on timm VisionTransformer, Hugging Face ViT/DeiT",
        "prune-mlp": f"step prune-mlp does not support {EVA} models; it works on timm VisionTransformer, Hugging Face ViT/DeiT",
        "prune-structured": f"step prune-structured does not support {EVA} models; it works on timm VisionTransformer, Hugging Face ViT/DeiT",
        "tokens": f"step tokens does not support {EVA} models; it works on timm VisionTransformer",
    },
    "hf-vit": {
        "tokens": "step tokens does not support Hugging Face ViT/DeiT models; it works on timm VisionTransformer"
    },
}
REFUSED["rope"] = REFUSED["eva02"]
REFUSED["hf-deit"] = REFUSED["hf-vit"]
MODELS = {
    "eva02": lambda tmp: timm_tiny("eva02_small_patch14_224"),
    "rope": lambda tmp: timm_tiny("vit_base_patch16_rope_reg1_gap_256"),
    "hf-vit": lambda tmp: hf_tiny(tmp / "vit", "vit"),
    "hf-deit": lambda tmp: hf_tiny(tmp / "deit", "deit"),
}
CASES = [(model, step) for model in MODELS for step in OPTIONS if step in WORKS or step in REFUSED[model]]
CASES += [("hf-vit", step) for step in ("prune-heads", "prune-mlp", "prune-structured")]


def _data(loaded) -> tuple[torch.Tensor, torch.Tensor]:
    images = open_source("cifar10:train")
    chosen = build_calibration_set(images, loaded.data_config, 64, seed=0, cache=False)
    labels = np.asarray(images.labels)[list(chosen.indices)]
    return torch.from_numpy(chosen.inputs), torch.from_numpy(labels).long()


@pytest.mark.parametrize(("model", "step"), CASES)
def test_step_works_and_exports_or_refuses_in_one_line(tmp_path, model, step):
    loaded = MODELS[model](tmp_path)
    data = _data(loaded)
    if step in REFUSED[model]:
        with pytest.raises(VitedgeError) as refused:
            apply_step(loaded, step, OPTIONS[step], data=data, teacher=loaded.module)
        assert refused.value.args[0] == REFUSED[model][step] and "\n" not in refused.value.args[0]
        assert "nystrom" in refused.value.hint and "prune-magnitude" in refused.value.hint
        assert step not in refused.value.hint.split(": ")[1].split(", ")
        return
    compressed = apply_step(loaded, step, OPTIONS[step], data=data, teacher=loaded.module)
    inputs = build_calibration_set(open_source("cifar10"), loaded.data_config, 32, seed=1, cache=False).inputs
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        before, after = loaded.module(x), compressed.module(x)
    assert float((after - before).abs().max()) > 0.01  # the step changed what the model computes
    assert compressed.steps[-1]["name"] == step
    reloaded = load_model(str(save_checkpoint(compressed, tmp_path / "c.safetensors")))
    with torch.no_grad():
        assert torch.equal(reloaded.module(x), after)
    folder = export_artifact(compressed, to="onnx", precision="fp32", out=tmp_path / "onnx")
    report = verify_artifact(folder, compressed, inputs, threads=1)
    assert report.passed and report.max_abs < 1e-4, report.failures


def test_every_step_declares_its_families():
    from vitedge.models import FAMILIES

    for name, step in STEPS.items():
        assert step.families is None or set(step.families) <= set(FAMILIES), name
    assert STEPS["tokens"].families == ("timm-vit",)
    assert set(STEPS["nystrom"].families) == {"timm-vit", "timm-eva", "hf-vit"}
    assert STEPS["prune-magnitude"].families == tuple(FAMILIES)


def test_eva_fused_qkv_stays_float_under_lowrank_and_dynamic_int8(tmp_path):
    """EVA-02 reads qkv.weight itself (F.linear beside separate q/v biases): swapping that
    Linear would break the model, so both steps leave it and say so."""
    loaded = timm_tiny("eva02_small_patch14_224")
    factored = apply_step(loaded, "lowrank", {"rank": 8})
    assert {"blocks.0.attn.qkv", "blocks.1.attn.qkv"} <= set(factored.steps[-1]["structure"]["skipped"])
    quantized = apply_step(loaded, "quantize-dynamic", {})
    assert quantized.steps[-1]["structure"]["kept_float"] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(quantized.module(x)).all() and torch.isfinite(factored.module(x)).all()
