"""ONNX fp32 → ONNX int8 with ONNX Runtime: dynamic (weights only, activations quantized at run
time) and static QDQ (activation ranges calibrated on real images).

Defaults, and why:
- Only MatMul, Gemm and Conv are quantized. ORT's default quantizes every op (LayerNorm,
  Softmax, GELU, residual Add); on vit_base that collapsed parity to cosine 0.93 and top-1
  agreement 44% and ran slower (FIELD-NOTES); restricting to the matrix products keeps
  cosine > 0.998. The manifest records the op types.
- Static: `quant_pre_process` (shape inference + ORT graph optimizations) first, as ORT
  recommends; QDQ format, int8 activations and weights.
- Calibration is ours, not `quantize_static`'s: we run ORT's calibrator on chunks of the set
  (`CALIB_CHUNK` images at a time; the histogram methods merge chunks) and hand the ranges to
  `quantize_static` through its calibration cache. Two reasons. Memory: ORT otherwise keeps
  every intermediate tensor of every image (percentile took 7.7 GB on vit_base). Entropy:
  `quantize_static` cannot pass bin counts to the calibrator, and with its defaults
  (128 bins, 128 quantized bins) the KL search has a single candidate threshold, the full
  range, so "entropy" returned exactly the MinMax ranges. We use `ENTROPY_BINS` histogram
  bins and `ENTROPY_QUANTIZED_BINS` quantized bins, so entropy really searches the clipping
  threshold that minimises the KL divergence between the fp32 histogram and its 128-level
  quantization, i.e. it clips rare outliers of activations (it is slower: it scans ~900
  thresholds per tensor).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..calibration.calibset import CalibrationSet
from ..core.cpu import runtime_threads
from ..core.errors import VitedgeError
from ..core.io import scratch_folder
from ..core.precision import ORT_ARM_BF16_FASTMATH

DEFAULT_OP_TYPES = ("MatMul", "Gemm", "Conv")
# Static QDQ placement, for the kernels ONNX Runtime has. Only products with a constant weight
# are quantized (`weight_products`: the attention products Q·Kᵀ and A·V stay in float), and
# their outputs get no Q/DQ pair, so ORT fuses each DQ → MatMul into one MatMulIntegerToFloat,
# the int8 GEMM that writes float. ORT's quantize_static defaults instead quantize every MatMul
# and its output, which ORT runs as QLinearMatMul plus a DequantizeLinear after it: on
# vit_base_patch16_224 that spent twice the time of the dynamic path's DynamicQuantizeMatMul
# (ORT profile, 2 threads, AVX512-VNNI/AMX Xeon); this placement ran the whole model 1.26× the
# old one's speed, as fast as dynamic, and on vitedge-cifar10 (10,000 test images) raised
# parity from cosine 0.99944 / top-1 agreement 98.60% to 0.99968 / 98.89%.
# Every product gets a Q/DQ pair of its own (DedicatedQDQPair): ORT fuses a DQ with a single
# consumer only, and transformers' ViTs feed one LayerNorm output to separate query, key and
# value Linears, which a shared pair left as float MatMuls on dequantized inputs.
# (ORT's own MatMulConstBOnly option does not do this: it accepts a B whose path back reaches
# any initializer, such as attention's scale constant.)
CALIB_METHODS = ("minmax", "entropy", "percentile")
CALIB_CHUNK = 8
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE = 99.999
PERCENTILE_BINS = 2048


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """ORT's quantizer logs warnings on the root logger (pre-processing advice, one per
    skipped node) and its histogram calibrators print() progress lines ("Collecting tensor
    data and making histogram ..."); both drown the progress display and corrupt `--json`
    output on stdout, so hold them back while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_dynamic_onnx(
    src: Path, dst: Path, *, per_channel: bool, op_types: Sequence[str] = DEFAULT_OP_TYPES, reduce_range: bool = False
) -> dict[str, Any]:
    """Weights to int8 (QInt8) ahead of time; activations quantized on the fly at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_ort():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )
    return {
        "tool": "onnxruntime.quantize_dynamic",
        "op_types": list(op_types),
        "weight_type": "int8",
        "activation_type": "uint8 (dynamic)",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
    }


def calibration_ranges(
    model: Path,
    calibration: CalibrationSet,
    input_name: str,
    method: str,
    op_types: Sequence[str],
    work: Path,
    batch_size: int,
    threads: int | None = None,
):  # noqa: ANN202 - ORT TensorsData
    from onnxruntime.quantization.calibrate import create_calibrator

    calib_method = _calibrate_method(method)
    options = {
        "minmax": {},
        "entropy": {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
        "percentile": {"num_bins": PERCENTILE_BINS, "percentile": PERCENTILE},
    }[method]
    calibrator = create_calibrator(
        model,
        list(op_types),
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=calib_method,
        extra_options=options,
    )
    calibrator.infer_session = None  # ORT's own session, freed before ours opens (ViT-B: 0.5 s to open)
    calibrator.infer_session = calibration_session(calibrator, runtime_threads(threads))
    for start in range(0, len(calibration), CALIB_CHUNK):
        chunk = dataclasses.replace(calibration, inputs=calibration.inputs[start : start + CALIB_CHUNK])
        calibrator.collect_data(chunk.ort_reader(input_name, batch_size=batch_size))
    ranges = calibrator.compute_data()
    del calibrator
    return calib_method, ranges


def calibration_session(calibrator: Any, threads: int | None) -> Any:
    """The calibrator's session with vitedge's options set, not ORT's defaults: ORT's calibrator
    opens its own (`CalibraterBase.create_inference_session` takes no options) with ORT's default
    pool, sized from the host's cores (in a container's CPU quota or under a taskset, more
    threads than can run at once, each stopped every quota period), and leaves the ARM bf16
    fast-math GEMM to ORT's default, which would set the ranges from bf16 products where it is
    on. `threads`: `runtime_threads`' count (None: every CPU is usable, ORT's pool). Unoptimized,
    as ORT opens it, so the outputs the calibrator added stay as it wrote them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry(ORT_ARM_BF16_FASTMATH, "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        calibrator.augmented_model_path, sess_options=options, providers=calibrator.execution_providers
    )


def write_qdq(
    prepared: Path,
    dst: Path,
    ranges: Path,
    *,
    method: str,
    per_channel: bool,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    reduce_range: bool = False,
    nodes_to_exclude: Sequence[str] = (),
) -> None:
    """The one `quantize_static` call: the pre-processed model to QDQ int8 with activation
    ranges read from a calibration cache (no recalibration), `nodes_to_exclude` left in float.
    `quantize_static_onnx` (export) and the sensitivity/budget variants all write through it."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with quiet_ort():
        quantize_static(
            str(prepared),
            str(dst),
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted({*nodes_to_exclude, *activation_products(prepared, op_types)}),
            calibrate_method=_calibrate_method(method),
            calibration_cache_path=str(ranges),
            extra_options={"OpTypesToExcludeOutputQuantization": list(op_types), "DedicatedQDQPair": True},
        )


def weight_products(model: Path, op_types: Sequence[str]) -> tuple[str, ...]:
    """The nodes of `op_types` that multiply by a constant weight (an initializer input, as
    after `quant_pre_process`): the units static int8 quantizes."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    return tuple(
        node.name for node in graph.node if node.op_type in op_types and any(name in weights for name in node.input)
    )


def activation_products(model: Path, op_types: Sequence[str]) -> tuple[str, ...]:
    """The nodes of `op_types` with no constant weight: products of two activations."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    quantized = set(weight_products(model, op_types))
    return tuple(node.name for node in graph.node if node.op_type in op_types and node.name not in quantized)


def _calibrate_method(name: str) -> Any:
    """ORT's CalibrationMethod for one of CALIB_METHODS (onnxruntime imported only when used)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def pre_process(src: Path, dst: Path) -> Path:
    """ORT's `quant_pre_process` (shape inference: the quantizer needs every tensor's shape) on
    the graph without its matrix weights, and without its graph-optimization pass.

    Memory: run on the whole model, shape inference copies the weights several times over (the
    proto, its serialized form, the inferred copy); that was the static export's peak, 2.84 GB
    for vit_base_patch16_224 against 1.26 GB before it. Shapes need no weights, so the weight
    operand of every MatMul/Gemm/Conv moves to one external-data file beside `dst` and the graph
    alone is inferred (the other initializers stay inline: shape inference reads the values of
    Reshape targets and of Add/Mul operands such as the position embedding); `dst` refers to
    that file, which calibration and `quantize_static` read from the same folder.
    The optimization pass opens an ORT session on the float model to write a basic-level copy
    of a graph the exporter already constant-folded: the QDQ model runs the same kernels without
    it (tests/exporter/test_export.py reads what ORT runs), and ORT optimizes the artifact
    itself when it opens it."""
    import onnx
    from onnx.external_data_helper import set_external_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    operands = {node.input[1] for node in model.graph.node if node.op_type in DEFAULT_OP_TYPES and len(node.input) > 1}
    for tensor in model.graph.initializer:
        if tensor.name in operands:
            set_external_data(tensor, location=Path(dst).with_suffix(".weights").name)
    onnx.save_model(model, str(dst))  # writes the marked tensors to the .weights file
    del model
    with quiet_ort():
        # ORT's symbolic inference alone: ONNX's own pass (skipped) reloads the model with its
        # weights from a temporary folder where the external file is not
        weightless = onnx.load(str(dst), load_external_data=False)
        quant_pre_process(weightless, str(dst), skip_optimization=True, skip_onnx_shape=True)
    return dst


def quantize_static_onnx(
    src: Path,
    dst: Path,
    calibration: CalibrationSet,
    *,
    input_name: str,
    method: str = "minmax",
    per_channel: bool,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    reduce_range: bool = False,
    calib_batch: int = 1,
) -> dict[str, Any]:
    """QDQ int8 after `quant_pre_process`, activation ranges from `calibration` (see module doc)."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    if method not in CALIB_METHODS:
        raise VitedgeError(f"unknown calibration method {method!r}", f"use one of {', '.join(CALIB_METHODS)}")
    with quiet_ort(), scratch_folder("vitedge-quant-") as tmp:
        work = Path(tmp)
        prepared = pre_process(src, work / "prepared.onnx")
        _, ranges = calibration_ranges(prepared, calibration, input_name, method, op_types, work, calib_batch)
        cache = work / "ranges.json"
        save_tensors_data(ranges, cache)
        write_qdq(
            prepared, dst, cache, method=method, per_channel=per_channel, op_types=op_types, reduce_range=reduce_range
        )
    return qdq_settings(method=method, per_channel=per_channel, op_types=op_types, reduce_range=reduce_range)


def qdq_settings(*, method: str, per_channel: bool, op_types: Sequence[str], reduce_range: bool) -> dict[str, Any]:
    """What a static QDQ artifact's manifest says about how it was quantized."""
    settings: dict[str, Any] = {
        "tool": "onnxruntime.quantize_static",
        "format": "QDQ",
        "pre_process": True,
        "op_types": list(op_types),
        "weight_type": "int8",
        "activation_type": "int8",
        "quantized_products": "constant weight only",  # attention's Q·Kᵀ and A·V stay float
        "output_quantization": False,
        "dedicated_qdq_pairs": True,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "calib_method": method,
        "calib_chunk": CALIB_CHUNK,
    }
    if method == "entropy":
        settings.update(num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    if method == "percentile":
        settings.update(num_bins=PERCENTILE_BINS, percentile=PERCENTILE)
    return settings
