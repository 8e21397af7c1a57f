"""Accuracy, speed, latency, size and memory of one runner, recorded with the machine facts
needed to compare the number later (CPU model, ISA flags, threads, batch, runtime versions).

Speed protocol: warm-up calls, then at least `runs` timed calls (median, and p50/p90/p99 of
per-call latency). A row is measured in its own process (`measure_isolated`) so that peak RSS
belongs to that runner alone and one runtime's thread pools cannot slow another's timing.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue as queues
import resource
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cpu import batch_outgrows_memory
from ..core.errors import VitedgeError
from .base import Runner

Clock = Callable[[], float]


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: float
    samples: int
    correct: str = (
        ""  # per-image top-1 hits, packed (targets.stats.pack_correct): pairs any two rows on the same images
    )

    def hits(self) -> np.ndarray | None:
        from .stats import unpack_correct

        return unpack_correct(self.correct, self.samples) if self.correct else None


@dataclass(frozen=True)
class Timing:
    batch: int
    runs: int
    median_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    it_per_s: float  # batches per second
    images_per_s: float
    config: dict[str, Any] = field(
        default_factory=dict
    )  # how the timed runner was set up (hint, streams, threads), as it reported


@dataclass(frozen=True)
class Measurement:
    name: str
    runtime: str
    device: str
    precision: str
    threads: int | None
    accuracy: Accuracy | None
    timings: tuple[Timing, ...]
    size_mb: float
    peak_rss_mb: float
    machine: dict[str, Any]
    versions: dict[str, str]
    detail: dict[str, Any] = field(default_factory=dict)
    execution_precision: str = ""  # what the runtime reported it computes in (f32, bf16, int8+f32, ...)
    first_inference_ms: float | None = None  # open the model + its first call on one image: what a user waits for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        accuracy = Accuracy(**data["accuracy"]) if data.get("accuracy") else None
        timings = tuple(Timing(**t) for t in data.get("timings", ()))
        return cls(**{**data, "accuracy": accuracy, "timings": timings})

    def timing(self, batch: int) -> Timing | None:
        return next((t for t in self.timings if t.batch == batch), None)


def fixed_batch(runner: Runner) -> int | None:
    """The one batch size the runner's model takes if it was exported for one (ONNX or
    OpenVINO with --batch N); None for runners that take any batch (torch, dynamic models)."""
    return getattr(runner, "fixed_batch", None)


def _padded(chunk: np.ndarray, size: int) -> np.ndarray:
    """`chunk` grown to `size` images by repeating its last one (the rows are dropped after)."""
    return chunk if len(chunk) == size else np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])


def batched_logits(runner: Runner, inputs: np.ndarray, *, batch_size: int = 50) -> np.ndarray:
    """Logits of every input, `batch_size` at a time; a fixed-batch model gets exactly the
    batch it takes (the last chunk padded), so evaluation works whatever it was exported for."""
    fixed = fixed_batch(runner)
    size = fixed or batch_size
    chunks = (np.asarray(inputs[start : start + size]) for start in range(0, len(inputs), size))
    return np.concatenate([runner(_padded(chunk, size) if fixed else chunk)[: len(chunk)] for chunk in chunks])


def check_timing_batches(runner: Runner, name: str, batches: tuple[int, ...]) -> None:
    """Refuse timing batch sizes a fixed-batch model cannot take before any work is done
    (the accuracy pass over every image can take minutes)."""
    fixed = fixed_batch(runner)
    wrong = [batch for batch in batches if fixed is not None and batch != fixed]
    if wrong:
        raise VitedgeError(
            f"{name} was exported for batch {fixed} only and cannot be timed at batch {', '.join(map(str, wrong))}",
            f"use --batch {fixed}, or re-export with --batch dynamic to take any batch size",
        )


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Top-1 and top-5 in percent, with the per-image top-1 hits."""
    from ..calibration.sources import require_labels_within
    from .stats import pack_correct

    require_labels_within(labels, logits.shape[1])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    top1_hits = top5[:, 0] == labels
    top5_hits = (top5 == labels[:, None]).any(axis=1)
    return Accuracy(
        float(100.0 * top1_hits.mean()), float(100.0 * top5_hits.mean()), int(len(labels)), pack_correct(top1_hits)
    )


WARMUP_SECONDS = 2.0  # a ViT-B batch of 8 takes 3 s here: two calls warm it as well as five


def time_runner(
    runner: Runner,
    batch: np.ndarray,
    *,
    warmup: int = 5,
    runs: int = 20,
    min_seconds: float = 1.0,
    max_runs: int = 2000,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Warm up (`warmup` calls, or fewer but at least two once WARMUP_SECONDS have passed: the
    first call pays one-time setup, the second is a normal one), then time calls until both
    `runs` calls and `min_seconds` have passed."""
    began = clock()
    for done in range(warmup):
        if done >= 2 and clock() - began >= WARMUP_SECONDS:
            break
        runner(batch)
    durations: list[float] = []
    began = clock()
    while len(durations) < max_runs and (len(durations) < runs or clock() - began < min_seconds):
        start = clock()
        runner(batch)
        durations.append(clock() - start)
    samples = np.asarray(durations)
    median = float(np.median(samples))
    p50, p90, p99 = (float(v) * 1000.0 for v in np.percentile(samples, [50, 90, 99]))
    size = int(batch.shape[0])
    return Timing(size, len(durations), median, p50, p90, p99, 1.0 / median, size / median)


SETTLE_SECONDS = 0.05  # ORT's intra-op threads spin after a run; let them idle before timing another runner


def burst_median_s(runner: Runner, batch: np.ndarray, seconds: float) -> float:
    """One short timed burst for paired comparisons (A right after B, many rounds): a pause so
    the previous runner's spinning threads go idle, a brief warm-up, the median call time."""
    time.sleep(SETTLE_SECONDS)
    return time_runner(runner, batch, warmup=3, runs=3, min_seconds=seconds).median_s


def machine_facts() -> dict[str, Any]:
    """What every row records about the machine; the CPU facts come from targets.detect."""
    from ..core.cpu import probe_cpu, usable_cpus

    cpu, (usable, quota) = probe_cpu(), usable_cpus()
    return {
        "cpu": cpu.model,
        "isa": list(cpu.isa),
        "emulated": cpu.emulated,
        "onednn_cap": cpu.onednn_cap or None,
        "cores": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_quota": quota,  # where it bounds the CPUs this process may keep busy
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: VmHWM, which starts afresh at exec;
    ru_maxrss would carry over the parent's peak into a spawned child (exec records the
    forked copy's high-water mark), making every isolated row report the parent's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


@dataclass(frozen=True)
class RunnerSpec:
    """What a child process needs to open a runner: an artifact folder, or a vitedge
    checkpoint (+ compress step names to reapply, e.g. PyTorch dynamic int8)."""

    name: str
    kind: str  # "artifact" | "torch"
    path: str
    precision: str = "fp32"
    target: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class MeasureRequest:
    spec: RunnerSpec
    inputs_path: str  # .npy float32 N×3×H×W (preprocessed once, in the parent)
    labels_path: str | None
    batches: tuple[int, ...] = (1, 8)
    runs: int = 20
    min_seconds: float = 1.0
    logits_path: str | None = None  # where to save the logits of every input (for parity)


def disk_size_mb(path: Path) -> float:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "manifest.json") / 1e6
    return path.stat().st_size / 1e6


def serialized_mb(module: Any) -> float:
    """What the module's weights take when saved (torch.save of the state dict): the size the
    study reports, and the only honest one for packed int8 modules."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell() / 1e6


def open_spec(spec: RunnerSpec) -> Runner:
    if spec.kind == "artifact":
        from .runners import open_artifact

        return open_artifact(Path(spec.path), target=spec.target, threads=spec.threads)
    from ..compress.registry import load_model
    from .torch import open_torch

    return open_torch(load_model(spec.path).module, precision=spec.precision, device=spec.target, threads=spec.threads)


def open_and_first_call(spec: RunnerSpec, image: np.ndarray, clock: Clock) -> tuple[Runner, float]:
    """The runner, and the seconds from nothing loaded to the first answer on one image (load,
    compile, first call): on a board this is often what the user feels, and it is not in the
    warmed-up timings."""
    began = clock()
    runner = open_spec(spec)
    fixed = fixed_batch(runner)
    runner(_padded(image, fixed) if fixed else image)
    return runner, clock() - began


def timing_config(runner: Runner, batch: int = 1) -> dict[str, Any]:
    """What a timing at `batch` was taken on: the runner's reported hint, streams, threads and
    kernels, from the compile that ran that batch where a runner keeps one per batch size
    (OpenVINO's `reported_at`: a timing names the kernels it timed, not batch 1's)."""
    reported_at = getattr(runner, "reported_at", None)
    at_batch = reported_at(batch) if reported_at is not None else {}
    detail = {**runner.info.detail, **at_batch}
    return {
        "threads": at_batch.get("threads") or runner.info.threads,
        **{key: detail[key] for key in ("hint", "streams", "provider", "kernels") if key in detail},
    }


def measure(request: MeasureRequest, *, clock: Clock = time.perf_counter) -> Measurement:
    """Measure one runner in this process: accuracy, then each timing batch, every timing
    recorded with the configuration the runtime reported (hint, streams, threads)."""
    spec = request.spec
    inputs = np.load(request.inputs_path, mmap_mode="r")
    runner, first_inference_s = open_and_first_call(spec, np.asarray(inputs[:1]), clock)
    check_timing_batches(runner, spec.name, request.batches)
    if too_big := batch_outgrows_memory(max(request.batches), inputs.shape[1:]):
        raise VitedgeError(f"cannot time {spec.name}: {too_big}", "time smaller batches, e.g. --batch 1,8")
    result_accuracy = None
    if request.labels_path is not None or request.logits_path:
        logits = batched_logits(runner, inputs)
        if request.labels_path is not None:
            result_accuracy = top_k_accuracy(logits, np.load(request.labels_path))
        if request.logits_path:
            np.save(request.logits_path, logits)
    info = runner.info
    size_mb = serialized_mb(runner.module) if spec.kind == "torch" else disk_size_mb(Path(spec.path))
    timings = []
    for batch in request.batches:
        sample = np.ascontiguousarray(
            np.resize(np.asarray(inputs[: min(batch, len(inputs))]), (batch, *inputs.shape[1:]))
        )
        timing = time_runner(runner, sample, runs=request.runs, min_seconds=request.min_seconds, clock=clock)
        timings.append(replace(timing, config=timing_config(runner, batch)))
    return Measurement(
        name=spec.name,
        runtime=info.runtime,
        device=info.device,
        precision=info.precision,
        threads=info.threads,
        accuracy=result_accuracy,
        timings=tuple(timings),
        size_mb=size_mb,
        peak_rss_mb=peak_rss_mb(),
        machine=machine_facts(),
        versions=dict(info.versions),
        detail=dict(info.detail),
        execution_precision=info.execution_precision,
        first_inference_ms=1000.0 * first_inference_s,
    )


def _child(request: MeasureRequest, queue: multiprocessing.Queue[Any]) -> None:
    """One row in a fresh process, kept on the fastest CPUs before any runtime starts its threads."""
    from ..core.cpu import pin_to_fastest

    try:
        pinned = pin_to_fastest(request.spec.threads)
        measured = measure(request)
        queue.put(("ok", replace(measured, machine={**measured.machine, "timed_on": pinned}).to_dict()))
    except VitedgeError as exc:
        queue.put(("user", (exc.message, exc.hint)))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which re-raises
        queue.put(("bug", f"{type(exc).__name__}: {exc}"))


def _result_or_death(process, queue, request: MeasureRequest, timeout_s: float) -> tuple[str, Any]:  # noqa: ANN001 - multiprocessing's
    """The child's message, or why none will come: a child that died (the kernel's
    out-of-memory killer sends SIGKILL, which no handler sees) is noticed within a second,
    not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return queue.get(timeout=1.0)
        except queues.Empty:
            pass
        if not process.is_alive():
            try:  # the message may have been put just before the child ended
                return queue.get(timeout=1.0)
            except queues.Empty:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"measuring {request.spec.name} gave no result in {timeout_s:.0f} s")
    code, name = process.exitcode, request.spec.name
    if code == -signal.SIGKILL:
        raise VitedgeError(
            f"measuring {name} was killed (SIGKILL, most often the kernel's out-of-memory killer) "
            f"at batch sizes {', '.join(map(str, request.batches))}",
            "time smaller batches (--batch 1,8) or fewer --samples, or free memory for it",
        )
    ending = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    raise RuntimeError(f"measuring {name} ended without a result ({ending})")


def measure_isolated(request: MeasureRequest, *, timeout_s: float = 1800) -> Measurement:
    """Measure one runner in a fresh process (clean peak RSS, no shared thread pools)."""
    from ..core.cpu import oversubscription

    if note := oversubscription(request.spec.threads):
        warnings.warn(note, stacklevel=2)  # once per run: the same line from the same place
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(request, queue), daemon=True)
    process.start()
    try:
        status, payload = _result_or_death(process, queue, request, timeout_s)
    except BaseException:  # Ctrl-C, a stop signal, a dead child: the row is not finished on the CPU alone
        process.kill()
        raise
    finally:
        process.join(timeout=30)
    if status == "user":
        raise VitedgeError(*payload)
    if status == "bug":
        raise RuntimeError(f"measuring {request.spec.name} failed: {payload}")
    return Measurement.from_dict(payload)
