"""SVD factorization: exact at full rank, fewer parameters at low rank, energy picks ranks."""

from __future__ import annotations

import pytest
import torch

from vitedge.compress.lowrank import LowRankLinear, energy_rank, factorize, lowrank
from vitedge.core.errors import VitedgeError


def test_full_rank_factorization_reproduces_the_layer() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 16)
    factored = factorize(linear, 16)
    x = torch.randn(5, 24)
    assert torch.allclose(factored(x), linear(x), atol=1e-5)


def test_energy_rank_counts_squared_singular_values() -> None:
    values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert energy_rank(values, 9 / 14) == 1
    assert energy_rank(values, 0.9) == 2
    assert energy_rank(values, 1.0) == 3


def test_lowrank_shrinks_the_blocks_and_skips_unprofitable_layers(tiny_vit) -> None:
    before = sum(p.numel() for p in tiny_vit.module.parameters())
    result = lowrank(tiny_vit.module, rank=16)
    ranks = result.record["structure"]["ranks"]
    assert set(ranks) == {
        f"blocks.{b}.{layer}" for b in range(2) for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }
    assert all(isinstance(result.model.get_submodule(name), LowRankLinear) for name in ranks)
    assert sum(p.numel() for p in result.model.parameters()) < 0.7 * before
    assert type(result.model.head) is torch.nn.Linear
    # a 64×64 proj at rank 40 would be bigger factored (40·128 > 64·64): left alone
    assert "blocks.0.attn.proj" in lowrank(tiny_vit.module, rank=40).record["structure"]["skipped"]
    with pytest.raises(VitedgeError, match="exactly one"):
        lowrank(tiny_vit.module, rank=4, energy=0.9)


def test_a_rank_that_factors_no_layer_is_refused(tiny_vit) -> None:
    """Every layer too small for the rank: the step would change nothing and record itself as
    compression (before: `lowrank:rank=100000` saved the same weights as a lowrank model). The
    hint names the largest rank that factors a layer: the 64×192 qkv up to 47 (47·256 < 64·192)."""
    with pytest.raises(VitedgeError, match="rank=100000 factors none of the 8 layers") as refused:
        lowrank(tiny_vit.module, rank=100000)
    assert refused.value.hint.startswith("use rank=47 or lower")
    assert list(lowrank(tiny_vit.module, rank=47).record["structure"]["ranks"]) == [
        "blocks.0.attn.qkv",
        "blocks.1.attn.qkv",
    ]
    with pytest.raises(VitedgeError, match="rank=48 factors none"):
        lowrank(tiny_vit.module, rank=48)
