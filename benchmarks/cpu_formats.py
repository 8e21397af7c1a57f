"""Every CPU format of one model side by side in one run: PyTorch fp32 eager, PyTorch dynamic
int8, ONNX fp32 / int8 dynamic / int8 static, OpenVINO fp32 / fp16 / int8; batch 1 and 8,
2 threads, each row in its own process. Writes JSON with each format's speedup over PyTorch
fp32 eager and its parity (cosine) against it, and, with --profile, where ONNX Runtime spends
the time of the fastest int8 artifact, by op type.

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
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from exporter.artifact import write_json_atomic
from vitedge.pipeline import run_pipeline
from vitedge.recipe import DEFAULT_ROWS, Recipe
from vitedge.report import ResultRow, fmt


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
        session = ort.InferenceSession(str(artifact / manifest["model_file"]), options, providers=["CPUExecutionProvider"])
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


def summarize(rows: list[ResultRow]) -> list[dict[str, object]]:
    base = next(r for r in rows if r.baseline).measurement
    summary = []
    for row in rows:
        m = row.measurement
        entry: dict[str, object] = {"name": m.name, "size_mb": m.size_mb, "peak_rss_mb": m.peak_rss_mb, "cosine_vs_fp32": row.parity.cosine_mean if row.parity else 1.0}
        for timing in m.timings:
            base_timing = base.timing(timing.batch)
            entry[f"images_per_s_b{timing.batch}"] = timing.images_per_s
            entry[f"p90_ms_b{timing.batch}"] = timing.p90_ms
            entry[f"speedup_b{timing.batch}"] = timing.images_per_s / base_timing.images_per_s if base_timing else None
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
    recipe = dataclasses.replace(
        Recipe(),
        model=args.model,
        rows=DEFAULT_ROWS,
        samples=args.samples,
        calibration_samples=args.calibration_samples,
        batches=tuple(int(b) for b in args.batches.split(",")),
        threads=args.threads,
        runs=args.runs,
        name=f"CPU formats: {args.model}",
    )
    rows = run_pipeline(recipe, args.out, force=True)
    summary = summarize(rows)
    result: dict[str, object] = {"model": args.model, "threads": args.threads, "machine": rows[0].measurement.machine, "load_before": os.getloadavg(), "rows": summary}
    if args.profile:
        onnx_int8 = [r for r in rows if r.measurement.runtime == "onnxruntime" and "int8" in r.measurement.precision]
        best = max(onnx_int8, key=lambda r: r.measurement.timing(1).it_per_s)
        folder = args.out / "artifacts" / ("onnx-" + best.measurement.precision)
        size = tuple(json.loads((folder / "manifest.json").read_text())["data_config"]["input_size"])
        batch = np.random.default_rng(0).standard_normal((1, *size)).astype(np.float32)
        result["profile"] = {"artifact": best.measurement.name, "share_by_op": profile_by_op(folder, batch, args.threads)}
    write_json_atomic(args.out / "cpu_formats.json", result)
    for entry in summary:
        speedup = entry.get("speedup_b1")
        print(f"{entry['name']:<24} {fmt(entry.get('images_per_s_b1'), 'rate'):>8} img/s b1  {fmt(speedup, 'ratio'):>7}  cos {fmt(entry['cosine_vs_fp32'], 'cosine')}")
    print(f"wrote {args.out / 'cpu_formats.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
