"""PyTorch eager runner (CPU fp32 and dynamic-int8 modules, bf16 autocast where the CPU has
native bf16; CUDA fp32/fp16/bf16). fp32 on CUDA turns TF32 off for matmuls and cuDNN
convolutions (the patch embedding): left on, "fp32" would compute with a 10-bit mantissa."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..compress.quantize import stored_precision
from ..core.cpu import runtime_threads
from ..core.errors import VitedgeError
from ..core.precision import BF16, F16, F32, require_bf16
from .base import RunnerInfo
from .bundle.run_bundle import execution_text

_DTYPES = {"fp16": torch.float16}  # weights cast; bf16 runs through autocast instead


def refuse_int8_off_cpu(precision: str, device: str) -> None:
    """PyTorch's dynamic int8 Linears have CPU kernels only: refuse them on another target in
    one line, before any work, rather than with torch's own error once the rows before were
    measured."""
    if precision == "int8-dynamic" and device != "cpu":
        raise VitedgeError(
            f"PyTorch dynamic int8 runs on the CPU only, not on target {device}",
            "use --target cpu for it, or export to ONNX int8 for a GPU (ONNX Runtime's CUDA provider, TensorRT)",
        )


@dataclass(frozen=True)
class TorchRunner:
    module: nn.Module
    info: RunnerInfo
    device: torch.device
    dtype: torch.dtype
    autocast: torch.dtype | None = None  # bf16: matmuls in bf16, reductions kept in f32 by autocast

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None),
        ):
            inputs = torch.from_numpy(np.require(batch, np.float32, ["C", "W"])).to(self.device, self.dtype)
            # .cpu() waits for the GPU, so a timed call always includes the whole computation
            return self.module(inputs).float().cpu().numpy()


def open_torch(
    module: nn.Module, *, precision: str = "fp32", device: str = "cpu", threads: int | None = None
) -> TorchRunner:
    if device == "cuda" and not torch.cuda.is_available():
        raise VitedgeError(
            "target cuda: PyTorch sees no CUDA device",
            "run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --target cpu",
        )
    if device not in ("cpu", "cuda"):
        raise VitedgeError(f"PyTorch cannot run on target {device!r}", "use --target cpu or cuda")
    held = stored_precision(module)
    # what runs: the module's own int8/fp16/bf16 weights, else the cast or autocast `precision` asks for
    runs = held if held != "fp32" else precision
    refuse_int8_off_cpu(runs, device)
    if precision == "bf16" and device == "cpu":
        require_bf16("PyTorch bf16")
    if threads := runtime_threads(threads):
        torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dtype = _DTYPES.get(precision, torch.float32)
    module = module.to(device=device, dtype=dtype) if dtype != torch.float32 else module.to(device)
    computes = {"fp16": F16, "bf16": BF16}.get(precision if runs == "int8-dynamic" else runs, F32)
    info = RunnerInfo(
        runtime="torch",
        device=device,
        precision=precision,
        threads=torch.get_num_threads() if device == "cpu" else None,
        versions={"torch": torch.__version__},
        detail={
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            **(
                {"tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32}
                if device == "cuda"
                else {}
            ),
        },
        execution_precision=execution_text(runs, computes, held == "int8-dynamic"),
    )
    return TorchRunner(
        module.eval(), info, torch.device(device), dtype, torch.bfloat16 if precision == "bf16" else None
    )
