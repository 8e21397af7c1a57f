"""Compression steps by name (the names `vitedge compress --step` and recipes use), and the
replay of a saved compressed model's records. Each technique module exports its own STEPS."""

from __future__ import annotations

import torch.nn as nn

from compress.step import Step, StepRecord

STEPS: dict[str, Step] = {}


def restore_before_load(model: nn.Module, records: list[StepRecord]) -> nn.Module:
    """Replay the shape changes of `records` so a compressed state dict fits."""
    for record in records:
        step = STEPS[record["name"]]
        if step.rebuild is not None:
            model = step.rebuild(model, record)
    return model


def restore_after_load(model: nn.Module, records: list[StepRecord]) -> nn.Module:
    """Replay the steps that transform loaded weights (e.g. dynamic int8 packing)."""
    for record in records:
        step = STEPS[record["name"]]
        if step.after_load is not None:
            model = step.after_load(model, record)
    return model
