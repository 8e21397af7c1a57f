"""OpenVINO runner: CPU or GPU plugin.

Every compile states its execution precision (`INFERENCE_PRECISION_HINT`, from
targets.precision) and its performance hint, and the runner records what the compiled model
reports back: the precision it computes in, its streams and threads.

The hint is LATENCY at every batch size. The runner serves one synchronous caller, one
request at a time (vitedge's timing loop, a board's `runner(batch)`); THROUGHPUT splits the
cores into streams that only pay with as many requests in flight, and a single request then
runs on one stream's share: on 2 cores it made 2 streams of 1 thread, and ViT-B ran 4.2 img/s
at batch 8 against 8.3 with LATENCY (int8: 21.2 against 43.0), and 27% slower at batch 1.

A dynamic-batch IR is compiled for each batch size it is given, its input static
(`batch_compiler`): OpenVINO's ARM plugin computes int8 wrong on a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cpu import runtime_threads
from ..core.errors import VitedgeError, first_line
from ..core.precision import NATIVE_BF16, float_precision, require_bf16
from .base import RunnerInfo
from .bundle.run_bundle import openvino_batch_compiler as batch_compiler
from .bundle.run_bundle import openvino_label, openvino_record
from .onnxruntime import check_batch

DEVICES = {"cpu": "CPU", "openvino-gpu": "GPU"}


@dataclass(frozen=True)
class OpenVinoRunner:
    compiled: Any  # as opened: for batch 1 where the IR's batch is dynamic (see batch_compiler)
    info: RunnerInfo
    name: str = "model.xml"
    fixed_batch: int | None = None  # the one batch size an IR exported with --batch N takes
    compile_batch: Callable[[int], Any] | None = None  # a dynamic-batch IR compiled for one batch size
    _by_batch: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        check_batch(self.name, self.fixed_batch, len(batch))
        return np.asarray(self._compiled_for(len(batch))(np.ascontiguousarray(batch, dtype=np.float32))[0])

    def reported_at(self, size: int) -> dict[str, Any]:
        """What the compile that runs `size` images reports (`reported`): a dynamic-batch IR is
        compiled for each batch size, and its kernels are chosen for that shape."""
        return reported(self._compiled_for(size))

    def _compiled_for(self, size: int) -> Any:
        """The compile for `size` images: the batch-1 one the runner opened with, or one other kept
        at a time (each holds its own repacked weights), so a timing loop or an evaluation's
        batches reuse it and a new size compiles once."""
        if self.compile_batch is None:
            return self.compiled
        if size not in self._by_batch:
            self._by_batch.clear()
            self._by_batch[size] = self.compiled if size == 1 else self.compile_batch(size)
        return self._by_batch[size]


def _fixed_batch(compiled: Any) -> int | None:
    """The input's batch dimension if the IR fixes it (a dynamic one is -1 / not static)."""
    first = compiled.input(0).get_partial_shape()[0]
    return first.get_length() if first.is_static else None


def compile_config(precision: str, device: str, *, threads: int | None = None) -> dict[str, Any]:
    """The properties every OpenVINO compile of an artifact gets. What each precision asks for
    depends on nothing else, so it can be checked on any machine; a thread count not asked for
    is the CPUs this process may keep busy where a quota or an affinity mask leaves fewer than
    the machine has (`core.cpu.runtime_threads`), else OpenVINO's own choice."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": float_precision(precision, device),
    }
    if DEVICES.get(device) == "CPU" and (threads := runtime_threads(threads)):
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def reported(compiled: Any) -> dict[str, Any]:
    """What the compiled model says it will do (not what it was asked): precision, hint,
    streams, threads, and the precision and kernel each product runs in."""

    def get(name: str) -> Any:
        try:
            return compiled.get_property(name)
        except RuntimeError:  # a plugin that lacks the property (GPU has no thread count)
            return None

    precision = get("INFERENCE_PRECISION_HINT")
    hint = get("PERFORMANCE_HINT")
    return {
        "inference_precision": precision.get_type_name() if precision is not None else None,
        "hint": str(hint) if hint is not None else None,
        "streams": get("NUM_STREAMS"),
        "threads": get("INFERENCE_NUM_THREADS"),
        **openvino_record(compiled),
    }


def open_openvino(
    model_path: Path, *, precision: str, device: str = "cpu", threads: int | None = None
) -> OpenVinoRunner:
    import openvino as ov

    if device not in DEVICES:
        raise VitedgeError(f"OpenVINO cannot run on target {device!r}", f"use one of {', '.join(DEVICES)}")
    if precision in NATIVE_BF16 and DEVICES[device] == "CPU":
        require_bf16(f"{model_path} is a {precision} artifact", "openvino")
    core = ov.Core()
    ov_device = DEVICES[device]
    if ov_device not in core.available_devices:
        raise VitedgeError(
            f"target {device}: OpenVINO sees no {ov_device} device (available: {', '.join(core.available_devices)})",
            "install the GPU driver (intel-opencl-icd) or use --target cpu",
        )
    if not Path(model_path).with_suffix(".bin").is_file():
        raise VitedgeError(
            f"{model_path} has no weights file {Path(model_path).with_suffix('.bin').name} beside it",
            "copy the .xml and .bin together, or re-export",
        )
    try:
        return model_runner(
            core,
            core.read_model(str(model_path)),
            compile_config(precision, device, threads=threads),
            precision=precision,
            device=device,
            threads=threads,
            name=str(model_path),
        )
    except RuntimeError as exc:
        raise VitedgeError(
            f"OpenVINO cannot load {model_path}: {first_line(exc, 200)}",
            "the IR is corrupt or truncated; re-export it",
        ) from None


def model_runner(
    core: Any, model: Any, config: dict[str, Any], *, precision: str, device: str, threads: int | None, name: str
) -> OpenVinoRunner:
    """An OpenVINO model compiled as every vitedge row compiles it: `config`, and a static
    batch per call size where the IR's batch is dynamic (batch_compiler)."""
    ov_device = DEVICES[device]
    compile_batch = batch_compiler(core, model, ov_device, config)
    compiled = compile_batch(1) if compile_batch else core.compile_model(model, ov_device, config)
    runner = compiled_runner(
        compiled,
        precision=precision,
        device=device,
        threads=threads,
        name=name,
        device_name=core.get_property(ov_device, "FULL_DEVICE_NAME"),
    )
    return runner if compile_batch is None else replace(runner, fixed_batch=None, compile_batch=compile_batch)


def compiled_runner(
    compiled: Any, *, precision: str, device: str, threads: int | None, name: str, device_name: str = ""
) -> OpenVinoRunner:
    """A runner around a model compiled elsewhere (a peer's own compile settings in the
    benchmarks), described by what the compiled model reports, like every OpenVINO row."""
    info = runner_info(compiled, precision=precision, device=device, threads=threads, device_name=device_name)
    return OpenVinoRunner(compiled, info, name, _fixed_batch(compiled))


def runner_info(
    compiled: Any, *, precision: str, device: str, threads: int | None, device_name: str = ""
) -> RunnerInfo:
    """The row description of a compiled model, from what it reports."""
    import openvino as ov

    actual = reported(compiled)
    return RunnerInfo(
        runtime="openvino",
        device=device,
        precision=precision,
        threads=actual["threads"] or threads,
        versions={"openvino": ov.get_version()},
        detail={**actual, "device_name": device_name},
        execution_precision=openvino_label(precision, actual["inference_precision"] or "?", actual["products"]),
    )
