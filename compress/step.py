"""What a compression step is, and what it leaves behind so a saved model can be rebuilt.

A step is a plain function `apply(model, **options) -> StepResult` that returns a new module
(the input is never mutated) and a record: the options plus whatever structure it created
(kept head indices, ranks, ...). Saved checkpoints carry the records, so loading replays
`rebuild` (shape changes, before the weights load) and `after_load` (e.g. int8 packing,
after the weights load) without any data.

Some steps need more than the model: calibration/training images (`data`: normalized
N×3×H×W float32 inputs and int64 labels) or a teacher module. A step lists those keywords in
`uses`; the pipeline passes them only to steps that ask, so a step's signature stays honest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import VitedgeError
from ..models import FAMILIES, StepRecord, model_kind, vit_family
from .images import Inputs

StepData = tuple[Inputs, torch.Tensor]  # (normalized N×3×H×W float32 inputs as indexed, int64 labels)


@dataclass(frozen=True)
class StepResult:
    model: nn.Module
    record: StepRecord


@dataclass(frozen=True)
class Step:
    apply: Callable[..., StepResult]
    help: str
    rebuild: Callable[[nn.Module, StepRecord], nn.Module] | None = None
    after_load: Callable[[nn.Module, StepRecord], nn.Module] | None = None
    options: dict[str, str] = field(default_factory=dict)  # option name -> help
    uses: tuple[str, ...] = ()  # context keywords apply() accepts: "data", "teacher"
    # the ViT families (models.FAMILIES) apply() knows how to change; None: any torch module
    families: tuple[str, ...] | None = None


def record(name: str, options: dict[str, Any], structure: dict[str, Any] | None = None) -> StepRecord:
    return {"name": name, "options": dict(options), "structure": dict(structure or {})}


def clone(model: nn.Module) -> nn.Module:
    """A deep copy, so a step never touches the module it was given."""
    return copy.deepcopy(model)


ALL_VITS = tuple(FAMILIES)
TIMM_VITS = ("timm-vit", "timm-eva", "timm-beit", "timm-relpos")


def require_family(
    step: str, model: nn.Module, families: tuple[str, ...] | None, *, hint: str | None = None
) -> str | None:
    """The model's family, or a one-line refusal naming it and the families `step` works on."""
    family = vit_family(model)
    if families is None or family in families:
        return family
    names = ", ".join(FAMILIES[f] for f in families)
    if family is None:  # not a ViT at all: say that first, as export does
        raise VitedgeError(
            f"step {step} needs a timm Vision Transformer or another ViT family, but the model is a {model_kind(model)}",
            hint or f"step {step} works on {names}; e.g. vitedge-cifar10 or vit_small_patch16_224",
        )
    kind = FAMILIES[family]
    raise VitedgeError(
        f"step {step} does not support {kind} models; it works on {names}",
        hint or "choose another step, or export the model uncompressed",
    )


def block_path(model: nn.Module, step: str) -> str:
    """Dotted name of the model's list of transformer blocks (their parameter names start with it)."""
    family = require_family(step, model, ALL_VITS)
    if family in TIMM_VITS:
        return "blocks"
    if family == "torchvision-vit":
        return "encoder.layers"
    base = f"model.{model.model.base_model_prefix}"  # transformers: the base model's layer list
    names = {name for name, _ in model.named_modules()}
    return next(path for path in (f"{base}.layers", f"{base}.encoder.layer") if path in names)


def family_blocks(model: nn.Module, step: str) -> nn.Module:
    """The model's transformer blocks, whatever its family."""
    return model.get_submodule(block_path(model, step))


def vit_blocks(model: nn.Module, step: str) -> nn.Module:
    """The blocks of a timm VisionTransformer; a one-line refusal for any other model."""
    require_family(step, model, ("timm-vit",))
    return model.blocks


def weight_read_directly(model: nn.Module) -> set[str]:
    """Names of the Linears whose parent reads `.weight` instead of calling them (timm Eva's fused
    qkv beside separate q/v biases: `F.linear(x, qkv.weight, bias)`), which a step that swaps
    Linears for other modules (low-rank factors, int8) must leave alone."""
    from timm.models.eva import EvaAttention

    return {
        f"{name}.qkv" if name else "qkv"
        for name, module in model.named_modules()
        if isinstance(module, EvaAttention)
        and module.qkv is not None
        and module.q_bias is not None
        and not module.qkv_bias_separate
    }


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def check_ratio(step: str, ratio: float, *, upper: float = 1.0) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio < upper:
        raise VitedgeError(f"step {step}: ratio={ratio} is outside [0, {upper})", "pass a fraction, e.g. ratio=0.25")
    return ratio


def require_data(step: str, data: StepData | None) -> StepData:
    if data is None:
        raise VitedgeError(
            f"step {step} needs images (calibration or training data)",
            "pass --data cifar10:train (or a folder / .npz with labels)",
        )
    return data
