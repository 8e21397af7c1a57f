"""`vitedge bench --target ssh://…`: every artifact named (the ONNX Runtime, OpenVINO and
ExecuTorch exports of one model, typically) on the board in one SSH session, side by side.

Each row gets what a person choosing a runtime for that board needs: it/s and p50/p90/p99
per batch size, top-1 on the images sent along, parity against the PyTorch reference on the
same images (the board's logits come back; the reference runs here, on the manifest's source
model, so the board needs no torch for that), peak memory and time to first inference of the
board's own processes, and the board's CPU facts (model, cores, dotprod/i8mm from its
/proc/cpuinfo, read by vitedge's own parser; clock and temperature before and after timing).
The rows are kept (targets.measured) for `vitedge targets` to recommend from, as are the rows
of a `vitedge run` on this machine, whatever its CPU (`record_run`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..calibration.preprocess import DataConfig, preprocess_batch
from ..core.cpu import CpuInfo, board_cpu, onednn_cap_note, oversubscription, quota_words
from ..core.errors import VitedgeError
from ..core.io import scratch_folder
from ..models import artifact_data_config
from ..targets.measure import Accuracy, Measurement, Timing, disk_size_mb, top_k_accuracy
from .report import Parity, ResultRow


def board_facts(board: dict[str, Any]) -> tuple[CpuInfo, dict[str, Any]]:
    """The board's CpuInfo and the `machine` dict of its rows, from what its bundle reported."""
    cpu = board_cpu(
        board.get("cpuinfo", ""),
        board.get("machine"),
        board.get("device_tree_model", ""),
        board.get("hwcaps"),
        board.get("kernel_arch"),
        board.get("cpu_features"),
        board.get("onednn_cap"),
    )
    if not board.get("cpuinfo"):  # a board without /proc/cpuinfo: what the bundle could name
        cpu = CpuInfo(board.get("machine") or "?", board.get("cpu", "?"), board.get("cpu_count") or 1, frozenset())
    usable, quota = board.get("usable_cpus") or (None, None)  # bundles before the count said nothing
    machine = {
        "cpu": cpu.model,
        "cores": cpu.cores,
        "usable_cpus": usable,
        "cpu_quota": quota,
        "isa": list(cpu.isa),
        "int8_dot": list(cpu.int8_dot),
        "emulated": cpu.emulated,
        "onednn_cap": cpu.onednn_cap or None,
        "machine": board.get("machine"),
        "python": board.get("python"),
        "platform": board.get("platform"),
        "cpu_mhz": board.get("cpu_mhz"),
    }
    return cpu, machine


def board_cpus(cpu: CpuInfo, machine: dict[str, Any]) -> tuple[int, str]:
    """How many CPUs a board's runner could keep busy, and the words for them: its cores, or fewer
    where the runner reported a taskset or a container's CPU quota (`core.cpu.usable_cpus`, which
    the bundle ships and runs there)."""
    usable, quota = machine.get("usable_cpus"), machine.get("cpu_quota")
    if usable and (usable < cpu.cores or quota is not None):
        return usable, "the board's runner may use" + (f" ({quota_words(quota)})" if quota is not None else "")
    return cpu.cores, "the board has"


def _reference_logits(
    source: dict[str, Any], folder: Path, images: Sequence[str], config: DataConfig, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None] | str:
    """The PyTorch reference's logits (and token-choice margins) on the images the board
    scored, preprocessed here by the artifact's own DataConfig; or why there are none."""
    from PIL import Image

    from ..calibration import preprocess
    from ..compress.registry import load_model
    from ..compress.tokens import decision_margins
    from ..models import has_random_weights
    from ..targets.measure import batched_logits
    from ..targets.torch import open_torch

    spec = source.get("spec")
    if not spec:
        return "the artifact does not record its source model"
    if has_random_weights(spec, pretrained=False):
        return f"its source {spec} is a model name (random or hub weights a new load does not reproduce); export from a checkpoint file to check parity on the board"
    key = json.dumps([spec, config.to_dict(), list(images)], sort_keys=True)
    if key in cache:
        return cache[key]
    try:
        loaded = cache.get(f"model:{spec}") or load_model(spec)
    except VitedgeError as exc:
        cache[key] = f"its source model {spec} cannot be loaded here ({exc.message})"
        return cache[key]
    if source.get("sha256") and loaded.source_sha256 and source["sha256"] != loaded.source_sha256:
        cache[key] = f"{spec} is not the file this artifact was exported from (sha256 differs)"
        return cache[key]
    cache[f"model:{spec}"] = loaded
    pictures = []
    for name in images:
        with Image.open(folder / name) as image:
            pictures.append(preprocess.to_rgb(image))
    inputs = preprocess_batch(pictures, config)
    logits = batched_logits(open_torch(loaded.module, precision="fp32"), inputs)
    cache[key] = (logits, decision_margins(loaded.module, inputs))
    return cache[key]


def _accuracy(scored: dict[str, Any]) -> Accuracy:
    """Top-1 (and top-5, from the logits) on the board's images, with the per-image hits."""
    from ..targets.stats import pack_correct

    if scored.get("logits"):
        labels = np.array([scored["classes"][name.split("/")[0]] for name in scored["images"]])
        return top_k_accuracy(np.asarray(scored["logits"], dtype=np.float64), labels)
    hits = np.asarray(scored["hits"], dtype=bool)
    return Accuracy(float(scored["top1"]), float("nan"), int(scored["count"]), pack_correct(hits))


def _timing(bench: dict[str, Any]) -> Timing:
    """A board bench as a Timing: run_bundle reports images per second (batch / p50)."""
    latency, batch = bench["latency_ms"], int(bench["batch"])
    return Timing(
        batch,
        int(bench["runs"]),
        latency["p50"] / 1000.0,
        latency["p50"],
        latency["p90"],
        latency["p99"],
        1000.0 / latency["p50"],
        batch * 1000.0 / latency["p50"],
        config={
            "threads": bench.get("detail", {}).get("threads"),
            "thermal": bench.get("thermal"),
            "timed_on": bench.get("timed_on"),
        },
    )


def board_row(entry: dict[str, Any], folder: Path | None, cache: dict[str, Any]) -> tuple[ResultRow, list[str]]:
    """One board entry (targets.remote.bench_board) as a result row, its parity computed here;
    plus notes a person should read (why a row has no parity)."""
    from .parity import compare_logits

    manifest, benches, scored = entry["manifest"], entry["benches"], entry["eval"]
    first = benches[0]
    cpu, machine = board_facts(first["board"])
    machine["timed_on"] = first.get("timed_on")
    machine["temperature_c"] = {
        "before": (first.get("thermal") or {}).get("before", {}).get("temperature_c"),
        "after": (benches[-1].get("thermal") or {}).get("after", {}).get("temperature_c"),
    }
    peaks = [r.get("peak_rss_mb") for r in [*benches, scored] if r and r.get("peak_rss_mb") is not None]
    notes, parity = [], None
    source = Path(entry["source"])
    if scored is not None and scored.get("logits") and folder is not None:
        config = artifact_data_config(source, manifest)
        found = _reference_logits(manifest.get("source", {}), folder, scored["images"], config, cache)
        if isinstance(found, str):
            notes.append(f"{source.name}: no parity check: {found}")
        else:
            reference, margins = found
            report = compare_logits(
                reference,
                np.asarray(scored["logits"], dtype=np.float64),
                precision=manifest["precision"],
                identities=scored["images"],
                margins=margins,
            )
            parity = Parity(report.cosine_mean, report.cosine_min, report.top1_agreement, report.max_abs, report.passed)
            if not report.passed:
                notes.append(f"{source.name} on the board is outside its parity bounds: {'; '.join(report.failures)}")
    detail = dict(first.get("detail", {}))
    measurement = Measurement(
        name=f"{source.name} @ {entry['target'].removeprefix('ssh://')}",
        runtime=first["runtime"],
        device=entry["target"],
        precision=manifest["precision"],
        threads=detail.get("threads", first.get("threads")),
        accuracy=_accuracy(scored) if scored else None,
        timings=tuple(_timing(b) for b in benches),
        size_mb=disk_size_mb(source) if source.exists() else float("nan"),
        peak_rss_mb=max(peaks) if peaks else float("nan"),
        machine=machine,
        versions=dict(first["board"].get("versions", {})),
        detail={**detail, "format": manifest["format"]},
        execution_precision=str(detail.get("execution_precision", "")),
        first_inference_ms=first.get("first_inference_ms"),
    )
    if note := oversubscription(measurement.threads, *board_cpus(cpu, machine)):
        notes.append(f"{source.name}: {note}")
    return ResultRow(measurement, parity, scale=f"board {entry['target']}"), notes


def board_summary(row: ResultRow, fmt: str | None = None) -> dict[str, Any]:
    """What targets.measured keeps of a row: enough to recommend and to say why."""
    m = row.measurement
    b1, b8 = m.timing(1), m.timing(8)

    def number(value: float | None) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    return {
        "name": m.name,
        "runtime": m.runtime,
        "format": fmt or m.detail.get("format", m.runtime),
        "precision": m.precision,
        "execution_precision": m.execution_precision,
        "threads": m.threads,
        "it_per_s_b1": b1.it_per_s if b1 else None,
        "p50_ms_b1": b1.p50_ms if b1 else None,
        "images_per_s_b8": b8.images_per_s if b8 else None,
        "parity_passed": row.parity.passed if row.parity else None,
        "cosine_mean": row.parity.cosine_mean if row.parity else None,
        "top1_agreement": row.parity.top1_agreement if row.parity else None,
        "peak_rss_mb": number(m.peak_rss_mb),
        "first_inference_ms": number(m.first_inference_ms),
        "versions": dict(m.versions),  # the runtime that measured it: another version may not run as fast
    }


def bench_board_rows(
    items: Sequence[str],
    target: str,
    *,
    folder_for: Any,
    identity: Path | None,
    accept_new_host_key: bool,
    known_hosts: Path | None,
    batches: tuple[int, ...],
    threads: int,
    seconds: float,
    data: str | None,
    samples: int | None,
    python: str = "python3",
    run_timeout: float | None = None,
    console: Console | None = None,
    record: bool = True,
) -> list[ResultRow]:
    """Every item on the board in one SSH call; a row per item that ran, a warning per item
    that could not (its runtime missing there, say), an error only if none ran."""
    from ..targets.remote import bench_board, checked_board_request

    checked_board_request(target, batches, seconds, threads, run_timeout)  # before the images are written
    console = console or Console(stderr=True)
    with scratch_folder("vitedge-board-data-") as scratch:
        folder = folder_for(data, samples, Path(scratch)) if data else None
        entries = bench_board(
            [Path(item) for item in items],
            target,
            identity=identity,
            accept_new_host_key=accept_new_host_key,
            known_hosts=known_hosts,
            batches=batches,
            seconds=seconds,
            threads=threads,
            data=folder,
            logits=folder is not None,
            python=python,
            run_timeout=run_timeout,
            on_progress=lambda line: console.print(f"[dim]{target}[/] {line}", highlight=False),
        )
        failed = [entry for entry in entries if "error" in entry]
        if len(failed) == len(entries):
            raise failed[0]["error"]
        for entry in failed:
            warnings.warn(
                f"{Path(entry['source']).name} did not run: {entry['error'].message} ({entry['error'].hint})",
                stacklevel=2,
            )
        cache: dict[str, Any] = {}
        rows, notes = [], []
        for entry in entries:
            if "error" not in entry:
                row, more = board_row(entry, folder, cache)
                rows.append(row)
                notes += more
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if record:
        _record(rows, entries, where=entries[0]["target"])
    return rows


def _keep(cpu: CpuInfo, pairs: list[tuple[ResultRow, dict[str, Any]]], *, where: str) -> None:
    """Keep (row, manifest) pairs for `vitedge targets`, by the model they measured."""
    by_model: dict[str, list[tuple[ResultRow, str]]] = {}
    for row, manifest in pairs:
        spec = manifest.get("source", {}).get("spec") or "unknown model"
        by_model.setdefault(spec, []).append((row, manifest["format"]))
    for model, chosen in sorted(by_model.items()):
        _keep_model(cpu, model, chosen, where=where)


def _speeds_not_its_own(cpu: CpuInfo) -> str:
    """Why speeds taken on `cpu` are not that CPU's (emulated, or OpenVINO under a oneDNN cap), "" where they are."""
    if cpu.emulated:
        return (
            f"the CPU is emulated ({cpu.model}): its it/s and latency are the emulator's, not a board's"
            " (parity and accuracy stand)"
        )
    if cpu.onednn_cap:
        return (
            f"{onednn_cap_note(cpu.onednn_cap, cpu.isa)}: its OpenVINO it/s and latency are an older CPU's kernels,"
            f" not this {cpu.model}'s (parity and accuracy stand; unset {cpu.onednn_cap.partition('=')[0]} to"
            " measure this CPU)"
        )
    return ""


def _keep_model(cpu: CpuInfo, model: str, chosen: list[tuple[ResultRow, str]], *, where: str) -> None:
    """(row, format) pairs of one model as `vitedge targets` reads them, with the row
    `report.recommended` chooses from them (the same rule as `vitedge run`'s table). A cache
    that cannot be written costs the advice only: one warning, and the bench or run that
    measured the rows still prints and writes them. Speeds that are not the CPU's own are not kept."""
    from ..targets import measured
    from .report import recommended

    not_its_own = _speeds_not_its_own(cpu)
    if not_its_own:
        warnings.warn(f"{where}: {not_its_own}, so `vitedge targets` keeps nothing from them", stacklevel=2)
        return
    best = recommended([row for row, _ in chosen])
    threads = max((row.measurement.threads or 0 for row, _ in chosen), default=0)
    crowded = (  # kept beside the rows: `vitedge targets` says their figures are the throttling's
        oversubscription(threads)
        if where.startswith("local")
        else oversubscription(threads, *board_cpus(cpu, chosen[0][0].measurement.machine))
    )
    try:
        measured.record(
            cpu,
            model,
            [board_summary(row, fmt) for row, fmt in chosen],
            where=where,
            recommended=best.measurement.name if best else None,
            crowded=crowded,
        )
    except OSError as error:
        warnings.warn(f"`vitedge targets` will not recommend from these measurements: {error}", stacklevel=2)


def _record(rows: list[ResultRow], entries: list[dict[str, Any]], *, where: str) -> None:
    ran = [entry for entry in entries if "error" not in entry]
    cpu, _ = board_facts(ran[0]["benches"][0]["board"])
    _keep(cpu, [(row, entry["manifest"]) for row, entry in zip(rows, ran, strict=True)], where=where)


def record_local(rows: list[ResultRow], items: Sequence[str]) -> None:
    """A bench on an ARM machine itself: its rows are this board's measurements (speed only:
    a local bench of artifacts runs no parity check, so they recommend nothing by themselves
    and `vitedge targets` shows them beside its rule)."""
    from ..core.cpu import probe_cpu
    from ..core.manifest import is_artifact, read_manifest
    from ..targets import measured

    cpu = probe_cpu()
    if cpu.arch not in measured.ARM:
        return
    pairs = [(row, read_manifest(Path(item))) for row, item in zip(rows, items, strict=True) if is_artifact(Path(item))]
    _keep(cpu, pairs, where="local")


def record_run(rows: list[ResultRow], kinds: Sequence[str], model: str) -> None:
    """`vitedge run`'s rows on this machine's CPU: every artifact parity-checked against the
    PyTorch row, so the row `report.recommended` picks (the one the run's summary names) is
    what `vitedge targets` recommends here from then on, on any CPU, instead of its ISA rule.
    `kinds` are the run's row kinds (`recipe.rows_for`: "onnx:int8-dynamic"), in the order of `rows`."""
    from ..core.cpu import probe_cpu

    chosen = [(row, kind.split(":")[0]) for row, kind in zip(rows, kinds, strict=True)]
    _keep_model(probe_cpu(), model, chosen, where="local, vitedge run")
