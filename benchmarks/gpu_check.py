"""The GPU check: vit_base_patch16_224 fp32 / fp16 / int8 it/s at batch 1 and 32 through
vitedge's own runners on the `cuda`, `tensorrt` and `openvino-gpu` targets, as one short
script for a session that has a GPU. Where there is none it says so and exits 0.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--seconds 5] [--batches 1,32]
    python benchmarks/gpu_check.py --targets cpu --model tiny --seconds 0.5   # prove the script on a CPU

Timing: warm-up calls first (TensorRT builds its engine then), then the median of calls
for `--seconds`; each runner returns host numpy, which waits for the GPU, so a timed call
covers the whole computation plus the copies in and out, as a user's call would.
int8 is a static QDQ ONNX model (MatMul/Gemm/Conv only, symmetric, as TensorRT wants),
calibrated on random inputs: right for speed, meaningless for accuracy.
Weights are random (no download on a GPU box without internet); speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# target -> [(runtime, precision)]: what each --target can run through vitedge's runners
PLAN = {
    "cuda": [("torch", "fp32"), ("torch", "fp16"), ("onnxruntime", "fp32")],
    "tensorrt": [("onnxruntime", "fp32"), ("onnxruntime", "int8")],
    "openvino-gpu": [("openvino", "fp32"), ("openvino", "int8")],
    "cpu": [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")],
}


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


def make_model(name: str):
    """(torch module, input size) with random weights."""
    import torch

    from vitedge.compress.train import cifar_vit_architecture
    from vitedge.models import Architecture, build_architecture

    torch.manual_seed(0)
    if name == "tiny":
        return build_architecture(cifar_vit_architecture(embed_dim=64, depth=2, num_heads=2)).eval(), 32
    return build_architecture(Architecture(name, {})).eval(), 224


def export_onnx(module, size: int, folder: Path) -> tuple[Path, Path]:
    """fp32 ONNX (dynamic batch) and its static QDQ int8 version."""
    import warnings

    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32 = folder / "fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.zeros(1, 3, size, size),
            str(fp32),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )

    class RandomBatches(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter(
                [{"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.batches, None)

    int8 = folder / "int8.onnx"
    quantize_static(
        str(fp32), str(int8), RandomBatches(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )  # fmt: skip
    return fp32, int8


def open_runner(runtime: str, precision: str, target: str, module, onnx: dict[str, Path]):
    if runtime == "torch":
        import copy

        from vitedge.targets.torch import open_torch

        return open_torch(copy.deepcopy(module), precision=precision, device=target)
    if runtime == "onnxruntime":
        from vitedge.targets.onnxruntime import open_onnx

        return open_onnx(onnx[precision], precision=precision, device=target)
    from vitedge.targets.openvino import open_openvino

    return open_openvino(
        onnx[precision], precision=precision, device="openvino-gpu" if target == "openvino-gpu" else "cpu"
    )


def time_runner(runner, inputs: np.ndarray, seconds: float, warmup: int) -> dict:
    for _ in range(warmup):
        runner(inputs)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 5:
        t0 = time.perf_counter()
        runner(inputs)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    p50 = statistics.median(latencies)
    return {
        "it_per_s": len(inputs) * 1000.0 / p50,
        "latency_ms_p50": p50,
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "runs": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="vit_base_patch16_224",
        help="timm model name, or 'tiny' (a 2-block 32×32 ViT) to prove the script",
    )
    parser.add_argument("--targets", default="cuda,tensorrt,openvino-gpu")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in PLAN]
    if unknown:
        print(f"error: unknown target(s) {', '.join(unknown)}; choose from {', '.join(PLAN)}", file=sys.stderr)
        return 2
    absent = available_targets()
    present = [t for t in wanted if not absent[t]]
    for target in wanted:
        if absent[target]:
            print(f"{target}: not here ({absent[target]})")
    if not present:
        print("no GPU: nothing to measure on this machine (run it where `vitedge targets` shows a GPU)")
        return 0

    import torch

    module, size = make_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        fp32, int8 = export_onnx(module, size, Path(scratch))
        onnx = {"fp32": fp32, "fp16": fp32, "int8": int8}
        for target in present:
            for runtime, precision in PLAN[target]:
                for batch in [int(b) for b in args.batches.split(",")]:
                    row = {
                        "model": args.model,
                        "target": target,
                        "runtime": runtime,
                        "precision": precision,
                        "batch": batch,
                    }
                    started = time.perf_counter()
                    try:
                        runner = open_runner(runtime, precision, target, module, onnx)
                        inputs = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
                        row.update(
                            time_runner(runner, inputs, args.seconds, args.warmup), detail=dict(runner.info.detail)
                        )
                    except Exception as exc:  # noqa: BLE001 - one failing path must not hide the others
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                    row["wall_s"] = round(time.perf_counter() - started, 1)
                    rows.append(row)
                    result = (
                        f"{row['it_per_s']:9.2f} it/s  p50 {row['latency_ms_p50']:8.2f} ms"
                        if "it_per_s" in row
                        else row["error"]
                    )
                    print(f"{target:<13} {runtime:<12} {precision:<5} batch {batch:>3}: {result}", flush=True)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(
            json.dumps(
                {"rows": rows, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}, indent=2
            )
            + "\n"
        )
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
