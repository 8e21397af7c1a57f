"""The runner protocol: every runtime on every device is a callable from a float32 N×3×H×W
batch to float32 N×classes logits, plus a description of what it is for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class RunnerInfo:
    runtime: str  # torch | onnxruntime | openvino | remote
    device: str  # cpu | cuda | tensorrt | openvino-gpu | ssh://host
    precision: str  # the artifact's: fp32 | fp16 | bf16 | int8-dynamic | int8-static | int8
    threads: int | None
    versions: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # provider, hint, streams, ...
    execution_precision: str = ""  # what the runtime reports it computes in: f32 | bf16 | f16 | int8+f32


class Runner(Protocol):
    info: RunnerInfo

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


CPU_TARGETS = ("cpu",)
GPU_TARGETS = ("cuda", "tensorrt", "openvino-gpu")
