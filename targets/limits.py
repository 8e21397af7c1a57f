"""What this machine can do at best, measured, so a row's speed can be read as a share of it.

A figure like "5.2 img/s" says little across CPUs; "62% of this CPU's int8 GEMM rate" says
how much is left. The limits are square GEMMs through ONNX Runtime's own kernels (MatMul for
f32, MatMulInteger u8×s8 for int8: the kernels the exported models use), on the same thread
count as the rows, and bf16 through PyTorch's oneDNN matmul where the CPU has native bf16.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

GEMM_SIZE = 2048


@dataclass(frozen=True)
class GemmLimit:
    kind: str  # f32 | int8 | bf16
    size: int
    threads: int
    ops_per_s: float  # multiply-adds count 2
    runtime: str

    @property
    def giga(self) -> float:
        return self.ops_per_s / 1e9


def forward_flops(module: Any, input_size: tuple[int, int, int]) -> float:
    """Floating-point operations (a multiply-add counts 2) of one image through `module`:
    matrix products, convolutions and attention, as torch's FlopCounterMode counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(torch.zeros((1, *input_size)))
    return float(counter.get_total_flops())


def _best_rate(call: Any, ops: float, seconds: float) -> float:
    """Operations per second of the fastest call within `seconds` after two warm-up calls."""
    call()
    call()
    best, began = float("inf"), time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return ops / best


def _ort_gemm(kind: str, size: int, threads: int, seconds: float) -> GemmLimit:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # kind -> (ONNX op, input type, input numpy type, weight numpy type, output type)
    op, x_type, x_dtype, w_dtype, y_type = {
        "f32": ("MatMul", TensorProto.FLOAT, np.float32, np.float32, TensorProto.FLOAT),
        "int8": ("MatMulInteger", TensorProto.UINT8, np.uint8, np.int8, TensorProto.INT32),
    }[kind]
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, (size, size)).astype(w_dtype)
    x = rng.integers(0, 256, (size, size)).astype(x_dtype)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", x_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rate = _best_rate(lambda: session.run(None, {"x": x}), 2.0 * size**3, seconds)
    return GemmLimit(kind, size, threads, rate, f"onnxruntime {ort.__version__}")


def _torch_bf16_gemm(size: int, threads: int, seconds: float) -> GemmLimit:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    rate = _best_rate(lambda: torch.mm(a, b), 2.0 * size**3, seconds)
    return GemmLimit("bf16", size, threads, rate, f"torch {torch.__version__}")


def gemm_limits(threads: int, *, size: int = GEMM_SIZE, seconds: float = 2.0) -> dict[str, GemmLimit]:
    """f32 and int8 GEMM rates of this CPU on `threads` threads (bf16 too where it is native)."""
    from ..core.cpu import probe_cpu

    limits = {kind: _ort_gemm(kind, size, threads, seconds) for kind in ("f32", "int8")}
    if probe_cpu().bf16:
        limits["bf16"] = _torch_bf16_gemm(size, threads, seconds)
    return limits


def limit_kind(execution_precision: str) -> str:
    """Which GEMM limit a row is held to: int8 rows to int8, bf16 to bf16, the rest to f32."""
    if execution_precision.startswith("int8"):
        return "int8"
    return "bf16" if execution_precision == "bf16" else "f32"
