"""Where an OpenVINO artifact's time goes, by OpenVINO's own per-node counters, compiled as vitedge
compiles it.

    python benchmarks/openvino_profile.py ARTIFACT_DIR --out benchmarks/results/NAME.json [--precision int8-bf16]

The artifact is compiled with `targets.openvino.compile_config` (the product's precision hint,
LATENCY, the thread count) plus `PERF_COUNT`, run `--calls` times at batch 1 on the first
CIFAR-10 test image (preprocessed by the artifact's own DataConfig), and the last call's counters
are summed by node type and kernel ("FullyConnected brgemm_avx512_amx_i8"). `--precision` runs
the same IR at another artifact precision (`int8-bf16` on an `int8` IR: its float parts in bf16),
to see which parts a precision moves. Check that nothing else runs on the machine first.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path
from typing import Any

import numpy as np
from cpu_formats import write_result  # noqa: E402 - beside this script


def profile(folder: Path, precision: str | None, threads: int, calls: int) -> dict[str, Any]:
    import openvino as ov

    from vitedge.calibration.preprocess import DataConfig, preprocess_batch
    from vitedge.calibration.sources import open_source
    from vitedge.core.manifest import model_path, read_manifest
    from vitedge.targets.openvino import compile_config, reported

    manifest = read_manifest(folder)
    precision = precision or manifest["precision"]
    config = {**compile_config(precision, "cpu", threads=threads), "PERF_COUNT": True}
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_path(folder, manifest))), "CPU", config)
    data_config = DataConfig.from_dict(manifest["data_config"])
    image = preprocess_batch([open_source("cifar10").get(0)], data_config)
    request = compiled.create_infer_request()
    wall = []
    for _ in range(calls):
        start = time.perf_counter()
        request.infer({0: image})
        wall.append(time.perf_counter() - start)
    kernels: collections.Counter[str] = collections.Counter()
    for node in request.profiling_info:
        kernels[f"{node.node_type} {node.exec_type}"] += node.real_time.total_seconds() * 1e3
    return {
        "artifact": str(folder),
        "precision": precision,
        "compiled": reported(compiled),
        "threads": threads,
        "median_call_ms": 1e3 * float(np.median(wall[calls // 2 :])),
        "last_call_node_ms": sum(kernels.values()),
        "by_kernel_ms": dict(kernels.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an OpenVINO artifact folder written by `vitedge export`")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--precision", default=None, help="run the IR at this artifact precision (default: its own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    from vitedge.core.cpu import probe_cpu

    cpu = probe_cpu()
    result = {
        "cpu": cpu.described,
        **profile(args.artifact, args.precision, args.threads, args.calls),
    }
    lines = [
        f"# OpenVINO profile: {args.artifact.name} as {result['precision']}, batch 1, {args.threads} threads",
        "",
        f"{result['cpu']}; computes {result['compiled']['inference_precision']} float parts; median call "
        f"{result['median_call_ms']:.1f} ms, the last call's nodes {result['last_call_node_ms']:.1f} ms.",
        "",
        "| node type and kernel | ms (last call) |",
        "|---|---|",
        *(f"| {kernel} | {ms:.2f} |" for kernel, ms in result["by_kernel_ms"].items() if ms >= 0.05),
    ]
    write_result(args.out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
