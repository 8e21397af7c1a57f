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
from ..models import StepRecord

StepData = tuple[torch.Tensor, torch.Tensor]  # (normalized N×3×H×W float32 inputs, int64 labels)


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


def record(name: str, options: dict[str, Any], structure: dict[str, Any] | None = None) -> StepRecord:
    return {"name": name, "options": dict(options), "structure": dict(structure or {})}


def clone(model: nn.Module) -> nn.Module:
    """A deep copy, so a step never touches the module it was given."""
    return copy.deepcopy(model)


def vit_blocks(model: nn.Module, step: str) -> nn.Module:
    """The model's transformer blocks; a user error when `model` is not a timm ViT."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise VitedgeError(
            f"step {step} needs a timm Vision Transformer, got {type(model).__name__}",
            "use a timm ViT/DeiT model or vitedge-cifar10",
        )
    return model.blocks


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
