"""Pruning: unstructured sparsity is real (and reported as such); structured pruning removes
heads and MLP channels physically, keeps the forward pass working, and uses data for Taylor."""

from __future__ import annotations

import pytest
import torch

from vitedge.compress.prune import (
    DENSE_NOTE,
    prune_heads,
    prune_magnitude,
    prune_mlp,
    prune_structured,
    prune_taylor,
)
from vitedge.core.errors import VitedgeError


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _data(cifar_batch) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(cifar_batch[0]), torch.from_numpy(cifar_batch[1])


def test_magnitude_pruning_zeroes_the_smallest_weights(tiny_vit) -> None:
    result = prune_magnitude(tiny_vit.module, ratio=0.5)
    weight, original = result.model.blocks[0].mlp.fc1.weight, tiny_vit.module.blocks[0].mlp.fc1.weight
    assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert original.abs()[weight == 0].max() <= original.abs()[weight != 0].min()
    assert result.record["structure"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0.3 < result.record["structure"]["model_sparsity"] < 0.5  # embeddings, norms, head stay dense
    assert result.record["structure"]["note"] == DENSE_NOTE
    assert (tiny_vit.module.blocks[0].mlp.fc1.weight == 0).sum() == 0  # input untouched
    assert _params(result.model) == _params(tiny_vit.module)  # dense storage: no fewer parameters


def test_taylor_pruning_needs_data_and_differs_from_magnitude(tiny_vit, cifar_batch) -> None:
    with pytest.raises(VitedgeError, match="needs images"):
        prune_taylor(tiny_vit.module, ratio=0.5)
    taylor = prune_taylor(tiny_vit.module, ratio=0.5, samples=32, data=_data(cifar_batch))
    magnitude = prune_magnitude(tiny_vit.module, ratio=0.5)
    zeros_t = taylor.model.blocks[1].attn.qkv.weight == 0
    zeros_m = magnitude.model.blocks[1].attn.qkv.weight == 0
    assert float(zeros_t.float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert not torch.equal(zeros_t, zeros_m)


def test_head_pruning_makes_smaller_layers_that_still_run(tiny_vit) -> None:
    result = prune_heads(tiny_vit.module, ratio=0.5)
    attention = result.model.blocks[0].attn
    assert attention.num_heads == 1 and attention.attn_dim == 32
    assert attention.qkv.weight.shape == (96, 64) and attention.qkv.bias.shape == (96,)
    assert attention.proj.weight.shape == (64, 32)
    assert result.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert tiny_vit.module.blocks[0].attn.num_heads == 2  # pure


def test_head_pruning_keeps_the_kept_heads_weights(tiny_vit) -> None:
    result = prune_heads(tiny_vit.module, ratio=0.5)
    kept = result.record["structure"]["blocks.0"]["heads"]
    assert len(kept) == 1
    head = kept[0]
    original = tiny_vit.module.blocks[0].attn
    q_rows = original.qkv.weight[head * 32 : (head + 1) * 32]
    assert torch.equal(result.model.blocks[0].attn.qkv.weight[:32], q_rows)
    assert torch.equal(result.model.blocks[0].attn.proj.weight, original.proj.weight[:, head * 32 : (head + 1) * 32])


def test_structured_pruning_removes_a_quarter_of_channels_and_heads(tiny_vit, cifar_batch) -> None:
    result = prune_structured(tiny_vit.module, ratio=0.25)
    mlp = result.model.blocks[1].mlp
    assert mlp.fc1.weight.shape == (96, 64) and mlp.fc2.weight.shape == (64, 96)
    assert result.model.blocks[1].attn.num_heads == 1  # 2 heads × 0.25 rounds half up to one
    structure = result.record["structure"]
    assert structure["params_after"] == _params(result.model) < 0.75 * structure["params_before"]
    inputs, _ = _data(cifar_batch)
    assert torch.isfinite(result.model(inputs)).all()
    taylor = prune_mlp(tiny_vit.module, ratio=0.25, importance="taylor", samples=32, data=_data(cifar_batch))
    assert (
        taylor.record["structure"]["blocks.0"]["channels"]
        != prune_mlp(tiny_vit.module, ratio=0.25).record["structure"]["blocks.0"]["channels"]
    )


def test_pruning_zero_ratio_is_the_identity(tiny_vit) -> None:
    inputs = torch.randn(2, 3, 32, 32)
    assert torch.equal(prune_structured(tiny_vit.module, ratio=0.0).model(inputs), tiny_vit.module(inputs))
    with pytest.raises(VitedgeError, match="outside"):
        prune_heads(tiny_vit.module, ratio=1.0)
