"""What a compression step is, and what it leaves behind so a saved model can be rebuilt.

A step is a plain function `apply(model, **options) -> StepResult` that returns a new module
(the input is never mutated) and a record: the options plus whatever structure it created
(kept head indices, ranks, ...). Saved checkpoints carry the records, so loading replays
`rebuild` (shape changes, before the weights load) and `after_load` (e.g. int8 packing,
after the weights load) without any data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

StepRecord = dict[str, Any]  # {"name": str, "options": {...}, "structure": {...}}


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
