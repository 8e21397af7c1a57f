"""ONNX Runtime runner: CPU, CUDA and TensorRT execution providers, explicit thread count,
full graph optimization."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.base import RunnerInfo
from vitedge.errors import VitedgeError

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class OnnxRunner:
    session: Any
    input_name: str
    info: RunnerInfo

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def open_onnx(model_path: Path, *, precision: str, device: str = "cpu", threads: int | None = None) -> OnnxRunner:
    import onnxruntime as ort

    if device not in PROVIDERS:
        raise VitedgeError(f"ONNX Runtime cannot run on target {device!r}", f"use one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        raise VitedgeError(
            f"target {device}: ONNX Runtime has no {wanted} here (available: {', '.join(ort.get_available_providers())})",
            "pip install onnxruntime-gpu (with CUDA/TensorRT libraries) on a GPU machine, or use --target cpu",
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=PROVIDERS[device])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for bad files
        raise VitedgeError(f"ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0][:200]}", "the file is corrupt or truncated; re-export it") from None
    info = RunnerInfo(
        runtime="onnxruntime",
        device=device,
        precision=precision,
        threads=threads,
        versions={"onnxruntime": ort.__version__},
        detail={"provider": session.get_providers()[0]},
    )
    return OnnxRunner(session, session.get_inputs()[0].name, info)
