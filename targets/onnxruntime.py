"""ONNX Runtime runner: CPU, CUDA and TensorRT execution providers, explicit thread count,
full graph optimization, and the execution precision stated rather than left to defaults:
the CUDA provider computes fp32 MatMuls in TF32 on Ampere and newer unless told not to, and
the CPU provider's bf16 fast-math GEMM on ARM is a session setting (off here, said so)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cpu import runtime_threads
from ..core.errors import VitedgeError, first_line
from ..core.precision import F32, ORT_ARM_BF16_FASTMATH
from .base import RunnerInfo
from .bundle.run_bundle import ProfiledSession, onnxruntime_label

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
TENSORRT = "TensorrtExecutionProvider"
FP16_PRECISIONS = ("fp16", "int8-dynamic", "int8-static", "int8")  # layers TensorRT leaves unquantized run fp16
QDQ_PRECISIONS = ("int8-static",)  # explicit QuantizeLinear/DequantizeLinear pairs: TensorRT's own int8

ProviderList = list[tuple[str, dict[str, Any]]]
CUDA = "CUDAExecutionProvider"


def tensorrt_options(precision: str, cache_dir: Path) -> dict[str, Any]:
    """TensorRT EP options for an artifact of `precision`. Without them TensorRT builds an
    fp32 engine from scratch on every start (minutes for a ViT-B): fp16 on for fp16/int8
    requests, int8 on for QDQ models (the scales come from the Q/DQ nodes, so no calibration
    table), and built engines cached under the user's cache folder, keyed by TensorRT itself."""
    options: dict[str, Any] = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir / "trt"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir / "trt"),
    }
    if precision in FP16_PRECISIONS:
        options["trt_fp16_enable"] = True
    if precision in QDQ_PRECISIONS:
        options["trt_int8_enable"] = True
    return options


def provider_options(device: str, precision: str, cache_dir: Path) -> ProviderList:
    """The (provider, options) list for `device`, in ORT's order of preference; a pure
    function so the TensorRT settings can be checked on a machine without a GPU."""
    if device not in PROVIDERS:
        raise VitedgeError(f"ONNX Runtime cannot run on target {device!r}", f"use one of {', '.join(PROVIDERS)}")

    def options(name: str) -> dict[str, Any]:
        if name == TENSORRT:
            return tensorrt_options(precision, cache_dir)
        if name == CUDA:  # the float parts in full f32; TF32 would be a precision nobody chose
            return {"use_tf32": "0"}
        return {}

    return [(name, options(name)) for name in PROVIDERS[device]]


def default_cache_dir() -> Path:
    """The user's vitedge cache (VITEDGE_CACHE or ~/.cache/vitedge), shared with calibration."""
    from ..calibration.sources import cache_dir

    return cache_dir()


@dataclass(frozen=True)
class OnnxRunner:
    session: Any  # a ProfiledSession (targets/bundle/run_bundle.py)
    input_name: str
    opened: RunnerInfo  # as opened; `info` adds what the first call ran
    float_part: str  # the float precision the session reported (`reported_float_precision`)
    name: str = "model.onnx"
    fixed_batch: int | None = None  # the one batch size a model exported with --batch N takes

    @property
    def info(self) -> RunnerInfo:
        """As opened, and once the first call ran, the operators its products ran under
        (`kernels`) and the precision they computed in."""
        kernels = self.session.kernels
        if kernels is None:
            return self.opened
        return replace(
            self.opened,
            detail={**self.opened.detail, "kernels": kernels},
            execution_precision=onnxruntime_label(self.opened.precision, self.float_part, kernels),
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.name, self.fixed_batch, len(batch))
        return self.session.run({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def check_batch(name: str, fixed: int | None, size: int) -> None:
    """Refuse, in one line, a batch a fixed-batch model cannot take (ORT's own error is a
    multi-line INVALID_ARGUMENT about input dimensions)."""
    if fixed is not None and size != fixed:
        raise VitedgeError(
            f"{name} was exported for batch {fixed} only, but was given batch {size}",
            f"use --batch {fixed}, or re-export with --batch dynamic to take any batch size",
        )


def _fixed_batch(session: Any) -> int | None:
    """The input's batch dimension if it is a number (a dynamic one is a name or None)."""
    first = session.get_inputs()[0].shape[0]
    return first if isinstance(first, int) and first > 0 else None


def session_options(threads: int | None) -> Any:
    """The options every vitedge ONNX Runtime session runs with: set, not left to the defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry(ORT_ARM_BF16_FASTMATH, "0")  # ignored off ARM; f32 GEMMs there too
    if threads := runtime_threads(threads):
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def reported_float_precision(session: Any) -> str:
    """The float precision the session will use, from the provider options it reports: the
    CPU provider has f32 kernels only (and the ARM bf16 fast-math switch we turn off), CUDA
    says whether TF32 is on, TensorRT whether fp16 layers are allowed."""
    provider = session.get_providers()[0]
    options = session.get_provider_options().get(provider, {})
    if provider == CUDA:
        return "tf32" if str(options.get("use_tf32", "1")) == "1" else F32
    if provider == TENSORRT:
        return "f16" if str(options.get("trt_fp16_enable", "0")) == "1" else F32
    return F32


def open_onnx(model_path: Path, *, precision: str, device: str = "cpu", threads: int | None = None) -> OnnxRunner:
    import onnxruntime as ort

    providers = provider_options(device, precision, default_cache_dir())
    wanted = providers[0][0]
    if wanted not in ort.get_available_providers():
        raise VitedgeError(
            f"target {device}: ONNX Runtime has no {wanted} here (available: {', '.join(ort.get_available_providers())})",
            "pip install onnxruntime-gpu (with CUDA/TensorRT libraries) on a GPU machine, or use --target cpu",
        )
    if wanted == TENSORRT:
        Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    try:  # opened as on a board, what its first call runs read back (why: targets/bundle/run_bundle.py)
        profiled = ProfiledSession(ort, model_path, session_options(threads), providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for bad files
        raise VitedgeError(
            f"ONNX Runtime cannot load {model_path}: {first_line(exc, 200)}",
            "the file is corrupt or truncated; re-export it",
        ) from None
    session = profiled.session
    float_part = reported_float_precision(session)
    info = RunnerInfo(
        runtime="onnxruntime",
        device=device,
        precision=precision,
        threads=threads,
        versions={"onnxruntime": ort.__version__},
        detail={"provider": session.get_providers()[0]},
        execution_precision=onnxruntime_label(precision, float_part),
    )
    return OnnxRunner(profiled, session.get_inputs()[0].name, info, float_part, str(model_path), _fixed_batch(session))
