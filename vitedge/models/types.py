"""What a loaded model is: its module, preprocessing, spec and rebuildable architecture, and
the one way its stored weights are counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..calibration.preprocess import DataConfig

StepRecord = dict[str, Any]  # a compression step as a checkpoint records it: {"name", "options", "structure"}


@dataclass(frozen=True)
class Architecture:
    """How to build the empty module: a timm model name, `torchvision:<builder>`, or
    `transformers:<class>` (kwargs `{"config": <the model's config as a dict>}`), plus keyword
    overrides. A transformers config is plain JSON data, so a checkpoint can carry it."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(str(data["name"]), dict(data.get("kwargs", {})))


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    data_config: DataConfig
    spec: str
    architecture: Architecture
    steps: tuple[StepRecord, ...] = ()
    source_sha256: str = ""

    def with_module(self, module: nn.Module, record: StepRecord | None = None) -> LoadedModel:
        steps = self.steps + ((record,) if record is not None else ())
        return LoadedModel(module, self.data_config, self.spec, self.architecture, steps, self.source_sha256)


def count_weights(module: nn.Module) -> int:
    """Weights the module stores: its state dict's tensor elements, int8 weights included and
    their quantization scales and zero points left out, so a pruned, distilled or quantized
    module is counted the same way as the model it came from."""
    return int(
        sum(
            value.numel()
            for key, value in module.state_dict().items()
            if isinstance(value, torch.Tensor) and not key.endswith(("scale", "zero_point"))
        )
    )
