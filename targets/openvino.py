"""OpenVINO runner: CPU or GPU plugin; latency hint at batch 1, throughput hint above."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.base import RunnerInfo
from targets.onnxruntime import check_batch
from vitedge.errors import VitedgeError

DEVICES = {"cpu": "CPU", "openvino-gpu": "GPU"}


@dataclass(frozen=True)
class OpenVinoRunner:
    compiled: Any
    info: RunnerInfo
    name: str = "model.xml"
    fixed_batch: int | None = None  # the one batch size an IR exported with --batch N takes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.name, self.fixed_batch, len(batch))
        return np.asarray(self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0])


def _fixed_batch(compiled: Any) -> int | None:
    """The input's batch dimension if the IR fixes it (a dynamic one is -1 / not static)."""
    first = compiled.input(0).get_partial_shape()[0]
    return first.get_length() if first.is_static else None


def open_openvino(model_path: Path, *, precision: str, device: str = "cpu", threads: int | None = None, batch: int = 1) -> OpenVinoRunner:
    import openvino as ov

    if device not in DEVICES:
        raise VitedgeError(f"OpenVINO cannot run on target {device!r}", f"use one of {', '.join(DEVICES)}")
    core = ov.Core()
    ov_device = DEVICES[device]
    if ov_device not in core.available_devices:
        raise VitedgeError(f"target {device}: OpenVINO sees no {ov_device} device (available: {', '.join(core.available_devices)})", "install the GPU driver (intel-opencl-icd) or use --target cpu")
    if not Path(model_path).with_suffix(".bin").is_file():
        raise VitedgeError(f"{model_path} has no weights file {Path(model_path).with_suffix('.bin').name} beside it", "copy the .xml and .bin together, or re-export")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY" if batch == 1 else "THROUGHPUT"}
    if threads and ov_device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(core.read_model(str(model_path)), ov_device, config)
    except RuntimeError as exc:
        raise VitedgeError(f"OpenVINO cannot load {model_path}: {str(exc).splitlines()[0][:200]}", "the IR is corrupt or truncated; re-export it") from None
    info = RunnerInfo(
        runtime="openvino",
        device=device,
        precision=precision,
        threads=threads,
        versions={"openvino": ov.get_version()},
        detail={"hint": config["PERFORMANCE_HINT"], "device_name": core.get_property(ov_device, "FULL_DEVICE_NAME")},
    )
    return OpenVinoRunner(compiled, info, str(model_path), _fixed_batch(compiled))
