"""PyTorch eager runner (CPU fp32 and dynamic-int8 modules; CUDA fp32/fp16)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from targets.base import RunnerInfo
from vitedge.errors import VitedgeError

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TorchRunner:
    module: nn.Module
    info: RunnerInfo
    device: torch.device
    dtype: torch.dtype

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            inputs = torch.from_numpy(np.require(batch, np.float32, ["C", "W"])).to(self.device, self.dtype)
            # .cpu() waits for the GPU, so a timed call always includes the whole computation
            return self.module(inputs).float().cpu().numpy()


def open_torch(module: nn.Module, *, precision: str = "fp32", device: str = "cpu", threads: int | None = None) -> TorchRunner:
    if device == "cuda" and not torch.cuda.is_available():
        raise VitedgeError("target cuda: PyTorch sees no CUDA device", "run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --target cpu")
    if device not in ("cpu", "cuda"):
        raise VitedgeError(f"PyTorch cannot run on target {device!r}", "use --target cpu or cuda")
    if threads:
        torch.set_num_threads(threads)
    dtype = _DTYPES.get(precision, torch.float32)
    module = module.to(device=device, dtype=dtype) if dtype != torch.float32 else module.to(device)
    info = RunnerInfo(
        runtime="torch",
        device=device,
        precision=precision,
        threads=torch.get_num_threads() if device == "cpu" else None,
        versions={"torch": torch.__version__},
        detail={"device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu"},
    )
    return TorchRunner(module.eval(), info, torch.device(device), dtype)
