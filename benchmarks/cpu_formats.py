"""Every CPU format of one model side by side in one run: PyTorch fp32 eager, PyTorch dynamic
int8, ONNX fp32 / int8 dynamic / int8 static, OpenVINO fp32 / fp16 / int8 (and OpenVINO and
PyTorch bf16 where the CPU computes bf16 natively); batch 1 and 8, 2 threads, each row in its
own process. Writes JSON with, per row: the execution precision the runtime reported, the
configuration each batch was timed on, the speedup over the fastest fp32 row and over
PyTorch fp32 eager, the share of this machine's measured GEMM limit (f32, int8, bf16: see
targets.limits), and parity (cosine) against PyTorch. Also in the same run: OpenVINO int8
at batch 1 through vitedge's runner and compiled plainly with the LATENCY hint, alternated in
one process (they must agree: batch 1 is timed on a latency compile), and, with --profile, where ONNX Runtime spends the time of
the fastest int8 artifact, by op type.

    python benchmarks/cpu_formats.py                       # vit_base_patch16_224 (random weights)
    python benchmarks/cpu_formats.py --model vitedge-cifar10 --samples 1000

Random weights do not change speed; parity on random weights is still a real check of the
conversion. Check that nothing else runs on the machine first (timings are worthless while
another process uses a core).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.core.io import write_json_atomic, write_text_atomic
from vitedge.targets.limits import GemmLimit, forward_flops, gemm_limits, limit_kind
from vitedge.workflows.pipeline import run_pipeline
from vitedge.workflows.recipe import DEFAULT_ROWS, Recipe
from vitedge.workflows.report import ResultRow, fastest_fp32, fmt

BF16_ROWS = ("torch:bf16", "openvino:bf16")


def profile_by_op(artifact: Path, batch: np.ndarray, threads: int, calls: int = 20) -> dict[str, float]:
    """Share of ONNX Runtime kernel time per op type over `calls` runs."""
    import onnxruntime as ort

    manifest = json.loads((artifact / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(
            str(artifact / manifest["model_file"]), options, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        for _ in range(calls):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    whole = sum(totals.values()) or 1.0
    return {op: round(us / whole, 4) for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def in_own_process(job: Callable[..., Any], *args: Any) -> Any:
    """Run `job(*args)` in a fresh process, like every row: no thread pool shared with another.
    What the job raises is raised here (the child's traceback as its cause), and a child that
    dies ends the benchmark at once (BrokenProcessPool) rather than leaving it waiting."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(job, *args).result()


def on_this_machine(measure: Callable[[], dict[str, Any]], **about: Any) -> dict[str, Any]:
    """A benchmark's result: what it is `about`, this CPU and its ISA, the load average just
    before and after `measure()` (what else was running), and what it measured, on the fastest
    CPUs for `about["threads"]` where the CPUs differ (`timed_on`, as vitedge's own rows)."""
    from vitedge.core.cpu import on_fastest_cpus, probe_cpu

    cpu = probe_cpu()
    load_before = os.getloadavg()
    with on_fastest_cpus(about.get("threads")) as pinned:
        measured = measure()
    return {
        **about,
        "cpu": cpu.described,
        "timed_on": pinned,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **measured,
    }


def write_result(out: Path, result: dict[str, Any], table: str) -> None:
    """A benchmark's JSON at `out`, its markdown table beside it (.md), and the table on stdout."""
    write_json_atomic(out, result)
    write_text_atomic(out.with_suffix(".md"), table)
    print(table)


def beside_plain_latency_compile(folder: str, threads: int, seconds: float = 1.0, rounds: int = 5) -> dict[str, Any]:
    """Batch-1 img/s of the artifact's own runner (open_artifact, as every row) and of the same
    IR compiled with nothing but the LATENCY hint, the thread count and the precision the
    runner reported, in paired rounds (targets.paired) in one process: only how vitedge
    configured the compile differs, and the machine's drift hits both alike."""
    import openvino as ov

    from vitedge.targets.paired import Pair, paired_rounds
    from vitedge.targets.runners import open_artifact

    runner = open_artifact(Path(folder), threads=threads)
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": runner.info.detail["inference_precision"],
    }
    plain = ov.Core().compile_model(str(Path(folder) / "model.xml"), "CPU", config)
    batch = (
        np.random.default_rng(0)
        .standard_normal((1, *runner.compiled.input(0).get_partial_shape()[1:].to_shape()))
        .astype(np.float32)
    )
    pair = Pair("vitedge runner", lambda x: plain(x)[0], runner, batch)
    timed = paired_rounds([pair], rounds=rounds, seconds=seconds)["vitedge runner"]
    return {
        "vitedge_runner_images_per_s_b1": 1.0 / timed.median_s,
        "plain_latency_images_per_s_b1": 1.0 / timed.reference_median_s,
        "ratio": timed.ratio,  # median over rounds of plain seconds / runner seconds: > 1, the runner is faster
        "round_ratios": list(timed.round_ratios),
        "rounds": rounds,
        "vitedge_runner": runner.info.detail,
        "plain_config": config,
        "plain_streams": plain.get_property("NUM_STREAMS"),
    }


def summarize(rows: list[ResultRow], flops: float, limits: dict[str, GemmLimit]) -> list[dict[str, object]]:
    eager = next(r for r in rows if r.baseline).measurement
    fastest = fastest_fp32(rows)
    yardstick = fastest.measurement if fastest else eager
    summary = []
    for row in rows:
        m = row.measurement
        entry: dict[str, object] = {
            "name": m.name,
            "execution_precision": m.execution_precision,
            "size_mb": m.size_mb,
            "peak_rss_mb": m.peak_rss_mb,
            "cosine_vs_fp32": row.parity.cosine_mean if row.parity else 1.0,
        }
        limit = limits[limit_kind(m.execution_precision)]
        for timing in m.timings:
            b = timing.batch
            entry[f"images_per_s_b{b}"] = timing.images_per_s
            entry[f"p90_ms_b{b}"] = timing.p90_ms
            entry[f"config_b{b}"] = timing.config
            entry[f"speedup_vs_fastest_fp32_b{b}"] = (
                timing.images_per_s / yardstick.timing(b).images_per_s if yardstick.timing(b) else None
            )
            entry[f"speedup_vs_pytorch_eager_b{b}"] = (
                timing.images_per_s / eager.timing(b).images_per_s if eager.timing(b) else None
            )
            entry[f"share_of_{limit.kind}_gemm_limit_b{b}"] = timing.images_per_s * flops / limit.ops_per_s
        summary.append(entry)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--samples", type=int, default=64, help="test images for accuracy/parity")
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_formats"))
    parser.add_argument("--profile", action="store_true", help="profile the fastest int8 ONNX artifact by op type")
    args = parser.parse_args(argv)
    from vitedge.compress.registry import load_model
    from vitedge.core.precision import bf16_missing

    bf16_rows = tuple(kind for kind in BF16_ROWS if bf16_missing(kind.split(":")[0]) is None)
    recipe = dataclasses.replace(
        Recipe(),
        model=args.model,
        rows=DEFAULT_ROWS + bf16_rows,
        samples=args.samples,
        calibration_samples=args.calibration_samples,
        batches=tuple(int(b) for b in args.batches.split(",")),
        threads=args.threads,
        runs=args.runs,
        name=f"CPU formats: {args.model}",
    )
    load_before = os.getloadavg()
    limits = in_own_process(gemm_limits, args.threads)
    rows = run_pipeline(recipe, args.out, force=True)
    loaded = load_model(args.model)
    flops = forward_flops(loaded.module, loaded.data_config.input_size)
    ov_int8 = next(r for r in rows if r.measurement.runtime == "openvino" and r.measurement.precision == "int8")
    plain = in_own_process(beside_plain_latency_compile, str(args.out / "artifacts" / "openvino-int8"), args.threads)
    plain["row_images_per_s_b1"] = ov_int8.measurement.timing(1).images_per_s
    summary = summarize(rows, flops, limits)
    result: dict[str, object] = {
        "model": args.model,
        "threads": args.threads,
        "machine": rows[0].measurement.machine,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "forward_gflop": flops / 1e9,
        "gemm_limits": {kind: dataclasses.asdict(limit) for kind, limit in limits.items()},
        "openvino_int8_b1_beside_plain_latency_compile": plain,
        "fastest_fp32": (fastest_fp32(rows).measurement.name if fastest_fp32(rows) else None),
        "rows": summary,
    }
    if args.profile:
        onnx_int8 = [r for r in rows if r.measurement.runtime == "onnxruntime" and "int8" in r.measurement.precision]
        best = max(onnx_int8, key=lambda r: r.measurement.timing(1).it_per_s)
        folder = args.out / "artifacts" / ("onnx-" + best.measurement.precision)
        size = tuple(json.loads((folder / "manifest.json").read_text())["data_config"]["input_size"])
        batch = np.random.default_rng(0).standard_normal((1, *size)).astype(np.float32)
        result["profile"] = {
            "artifact": best.measurement.name,
            "share_by_op": profile_by_op(folder, batch, args.threads),
        }
    write_json_atomic(args.out / "cpu_formats.json", result)
    print(
        f"GEMM limits ({args.threads} threads): "
        + ", ".join(f"{k} {v.giga:.0f} G/s" for k, v in limits.items())
        + f"; {flops / 1e9:.1f} GFLOP per image"
    )
    for entry in summary:
        share = next(v for k, v in entry.items() if k.startswith("share_of_") and k.endswith("_b1"))
        print(
            f"{entry['name']:<26} {entry['execution_precision']:>9} {fmt(entry.get('images_per_s_b1'), 'rate'):>8} img/s b1"
            f"  {fmt(entry.get('speedup_vs_fastest_fp32_b1'), 'ratio'):>7} fastest fp32  {fmt(entry.get('speedup_vs_pytorch_eager_b1'), 'ratio'):>7} eager"
            f"  {100 * share:5.1f}% of limit  cos {fmt(entry['cosine_vs_fp32'], 'cosine')}"
        )
    print(
        f"OpenVINO int8 b1, alternated in one process: vitedge's runner {fmt(plain['vitedge_runner_images_per_s_b1'], 'rate')} img/s, "
        f"plain LATENCY compile {fmt(plain['plain_latency_images_per_s_b1'], 'rate')} ({fmt(plain['ratio'], 'ratio')}); the row measured {fmt(plain['row_images_per_s_b1'], 'rate')}"
    )
    print(f"wrote {args.out / 'cpu_formats.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
