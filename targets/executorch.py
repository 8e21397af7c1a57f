"""ExecuTorch runner: a `.pte` program through ExecuTorch's Python runtime
(`executorch.runtime.Runtime`), its XNNPACK delegate on the CPU.

Threads: ExecuTorch runs XNNPACK on one thread pool per process. A requested thread count
resets that pool before the program is loaded, and the count the pool reports afterwards is
what the row records (without a request it is the runtime's own choice, one thread per core
it sees). Precision: XNNPACK has no runtime precision switch; a program lowered from an fp32
graph computes its float operators in f32 (fp16 would have to be chosen at export, which
vitedge does not do), int8 programs compute their quantized products in int8 and the rest in
f32, so the label follows the artifact (core.precision) and says so rather than echoing a
setting. The runtime's Python binding links libtorch and exchanges torch tensors, so torch is
needed wherever a `.pte` is run from Python, a board included (README, "On a board").
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import VitedgeError, first_line, shortened
from ..core.precision import float_precision
from .base import RunnerInfo
from .bundle.run_bundle import execution_text
from .onnxruntime import check_batch

BACKEND = "XnnpackBackend"


@dataclass(frozen=True)
class ExecuTorchRunner:
    method: Any
    info: RunnerInfo
    name: str = "model.pte"
    fixed_batch: int | None = None  # the one batch size a program exported with --batch N takes
    max_batch: int | None = None  # a dynamic program's bound: larger batches run as several calls

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        check_batch(self.name, self.fixed_batch, len(batch))
        inputs = np.require(batch, np.float32, ["C", "W"])  # torch.from_numpy wants a writable array
        step = self.max_batch or len(inputs)
        outputs = [
            self.method.execute([torch.from_numpy(inputs[start : start + step])])[0].numpy().astype(np.float32)
            for start in range(0, len(inputs), step)
        ]
        return np.concatenate(outputs)


@contextlib.contextmanager
def native_log(lines: list[str]) -> Iterator[None]:
    """Hold back what ExecuTorch's C++ runtime writes to stderr while its thread pool starts
    (a cpuinfo probe of five lines and a "Resetting threadpool" line on every run), unless
    `vitedge --verbose`; `lines` receives it, for an error message."""
    from ..core.verbosity import verbose

    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def thread_pool(threads: int | None) -> int:
    """Set ExecuTorch's thread pool to `threads` (if given) and return the count it reports
    (asking for it starts the pool, so its start-up log is held back here, not at a call)."""
    from executorch.extension.pybindings import portable_lib

    with native_log([]):
        if threads:
            portable_lib._unsafe_reset_threadpool(int(threads))
        return int(portable_lib._threadpool_get_thread_count())


def open_executorch(
    model_path: Path,
    *,
    precision: str,
    device: str = "cpu",
    threads: int | None = None,
    batch: str | int = "dynamic",
    max_batch: int | None = None,
) -> ExecuTorchRunner:
    if device != "cpu":
        raise VitedgeError(f"ExecuTorch (XNNPACK) cannot run on target {device!r}", "use --target cpu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "this API is experimental": the Python runtime's standing note
            import executorch.version
            from executorch.runtime import Runtime
    except ImportError:
        raise VitedgeError(
            f"{model_path} is an ExecuTorch program, and ExecuTorch is not installed here",
            "pip install 'vitedge[executorch]'",
        ) from None

    runtime = Runtime.get()
    if not runtime.backend_registry.is_available(BACKEND):
        raise VitedgeError(
            f"this ExecuTorch build has no {BACKEND} (it has: {', '.join(runtime.backend_registry.registered_backend_names)})",
            "pip install the executorch wheel from PyPI, which includes XNNPACK",
        )
    pool = thread_pool(threads)
    log: list[str] = []
    try:
        with native_log(log):
            program = runtime.load_program(Path(model_path))
            method = program.load_method("forward")
    except (RuntimeError, ValueError) as exc:
        said = f" ({shortened(log[-1].strip(), 160)})" if log else ""
        raise VitedgeError(
            f"ExecuTorch cannot load {model_path}: {first_line(exc, 200)}{said}",
            "the file is corrupt, truncated or from another ExecuTorch release; re-export it",
        ) from None
    info = RunnerInfo(
        runtime="executorch",
        device=device,
        precision=precision,
        threads=pool,
        versions={"executorch": executorch.version.__version__},
        detail={"backend": BACKEND, "threads": pool, "max_batch": max_batch},
        execution_precision=execution_text(precision, float_precision(precision, device)),
    )
    fixed = int(batch) if batch != "dynamic" else None
    return ExecuTorchRunner(method, info, str(model_path), fixed, None if fixed else max_batch)
