"""torch → ExecuTorch program (`.pte`) lowered to the XNNPACK delegate, fp32 or int8.

ExecuTorch with XNNPACK is the runtime Arm's own Raspberry Pi ViT figures use, so a board can
be measured on it beside ONNX Runtime and OpenVINO. The path, as the ExecuTorch 1.x
documentation gives it: `torch.export.export` → (int8 only: PT2E `prepare_pt2e` with the
`XNNPACKQuantizer`, calibration, `convert_pt2e`, export again) → `to_edge_transform_and_lower`
with the `XnnpackPartitioner` → `to_executorch()` → the program's bytes.

Choices, and why:
- int8 is static: symmetric int8 weights with per-output-channel scales, int8 activations
  with ranges observed on the same calibration set the other int8 exports use (the
  quantizer's `get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)`),
  on the matrix products only (Linear, Conv2d), as the ORT export quantizes MatMul, Gemm and
  Conv only. The quantizer's global setting also quantizes the residual Adds (and Mul, Cat);
  on vitedge-cifar10 (256 cifar10:train calibration images, 1,000 CIFAR-10 test images) that
  gave cosine 0.99960 / top-1 agreement 97.6% against 0.99978 / 99.0% for Linear and Conv
  only, at the same speed (1.76 against 1.77 ms per image, 2 threads). LayerNorm, Softmax,
  GELU and the attention products stay fp32.
- Attention is exported unfused (q·kᵀ, softmax, ·v; timm's `fused_attn = False` and
  PyTorch's MultiheadAttention fast path off, restored afterwards). The fused call,
  `scaled_dot_product_attention`, decomposes into a "safe softmax" (`any`, `where`,
  `logical_not`, `full_like`) that XNNPACK does not take, so every attention block fell out
  of the delegate into portable kernels: the tiny test ViT ran 0.83 ms per call fused
  against 0.48 ms unfused here, with the same logits (max |Δ| to PyTorch 1.8e-7 both).
- A dynamic batch is bounded: ExecuTorch plans every activation buffer ahead of time, for
  the largest shape it may see, so `--batch dynamic` exports batches 1..MAX_DYNAMIC_BATCH
  (the runner splits a larger batch into calls of at most that many). The symbolic reshapes
  of a dynamic batch are not delegated (XNNPACK takes static reshapes only), which splits
  the graph into more delegate calls (deit_tiny: 123 against 62 for `--batch 1`, every
  shape static). At batch 1 that cost nothing measurable here (deit_tiny, 2 threads, random
  weights: fp32 30.8 ms dynamic against 31.3 ms static, int8 20.0 against 20.1 ms); the
  buffers planned for 32 images cost memory (peak RSS 856 against 765 MB, torch included).
- What was lowered is recorded: nodes inside XNNPACK against those left to ExecuTorch's own
  kernels (by operator), and how many delegate calls the graph was cut into. A ViT whose
  matrix products are not delegated runs many times slower (executorch #6961), and that is
  visible in the manifest rather than only in a benchmark.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..calibration.calibset import CalibrationSet
from ..core.errors import VitedgeError, first_line
from .onnx import unfused_attention

PTE_FILE = "model.pte"
MAX_DYNAMIC_BATCH = 32  # verify's batch (workflows.parity.VERIFY_BATCH) and the board's eval batch
CALIB_BATCH = 8
QUANTIZED_TARGETS = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)
PRECISIONS = ("fp32", "int8")
# Graph nodes that move values around rather than compute (tuple access, symbolic sizes and
# their Python arithmetic): left out of the delegated/not-delegated counts.
BOOKKEEPING = {"getitem", "sym_size", "sym_numel", "sym_stride", "mul", "add", "sub", "floordiv", "truediv", "mod"}
INSTALL_HINT = "pip install 'vitedge[executorch]' (ExecuTorch 1.5 with torchao 0.18, next to this torch)"


def require_executorch() -> None:
    """Refuse, in one line, an ExecuTorch export or run where ExecuTorch is not installed."""
    if importlib.util.find_spec("executorch") is None:
        raise VitedgeError("ExecuTorch is not installed", INSTALL_HINT)


def _example_and_shapes(input_size: tuple[int, int, int], batch: str | int) -> tuple[torch.Tensor, Any]:
    """The example input and the dynamic-shape spec for `torch.export`. A dynamic batch is
    exported from a 2-image example (a size-1 example would be specialised to 1)."""
    if batch == "dynamic":
        dim = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        return torch.zeros((2, *input_size)), ({0: dim},)
    return torch.zeros((int(batch), *input_size)), None


def _calibration_batches(calibration: CalibrationSet, batch: str | int) -> Iterator[torch.Tensor]:
    """The calibration images in batches the exported graph takes: CALIB_BATCH at a time for a
    dynamic batch, exactly `batch` for a fixed one (the last chunk padded with its last image)."""
    size = CALIB_BATCH if batch == "dynamic" else int(batch)
    inputs = np.asarray(calibration.inputs, dtype=np.float32)
    for start in range(0, len(inputs), size):
        chunk = inputs[start : start + size]
        if batch != "dynamic" and len(chunk) < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        yield torch.from_numpy(np.ascontiguousarray(chunk))


def quantize_pt2e(
    exported: Any, example: torch.Tensor, shapes: Any, calibration: CalibrationSet, batch: str | int
) -> tuple[Any, dict[str, Any]]:
    """PT2E static int8 for XNNPACK: annotate, observe the calibration images, convert, and
    export the converted module again (what `to_edge_transform_and_lower` takes)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = XNNPACKQuantizer()
    for target in QUANTIZED_TARGETS:  # the matrix products only (module docstring)
        quantizer.set_operator_type(target, config)
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for chunk in _calibration_batches(calibration, batch):
            prepared(chunk)
    converted = convert_pt2e(prepared)
    settings = {
        "method": "PT2E static (torchao prepare_pt2e / convert_pt2e)",
        "quantizer": "XNNPACKQuantizer",
        "weights": "int8 symmetric, per output channel",
        "activations": "int8, static ranges observed on the calibration set",
        "calibration_images": len(calibration),
        "calibration_batch": CALIB_BATCH if batch == "dynamic" else int(batch),
        "quantized_ops": ["linear", "conv2d"],
        "float_ops": "LayerNorm, softmax, GELU, residual adds and the attention products stay fp32",
    }
    return torch.export.export(converted, (example,), dynamic_shapes=shapes), settings


def delegation_summary(graph_module: Any) -> dict[str, Any]:
    """What the XNNPACK partitioner took: operator nodes inside delegate calls against those
    left to ExecuTorch's own kernels (by operator, bookkeeping nodes left out)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    delegated = not_delegated = 0
    outside: dict[str, int] = {}
    for name, breakdown in sorted(info.delegation_by_operator.items()):
        if name in BOOKKEEPING:
            continue
        delegated += breakdown.delegated
        not_delegated += breakdown.non_delegated
        if breakdown.non_delegated:
            outside[name] = breakdown.non_delegated
    total = delegated + not_delegated
    return {
        "backend": "XnnpackBackend",
        "partitioner": "XnnpackPartitioner()",
        "delegate_calls": int(info.num_delegated_subgraphs),
        "delegated_nodes": delegated,
        "not_delegated_nodes": not_delegated,
        "delegated_share": delegated / total if total else 0.0,
        "not_delegated": outside,
        "attention": "unfused (q·kᵀ, softmax, ·v)",
    }


def _lowering_error(exc: Exception, stage: str) -> VitedgeError:
    return VitedgeError(
        f"ExecuTorch {stage} failed: {first_line(exc, 300)}",
        "export the float model (the exporters quantize themselves); a model torch.export cannot trace does not lower",
    )


def export_executorch(
    module: nn.Module,
    path: Path,
    *,
    input_size: tuple[int, int, int],
    precision: str = "fp32",
    batch: str | int = "dynamic",
    calibration: CalibrationSet | None = None,
) -> dict[str, Any]:
    """Write `module` to `path` as an XNNPACK-lowered ExecuTorch program; return what the
    manifest records about it (quantization, lowering, the batch bound)."""
    require_executorch()
    if precision not in PRECISIONS:
        raise VitedgeError(f"executorch has no precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if precision == "int8" and calibration is None:
        raise VitedgeError("executorch int8 needs calibration images", "pass --calib SOURCE (e.g. cifar10:train)")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = module.eval()
    example, shapes = _example_and_shapes(tuple(input_size), batch)
    settings = None
    with warnings.catch_warnings(), unfused_attention(module), torch.no_grad():
        warnings.simplefilter("ignore")  # export and quantizer deprecation notes; parity checks the result
        try:
            exported = torch.export.export(module, (example,), dynamic_shapes=shapes)
        except Exception as exc:  # noqa: BLE001 - torch.export raises many untyped errors for untraceable code
            raise _lowering_error(exc, "torch.export") from None
        if precision == "int8":
            assert calibration is not None
            exported, settings = quantize_pt2e(exported, example, shapes, calibration, batch)
        try:
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            lowering = delegation_summary(edge.exported_program().graph_module)
            program = edge.to_executorch()
        except Exception as exc:  # noqa: BLE001 - the lowering passes raise untyped errors
            raise _lowering_error(exc, "lowering to XNNPACK") from None
    if lowering["delegated_nodes"] == 0:
        raise VitedgeError(
            "XNNPACK took no operator of this model: it would run on ExecuTorch's portable kernels only",
            "export it to onnx or openvino instead",
        )
    Path(path).write_bytes(program.buffer)
    return {
        "model_file": Path(path).name,
        "quantization": settings,
        "lowering": lowering,
        "max_batch": MAX_DYNAMIC_BATCH if batch == "dynamic" else int(batch),
    }
