"""Low-rank factorization: each chosen Linear W (out×in) becomes two smaller Linears
(in→r, r→out) from its truncated SVD, W ≈ (U√S)(√S Vᵀ). The rank comes from `rank=` or from
the fraction of spectral energy to keep (`energy=`); a layer whose factors would not be
smaller than W is left alone, because factoring it would only cost time, and so is a Linear
whose weight its parent reads directly (timm Eva's fused qkv with separate biases)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from ..core.errors import VitedgeError
from ..models import vit_family
from .step import Step, StepRecord, StepResult, block_path, clone, record, set_module, weight_read_directly

DEFAULT_LAYERS = "blocks.*"


class LowRankLinear(nn.Module):
    """x → up(down(x)): a rank-r stand-in for an nn.Linear (down has no bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values hold `energy` of the total squared energy."""
    squared = singular_values.double() ** 2
    kept = torch.cumsum(squared, 0) / squared.sum()
    return int(torch.searchsorted(kept, torch.tensor([energy], dtype=kept.dtype)).item()) + 1


def factorize(linear: nn.Linear, rank: int) -> LowRankLinear:
    weight = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    factored = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    with torch.no_grad():
        factored.down.weight.copy_((root[:, None] * vh[:rank]).to(linear.weight.dtype))
        factored.up.weight.copy_((u[:, :rank] * root[None, :]).to(linear.weight.dtype))
        if linear.bias is not None:
            factored.up.bias.copy_(linear.bias.detach())
    return factored


def default_layers(model: nn.Module) -> str:
    """Every Linear in the transformer blocks, wherever the model's family keeps them."""
    return f"{block_path(model, 'lowrank')}.*" if vit_family(model) is not None else DEFAULT_LAYERS


def lowrank(
    model: nn.Module, *, rank: int | None = None, energy: float | None = None, layers: str | None = None
) -> StepResult:
    """Factor every nn.Linear whose name matches the glob `layers` (default: all in the
    transformer blocks, so the classifier head keeps full rank)."""
    layers = default_layers(model) if layers is None else layers
    if (rank is None) == (energy is None):
        raise VitedgeError(
            "lowrank needs exactly one of rank= or energy=", "e.g. lowrank:rank=32 or lowrank:energy=0.9"
        )
    if rank is not None and int(rank) < 1:
        raise VitedgeError(f"lowrank: rank={rank} must be at least 1", "e.g. lowrank:rank=32")
    if energy is not None and not 0.0 < float(energy) <= 1.0:
        raise VitedgeError(
            f"lowrank: energy={energy} must be in (0, 1]", "e.g. lowrank:energy=0.9 keeps 90% of the spectral energy"
        )
    model = clone(model)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and fnmatchcase(name, layers)
    ]
    if not targets:
        raise VitedgeError(
            f"lowrank: no nn.Linear matches layers={layers!r}",
            "use a glob over module names, e.g. layers=blocks.*.mlp.*",
        )
    ranks: dict[str, int] = {}
    direct = weight_read_directly(model)
    skipped: list[str] = [name for name, _ in targets if name in direct]
    for name, linear in (target for target in targets if target[0] not in direct):
        if rank is not None:
            chosen = min(int(rank), min(linear.in_features, linear.out_features))
        else:
            chosen = energy_rank(torch.linalg.svdvals(linear.weight.detach().double()), float(energy))
        if chosen * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            skipped.append(name)
            continue
        set_module(model, name, factorize(linear, chosen))
        ranks[name] = chosen
    options = {"layers": layers, **({"rank": int(rank)} if rank is not None else {"energy": float(energy)})}
    factorable = [linear for name, linear in targets if name not in direct]
    if factorable and not ranks:  # every layer kept whole: a no-op recorded as compression
        useful = max((m.in_features * m.out_features - 1) // (m.in_features + m.out_features) for m in factorable)
        asked = f"rank={rank}" if rank is not None else f"energy={energy}"
        raise VitedgeError(
            f"lowrank: {asked} factors none of the {len(factorable)} layers: at that rank the two factors "
            "hold at least as many weights as the layer",
            f"use rank={useful} or lower (or a lower energy), e.g. lowrank:rank={max(1, useful // 2)}",
        )
    return StepResult(model.eval(), record("lowrank", options, {"ranks": ranks, "skipped": skipped}))


def _rebuild(model: nn.Module, step: StepRecord) -> nn.Module:
    for name, chosen in step["structure"]["ranks"].items():
        linear = model.get_submodule(name)
        set_module(
            model, name, LowRankLinear(linear.in_features, linear.out_features, int(chosen), linear.bias is not None)
        )
    return model


STEPS: dict[str, Step] = {
    "lowrank": Step(
        lowrank,
        "SVD-factor Linear layers into two smaller ones (by rank or kept spectral energy)",
        rebuild=_rebuild,
        options={
            "rank": "rank of every factored layer",
            "energy": "fraction of squared singular values to keep per layer, e.g. 0.9",
            "layers": f"glob over module names (default: the blocks, {DEFAULT_LAYERS} in timm models)",
        },
    ),
}
