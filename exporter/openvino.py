"""torch → OpenVINO IR (fp32, fp16-compressed) and IR int8 through NNCF post-training
quantization on a calibration set.

Conversion goes straight from the torch module (`ov.convert_model(module, example_input=...)`),
not through ONNX: one conversion fewer, and the IR does not depend on ONNX export quirks.
fp16 is `compress_to_fp16=True`: weights stored in half precision (half the file); on a CPU
without bf16/AMX the plugin still computes in f32. int8 is `nncf.quantize` with the
TRANSFORMER model type (it keeps LayerNorm, GELU and Softmax in float). SmoothQuant: see
`SMOOTH_QUANT`, decided by measurement (report of issue 3).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..calibration.calibset import CalibrationSet
from ..core.errors import VitedgeError, first_line
from ..core.verbosity import quiet_progress

INPUT_NAME = "input"
MODEL_NAME = "vitedge"
# What OpenVINO calls a node that was never named: its type and a process-wide instance
# counter (Constant_3894, Result_1042), or a model "Model0", "Model3", ... in creation order.
AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")
# NNCF defaults, measured on this AVX2 CPU without VNNI: tiny CIFAR ViT (conftest, random
# weights, and the same briefly trained: 3 epochs, 39% train top-1), 256 cifar10:train
# calibration images, 1,000 cifar10 test images; cosine mean / top-1 agreement (trained):
#   mixed preset (NNCF's TRANSFORMER default), SmoothQuant off           0.99783 / 93.9%
#   mixed, SmoothQuant on                                                0.99805 / 93.9%
#   mixed, SmoothQuant off, overflow fix on all layers                   0.99836 / 95.4%
#   performance preset (symmetric activations), SmoothQuant off          0.99880 / 95.2%
#   performance, SmoothQuant off, overflow fix on all layers             0.99918 / 96.5%
#   performance, SmoothQuant on, overflow fix on all layers              0.99929 / 97.0%
# The overflow fix stores weights in 7 bits so u8×s8 kernels cannot saturate on CPUs without
# VNNI (this one; many edge x86 boards); it costs little elsewhere. SmoothQuant was never worse
# here, unlike FIELD-NOTES (VNNI CPU, 224 px timm ViTs), so the default follows this machine.
PRESET = "performance"
OVERFLOW_FIX = "enable"
SMOOTH_QUANT = True
SMOOTH_QUANT_ALPHA = 0.95  # NNCF's own default for MatMul in transformers
BIAS_CORRECTIONS = ("fast", "full", "off")


def convert_openvino(module: nn.Module, *, input_size: tuple[int, int, int], batch: str | int = "dynamic"):  # noqa: ANN201 - ov.Model
    """The torch module as an `ov.Model` with one float32 input named `input`."""
    import openvino as ov

    batch_dim = -1 if batch == "dynamic" else int(batch)
    example = torch.zeros((2 if batch == "dynamic" else int(batch), *input_size), dtype=torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; parity is checked on the result
            model = ov.convert_model(module.eval(), example_input=example, input=[(batch_dim, *input_size)])
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontends raise their own untyped errors
        raise VitedgeError(
            f"OpenVINO cannot convert the model: {first_line(exc, 300)}",
            "export the float model (before any PyTorch int8 step)",
        ) from None
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({"logits"})
    stable_names(model)
    return model


def stable_names(model) -> None:  # noqa: ANN001 - ov.Model
    """Rename every auto-named node after its place in the graph, and the model itself.

    OpenVINO names an unnamed node after a counter shared by the whole process, so the second
    export of the same model in one process wrote `Constant_7905` where the first wrote
    `Constant_3894` (and `Model3` for `Model0`): same weights, different .xml bytes. Run after
    conversion, so names NNCF derives from them ("Constant_5/fq_weights_1") are stable too,
    and again before saving for the nodes NNCF adds. Graph order is the same for the same
    graph, and the position makes each new name unique."""
    model.set_friendly_name(MODEL_NAME)
    for position, node in enumerate(model.get_ordered_ops()):
        if AUTO_NAME.match(node.get_friendly_name()):
            node.set_friendly_name(f"{node.get_type_name()}_{position}")


def quantize_openvino(
    model,  # noqa: ANN001 - ov.Model
    calibration: CalibrationSet,
    *,
    smooth_quant: bool = SMOOTH_QUANT,
    overflow_fix: str = OVERFLOW_FIX,
    preset: str = PRESET,
    bias_correction: str = "fast",
    ignored: Sequence[str] = (),
    batch_size: int = 1,
    nncf_defaults: bool = False,
) -> tuple[Any, dict[str, Any]]:  # noqa: ANN001 - ov.Model
    """NNCF int8 (TRANSFORMER model type) on every calibration image; defaults above. The one
    `nncf.quantize` call: export, sensitivity, budget and sweep all come through here, the
    last three with `ignored` (nodes kept in float) and the sweep's bias-correction variants.
    `nncf_defaults`: NNCF's own documented ViT recipe instead (model type only, every other
    setting NNCF's default), the peer that benchmarks/peers.py measures us against."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    if bias_correction not in BIAS_CORRECTIONS:
        raise VitedgeError(f"unknown bias correction {bias_correction!r}", f"use one of {', '.join(BIAS_CORRECTIONS)}")
    alphas = AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA if smooth_quant else -1)  # -1: off
    subset = len(calibration)
    kept = sorted(set(ignored))
    logger = logging.getLogger("nncf")  # one INFO line per ignored node
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        # NNCF's progress bars would corrupt `--json` on stdout, and are noise unless --verbose
        with contextlib.redirect_stdout(sys.stderr), quiet_progress():
            ours = {
                "preset": nncf.QuantizationPreset(preset),
                "fast_bias_correction": bias_correction != "full",
                "ignored_scope": nncf.IgnoredScope(names=kept) if kept else None,
                "advanced_parameters": AdvancedQuantizationParameters(
                    smooth_quant_alphas=alphas,
                    overflow_fix=nncf.OverflowFix(overflow_fix),
                    disable_bias_correction=bias_correction == "off",
                ),
            }
            quantized = nncf.quantize(
                model,
                calibration.nncf_dataset(batch_size),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=-(-subset // batch_size),
                **({} if nncf_defaults else ours),
            )
    finally:
        logger.setLevel(level)
    if nncf_defaults:
        return quantized, {
            "tool": "nncf.quantize",
            "model_type": "transformer",
            "nncf_defaults": True,
            "subset_size": subset,
        }
    settings = {
        "tool": "nncf.quantize",
        "model_type": "transformer",
        "preset": preset,
        "smooth_quant": smooth_quant,
        "smooth_quant_alpha_matmul": SMOOTH_QUANT_ALPHA if smooth_quant else None,
        "overflow_fix": overflow_fix,
        "bias_correction": bias_correction,
        "subset_size": subset,
        "weight_type": "int8",
        "activation_type": "int8",
        "ignored_scope": kept,
    }
    return quantized, settings


def save_openvino(model, path: Path, *, compress_to_fp16: bool, metadata: dict[str, str]) -> Path:  # noqa: ANN001 - ov.Model
    """Write `path` (.xml) and its .bin; `metadata` goes into the IR's rt_info under vitedge/."""
    import openvino as ov

    for key, value in metadata.items():
        model.set_rt_info(value, ["vitedge", key])
    stable_names(model)
    try:
        ov.save_model(model, str(path), compress_to_fp16=compress_to_fp16)
    except RuntimeError as exc:
        if "iostream error" not in str(exc):
            raise
        raise _write_error(model, path) from None
    return path


def _write_error(model, path: Path) -> OSError:  # noqa: ANN001 - ov.Model
    """What OpenVINO's bare "basic_ios::clear: iostream error" meant. It deletes what it wrote
    before raising, so a full disk no longer looks full: its free space is compared with the
    weights the .bin would have held; the .xml beside it is not known in advance, so short of
    that the free space is named."""
    import shutil

    weights = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return OSError(errno.EIO, f"OpenVINO's write of {path.name} failed part-way", str(path))
    if free < weights:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(
        errno.EIO,
        f"OpenVINO's write of {path.name} failed part-way with {free / 1e6:.1f} MB free there "
        f"(its weights alone are {weights / 1e6:.1f} MB)",
        str(path),
    )
