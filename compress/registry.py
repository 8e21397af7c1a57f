"""Compression steps by name (the names `vitedge compress --step` and recipes use), the
`NAME:key=value,...` spec syntax, applying steps to a loaded model (`apply_steps`, what the
pipeline and recipes call), and the replay of a saved compressed model's records. Each
technique module exports its own STEPS; this module only gathers them."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .. import models
from ..core.errors import VitedgeError
from ..models import LoadedModel, StepReplay
from . import distill, lowrank, nystrom, prune, quantize, tokens
from .step import Step, StepData, StepRecord, require_family

STEPS: dict[str, Step] = {
    **quantize.STEPS,
    **lowrank.STEPS,
    **nystrom.STEPS,
    **prune.STEPS,
    **tokens.STEPS,
    **distill.STEPS,
}


def get_step(name: str) -> Step:
    if name not in STEPS:
        raise VitedgeError(f"unknown compression step {name!r}", f"valid steps: {', '.join(sorted(STEPS))}")
    return STEPS[name]


def _value(text: str) -> bool | int | float | str:
    """An option value as typed on the command line: bool, int, float, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def _steps_for(model: nn.Module) -> str:
    """The steps that do work on `model`'s family, for a refusal's hint."""
    family = models.vit_family(model)
    usable = sorted(name for name, step in STEPS.items() if step.families is None or family in step.families)
    return f"steps for this model: {', '.join(usable)}"


def parse_step_spec(spec: str) -> tuple[str, dict[str, bool | int | float | str]]:
    """`prune-heads:ratio=0.25,importance=taylor` → ("prune-heads", {"ratio": 0.25, ...})."""
    name, _, rest = spec.strip().partition(":")
    step = get_step(name.strip())
    options: dict[str, bool | int | float | str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not value.strip():
            raise VitedgeError(
                f"step option {item!r} in {spec!r} is not key=value",
                f"e.g. {name}:{next(iter(step.options), 'key')}=VALUE",
            )
        if key not in step.options:
            valid = ", ".join(step.options) or "none"
            raise VitedgeError(f"step {name} has no option {key!r}", f"options of {name}: {valid}")
        if key in options:  # the last would win silently: a typo for another option, or a stale copy
            raise VitedgeError(f"step option {key!r} is given twice in {spec!r}", f"give {key} once")
        options[key] = _value(value)
    return name.strip(), options


def apply_step(
    loaded: LoadedModel,
    name: str,
    options: dict[str, Any],
    *,
    data: StepData | None = None,
    teacher: nn.Module | None = None,
) -> LoadedModel:
    """One step on a loaded model; the input model is left untouched."""
    step = get_step(name)
    options = dict(options)
    context: dict[str, Any] = {}
    teacher_spec = options.pop("teacher", None) if "teacher" in step.uses else None
    if "teacher" in step.uses:
        context["teacher"] = load_model(str(teacher_spec)).module if teacher_spec is not None else teacher
    if "data" in step.uses:
        context["data"] = data
    require_family(name, loaded.module, step.families, hint=_steps_for(loaded.module))
    unknown = [key for key in options if key not in step.options]
    if unknown:
        raise VitedgeError(
            f"step {name} has no option {unknown[0]!r}", f"options of {name}: {', '.join(step.options) or 'none'}"
        )
    try:
        result = step.apply(loaded.module, **options, **context)
    except ValueError as exc:  # an option value that does not convert, e.g. ratio=lots
        raise VitedgeError(
            f"step {name} rejected its options {options}: {exc}",
            f"options of {name}: {', '.join(step.options) or 'none'}",
        ) from None
    record = result.record
    if teacher_spec is not None:
        record = {**record, "options": {**record["options"], "teacher": str(teacher_spec)}}
    return loaded.with_module(result.model, record)


def apply_steps(
    loaded: LoadedModel, specs: list[tuple[str, dict[str, Any]]], *, data: StepData | None = None
) -> LoadedModel:
    """Apply `specs` in order (each step declares the ViT families it supports, `Step.families`,
    and refuses any other in one line; the casts and dynamic int8 work on any module). A `distill` step's default
    teacher is the model the chain started from, so `prune-structured` then `distill` is a
    recovery fine-tune."""
    teacher = loaded.module
    for name, options in specs:
        loaded = apply_step(loaded, name, options, data=data, teacher=teacher)
    return loaded


def restore_before_load(model: nn.Module, records: list[StepRecord]) -> nn.Module:
    """Replay the shape changes of `records` so a compressed state dict fits."""
    for record in records:
        step = get_step(record["name"])
        if step.rebuild is not None:
            model = step.rebuild(model, record)
    return model


def restore_after_load(model: nn.Module, records: list[StepRecord]) -> nn.Module:
    """Replay the steps that transform loaded weights (e.g. the fp16/bf16 casts)."""
    for record in records:
        step = get_step(record["name"])
        if step.after_load is not None:
            model = step.after_load(model, record)
    return model


REPLAY = StepReplay(restore_before_load, restore_after_load)


def load_model(spec: str, *, pretrained: bool = False, arch: str | None = None) -> LoadedModel:
    """Any model spec the CLI accepts, with a compressed checkpoint's recorded steps rebuilt:
    the loader every layer above compress uses."""
    return models.load_model(spec, pretrained=pretrained, arch=arch, replay=REPLAY)
