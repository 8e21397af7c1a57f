"""The GPU check: vit_base_patch16_224 fp32 / fp16 / int8 it/s at batch 1 and 32 through
vitedge's own runners on the `cuda`, `tensorrt` and `openvino-gpu` targets, as one short
script for a session that has a GPU. Where there is none it says so and exits 0.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--seconds 5] [--batches 1,32]
    python benchmarks/gpu_check.py --targets cpu --model tiny --seconds 0.5   # prove the script on a CPU

Everything goes through the product: the artifacts are `export_artifact`'s (what `vitedge
export` writes: ONNX fp32 and int8-static, OpenVINO fp32 and int8, each with its manifest),
opened by `open_artifact` on the target (the TensorRT provider options are the product's:
targets/onnxruntime.py), PyTorch through `open_torch`, and timed by `measure.time_runner`:
warm-up calls first (TensorRT builds its engine then), then calls until `--seconds` have
passed (at least 5); each runner returns host numpy, which waits for the GPU, so a timed call
covers the whole computation plus the copies in and out, as a user's call would.
Rows: it_per_s is calls (batches) per second and images_per_s images per second, as in every
vitedge Timing; latencies are per call.
int8 is calibrated on `--calib` (default: random pixels through `build_calibration_set`, so
no data set is needed): right for speed, meaningless for accuracy. The int8-static artifact
is the product's (QDQ on MatMul/Gemm/Conv, ExportOptions defaults), not one tuned for
TensorRT: where TensorRT rejects a node the error or the provider in `detail` says so.
Weights are random (no download on a GPU box without internet); speed does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.targets.base import GPU_TARGETS

# target -> [(runtime, precision)]: what each --target can run through vitedge's runners
PLAN = {
    "cuda": [("torch", "fp32"), ("torch", "fp16"), ("onnxruntime", "fp32")],
    "tensorrt": [("onnxruntime", "fp32"), ("onnxruntime", "int8-static")],
    "openvino-gpu": [("openvino", "fp32"), ("openvino", "int8")],
    "cpu": [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8-static")],
}
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}  # runtime -> artifact format
MIN_RUNS = 5


def available_targets() -> dict[str, str]:
    """target -> why it is absent ('' when present)."""
    import onnxruntime as ort
    import openvino as ov
    import torch

    providers = ort.get_available_providers()
    cuda = torch.cuda.is_available()
    return {
        "cpu": "",
        "cuda": "" if cuda else "PyTorch sees no CUDA device",
        "tensorrt": ""
        if cuda and "TensorrtExecutionProvider" in providers
        else ("no CUDA device" if not cuda else "ONNX Runtime has no TensorrtExecutionProvider"),
        "openvino-gpu": ""
        if any(d.startswith("GPU") for d in ov.Core().available_devices)
        else "OpenVINO sees no GPU device",
    }


def make_model(name: str) -> Any:
    """The LoadedModel to export, with random weights: the tests' tiny CIFAR ViT for 'tiny'."""
    import torch

    from vitedge.compress.registry import load_model
    from vitedge.compress.train import tiny_cifar_vit

    torch.manual_seed(0)
    return tiny_cifar_vit(0) if name == "tiny" else load_model(name)


def calibration_set(loaded: Any, source: str, count: int) -> Any:
    """`count` calibration images for the int8 artifacts through the product's calibration
    set; 'random' draws uint8 noise at the model's input size (not cached: it means nothing)."""
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import array_image_set, open_source

    if source != "random":
        return build_calibration_set(open_source(source), loaded.data_config, count)
    _, height, width = loaded.data_config.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    return build_calibration_set(array_image_set("random", pixels, None, ()), loaded.data_config, count, cache=False)


def export_needed(loaded: Any, targets: list[str], folder: Path, calibration: Any) -> dict[tuple[str, str], Path]:
    """(format, precision) -> artifact folder, for every artifact the targets' plans run."""
    from vitedge.exporter.export import export_artifact

    needed = {(FORMAT_OF[runtime], precision) for t in targets for runtime, precision in PLAN[t] if runtime != "torch"}
    return {
        (to, precision): export_artifact(
            loaded, to=to, precision=precision, out=folder / f"{to}-{precision}", calibration=calibration
        )
        for to, precision in sorted(needed)
    }


def open_runner(runtime: str, precision: str, target: str, loaded: Any, artifacts: dict[tuple[str, str], Path]) -> Any:
    """The product's runner for one plan entry: open_torch on a copy of the module (fp16 casts
    it), or open_artifact on the target."""
    if runtime == "torch":
        import copy

        from vitedge.targets.torch import open_torch

        return open_torch(copy.deepcopy(loaded.module), precision=precision, device=target)
    from vitedge.targets.runners import open_artifact

    return open_artifact(artifacts[(FORMAT_OF[runtime], precision)], target=target)


def timed_row(runner: Any, inputs: np.ndarray, seconds: float, warmup: int) -> dict[str, Any]:
    """One row's figures from `measure.time_runner`, with the configuration the runner reported."""
    from vitedge.targets.measure import time_runner, timing_config

    timing = time_runner(runner, inputs, warmup=warmup, runs=MIN_RUNS, min_seconds=seconds)
    return {
        "it_per_s": timing.it_per_s,
        "images_per_s": timing.images_per_s,
        "latency_ms_p50": timing.p50_ms,
        "latency_ms_p90": timing.p90_ms,
        "runs": timing.runs,
        "config": timing_config(runner, len(inputs)),
        "execution_precision": runner.info.execution_precision,
        "detail": dict(runner.info.detail),
    }


def measure_all(args: argparse.Namespace, present: list[str], batches: list[int]) -> list[dict[str, Any]]:
    """Every plan entry of every present target at every batch; one failing path is recorded
    as its row's error and does not hide the others."""
    import torch

    loaded = make_model(args.model)
    size = tuple(loaded.data_config.input_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        needs_int8 = any("int8" in precision for t in present for _, precision in PLAN[t])
        calibration = calibration_set(loaded, args.calib, args.calib_samples) if needs_int8 else None
        artifacts = export_needed(loaded, present, Path(scratch), calibration)
        for target in present:
            for runtime, precision in PLAN[target]:
                for batch in batches:
                    row = {"model": args.model, "target": target, "runtime": runtime, "precision": precision}
                    row["batch"] = batch
                    started = time.perf_counter()
                    try:
                        runner = open_runner(runtime, precision, target, loaded, artifacts)
                        inputs = np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32)
                        row.update(timed_row(runner, inputs, args.seconds, args.warmup))
                    except Exception as exc:  # noqa: BLE001 - one failing path must not hide the others
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                    row["wall_s"] = round(time.perf_counter() - started, 1)
                    rows.append(row)
                    print_row(row)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    return rows


def print_row(row: dict[str, Any]) -> None:
    result = (
        f"{row['images_per_s']:9.2f} img/s  p50 {row['latency_ms_p50']:8.2f} ms"
        if "images_per_s" in row
        else row["error"]
    )
    print(
        f"{row['target']:<13} {row['runtime']:<12} {row['precision']:<11} batch {row['batch']:>3}: {result}", flush=True
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="vit_base_patch16_224",
        help="model spec (timm name, checkpoint), or 'tiny' (a 2-block 32×32 ViT) to prove the script",
    )
    parser.add_argument("--targets", default="cuda,tensorrt,openvino-gpu")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib", default="random", help="calibration images for int8: 'random' or a data source")
    parser.add_argument("--calib-samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser.parse_args(argv)


def present_targets(wanted: list[str]) -> list[str]:
    """The wanted targets this machine has, each absent one named with the reason, and a
    plain statement when no GPU target is among them."""
    absent = available_targets()
    for target in wanted:
        if absent[target]:
            print(f"{target}: not here ({absent[target]})")
    present = [t for t in wanted if not absent[t]]
    if present and not any(t in GPU_TARGETS for t in present):
        print("no GPU on this machine: timing the CPU only, which proves the script and is no GPU figure")
    return present


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in PLAN]
    if unknown:
        print(f"error: unknown target(s) {', '.join(unknown)}; choose from {', '.join(PLAN)}", file=sys.stderr)
        return 2
    present = present_targets(wanted)
    if not present:
        print("no GPU: nothing to measure on this machine (run it where `vitedge targets` shows a GPU)")
        return 0
    rows = measure_all(args, present, [int(b) for b in args.batches.split(",")])
    if args.out:
        import torch

        from vitedge.core.io import write_json_atomic

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        write_json_atomic(args.out, {"rows": rows, "device": device})
    return 0


if __name__ == "__main__":
    sys.exit(main())
