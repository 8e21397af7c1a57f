"""Export cost and artifact size: vit_base_patch16_224 (random weights) to ONNX fp32, int8
dynamic, int8 static and OpenVINO fp32, int8, one child process per export so that each peak
RSS (getrusage ru_maxrss, model build included) is that export's alone.

    python benchmarks/export_vit_base.py --out benchmarks/export_vit_base.json
    python benchmarks/export_vit_base.py --model tiny.safetensors --calib-samples 16 --out /tmp/x.json

Checks the bounds: ONNX fp32 export < 60 s and < 3 GB peak RSS; every int8 export (load,
calibration set and export) <= 2 min and <= 3 GB peak RSS; int8 artifacts <= 27% of the fp32
ONNX file. Do not run it while another process loads the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from vitedge.core.cpu import probe_cpu

EXPORTS = (
    ("onnx", "fp32"),
    ("onnx", "int8-dynamic"),
    ("onnx", "int8-static"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
)
MAX_FP32_SECONDS = 60.0
MAX_FP32_RSS_MB = 3072.0
MAX_INT8_RATIO = 0.27
MAX_INT8_SECONDS = 120.0
MAX_INT8_RSS_MB = 3072.0


def _one_export(spec: str, to: str, precision: str, out: str, calib_samples: int, threads: int, queue) -> None:  # noqa: ANN001 - multiprocessing.Queue
    """Child process: build the model, (build calibration), export; report time and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model
    from vitedge.core.manifest import read_manifest
    from vitedge.exporter.export import NEEDS_CALIBRATION, export_artifact

    began = start = time.perf_counter()
    loaded = load_model(spec)
    load_s = time.perf_counter() - start
    calibration = None
    if (to, precision) in NEEDS_CALIBRATION:
        calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, calib_samples, seed=0)
    start = time.perf_counter()
    folder = export_artifact(loaded, to=to, precision=precision, out=Path(out), calibration=calibration, force=True)
    export_s = time.perf_counter() - start
    files = read_manifest(folder)["files"]
    queue.put(
        {
            "format": to,
            "precision": precision,
            "load_s": round(load_s, 2),
            "export_s": round(export_s, 2),
            "total_s": round(time.perf_counter() - began, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "bytes": sum(entry["bytes"] for entry in files),
            "files": [entry["path"] for entry in files],
        }
    )


def run(spec: str, calib_samples: int, threads: int, keep: Path | None) -> dict:
    from vitedge.exporter.export import versions

    context = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="vitedge-export-bench-"))
    rows = []
    try:
        for to, precision in EXPORTS:
            queue = context.Queue()
            child = context.Process(
                target=_one_export,
                args=(spec, to, precision, str((keep or work) / f"{to}-{precision}"), calib_samples, threads, queue),
            )
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"export {to} {precision} failed (exit {child.exitcode})")
            rows.append(queue.get())
            print(
                f"{to:9s} {precision:13s} {rows[-1]['export_s']:7.2f} s  {rows[-1]['peak_rss_mb']:8.1f} MB RSS  {rows[-1]['bytes'] / 1e6:8.2f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fp32 = next(r for r in rows if (r["format"], r["precision"]) == ("onnx", "fp32"))
    for row in rows:
        row["size_vs_onnx_fp32"] = round(row["bytes"] / fp32["bytes"], 4)
    int8 = [r for r in rows if r["precision"].startswith("int8")]
    checks = {
        "onnx_fp32_export_under_60s": fp32["export_s"] < MAX_FP32_SECONDS,
        "onnx_fp32_peak_rss_under_3gb": fp32["peak_rss_mb"] < MAX_FP32_RSS_MB,
        "int8_at_most_27pct_of_fp32": all(r["size_vs_onnx_fp32"] <= MAX_INT8_RATIO for r in int8),
        "int8_exports_within_2_min": all(r["total_s"] <= MAX_INT8_SECONDS for r in int8),
        "int8_exports_peak_rss_within_3gb": all(r["peak_rss_mb"] <= MAX_INT8_RSS_MB for r in int8),
    }
    cpu = probe_cpu()
    return {
        "model": spec,
        "threads": threads,
        "calib_samples": calib_samples,
        "calib_source": "cifar10:train",
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu.model,
        "isa": list(cpu.isa),
        "load_before": os.getloadavg(),
        "versions": versions(),
        "rows": rows,
        "checks": checks,
    }


def main() -> None:
    from vitedge.core.io import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="vit_base_patch16_224", help="any model spec vitedge loads (random weights for timm names)"
    )
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args()
    result = run(args.model, args.calib_samples, args.threads, args.keep)
    write_json_atomic(args.out, result)
    print(f"checks: {result['checks']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
