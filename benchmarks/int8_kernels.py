"""Every int8 Linear kernel installed here, on one model's own Linear shapes, side by side in one run.

    python benchmarks/int8_kernels.py --out benchmarks/results/int8_kernels_vit_base.json

A whole int8 model cannot run faster than its Linear products on the kernel it uses. This
times each kernel a user could reach from the installed runtimes on the shapes the model
really runs (`targets.limits.linear_shapes`: ViT-B at batch 1 is 197 rows by 768×2304,
768×768, 768×3072 and 3072×768, twelve times each), so the question "is there a faster int8
kernel than the one vitedge ships, on this CPU?" is answered by measurement, not by the ISA:
- ONNX Runtime MatMul, f32 (the float reference);
- ONNX Runtime MatMulInteger u8×s8 on an input already in u8 (the kernel of the int8 Linear
  limit in `targets.limits`: no activation quantization, no dequantization);
- ONNX Runtime DynamicQuantizeMatMul, as vitedge's `--precision int8-dynamic` writes it
  (`exporter.quantize.quantize_dynamic_onnx`): per channel with 7-bit weights (the default),
  per channel with 8-bit weights (`--full-range`), per tensor with 8-bit weights (`--per-tensor
  --full-range`, the default before);
- ONNX Runtime MatMulNBits, 8-bit and 4-bit block-wise weights with int8 compute
  (accuracy_level 4), as ORT's own `MatMulNBitsQuantizer` writes them;
- PyTorch's dynamic int8 Linear (the study's DQ) on every quantized engine torch offers here,
  and PyTorch's f32 Linear.

Each kernel runs in its own process per round, rounds interleaved, so drift on a shared
machine hits every kernel alike. Per shape: two warm-up calls, then the median call over
--seconds; per image: the sum over shapes of count × that median. Ratios are taken per round
(against the kernel vitedge ships, and against MatMulInteger) and their medians reported.
Accuracy beside speed: each float-output kernel's cosine to the float64 product, its weight
drawn N(0, 0.02) and its input N(0, 1) (real activations have outlier channels, so real
int8 cosines are lower; what the parity gate measures on a real model is `vitedge verify`).
Check that nothing else runs on the machine first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cpu_formats import in_own_process, on_this_machine, write_result  # noqa: E402 - beside this script

from vitedge.targets.limits import LinearShape, matmul_model

SHIPPED = "ORT DynamicQuantizeMatMul s8, per channel, 7-bit weights (vitedge int8-dynamic)"
LIMIT = "ORT MatMulInteger u8×s8, input already u8 (the int8 Linear limit's kernel)"
WEIGHT_STD = 0.02

Call = Callable[[], Any]


def _ort_session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    from vitedge.targets.onnxruntime import session_options

    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])


def _ort_rewritten(rewrite: Callable[[Path, Path], None]) -> Callable[..., Call]:
    """A kernel made by running a real ONNX quantizer on the float Linear graph."""

    def build(x: np.ndarray, weight: np.ndarray, threads: int) -> Call:
        import onnx

        with tempfile.TemporaryDirectory(prefix="vitedge-kernels-") as scratch:
            src, dst = Path(scratch) / "f32.onnx", Path(scratch) / "int8.onnx"
            onnx.save(matmul_model(weight, x.shape[0]), src)
            rewrite(src, dst)
            session = _ort_session(dst.read_bytes(), threads)
        return lambda: session.run(None, {"x": x})[0]

    return build


def _dynamic(**options: Any) -> Callable[[Path, Path], None]:
    def rewrite(src: Path, dst: Path) -> None:
        from vitedge.exporter.quantize import quantize_dynamic_onnx

        quantize_dynamic_onnx(src, dst, op_types=("MatMul",), **options)

    return rewrite


def _nbits(bits: int, block: int) -> Callable[[Path, Path], None]:
    def rewrite(src: Path, dst: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from vitedge.exporter.quantize import quiet_ort

        with quiet_ort():
            quantizer = MatMulNBitsQuantizer(
                onnx.load(src), bits=bits, block_size=block, is_symmetric=True, accuracy_level=4
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(dst))

    return rewrite


def _ort_f32(x: np.ndarray, weight: np.ndarray, threads: int) -> Call:
    session = _ort_session(matmul_model(weight, x.shape[0]), threads)
    return lambda: session.run(None, {"x": x})[0]


def _ort_integer(x: np.ndarray, weight: np.ndarray, threads: int) -> Call:
    """MatMulInteger on integers of the same shapes (its int32 output is not compared)."""
    from vitedge.targets.limits import ort_matmul

    call = ort_matmul("int8", x.shape[0], *weight.shape, threads)
    return lambda: (call(), None)[1]


def _torch_dynamic(engine: str) -> Callable[..., Call]:
    def build(x: np.ndarray, weight: np.ndarray, threads: int) -> Call:
        import torch

        torch.set_num_threads(threads)
        torch.backends.quantized.engine = engine
        linear = torch.nn.Linear(*weight.shape, bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T))
        module = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, torch.qint8)
        tensor = torch.from_numpy(x)

        def call() -> np.ndarray:
            with torch.inference_mode():
                return module(tensor).numpy()

        return call

    return build


def _torch_f32(x: np.ndarray, weight: np.ndarray, threads: int) -> Call:
    import torch

    torch.set_num_threads(threads)
    w, tensor = torch.from_numpy(np.ascontiguousarray(weight.T)), torch.from_numpy(x)

    def call() -> np.ndarray:
        with torch.inference_mode():
            return torch.nn.functional.linear(tensor, w).numpy()

    return call


def kernels() -> dict[str, tuple[str, Callable[..., Call]]]:
    """name -> (what it computes in, builder(x, weight, threads) -> call returning the product)."""
    import torch

    found = {
        "ORT MatMul f32": ("f32", _ort_f32),
        LIMIT: ("int8", _ort_integer),
        SHIPPED: ("int8", _ort_rewritten(_dynamic(per_channel=True, reduce_range=True))),
        "ORT DynamicQuantizeMatMul s8, per channel, 8-bit weights (--full-range)": (
            "int8",
            _ort_rewritten(_dynamic(per_channel=True, reduce_range=False)),
        ),
        "ORT DynamicQuantizeMatMul s8, per tensor, 8-bit weights (--per-tensor --full-range)": (
            "int8",
            _ort_rewritten(_dynamic(per_channel=False, reduce_range=False)),
        ),
        "ORT MatMulNBits 8-bit, blocks of 32, int8 compute": ("int8", _ort_rewritten(_nbits(8, 32))),
        "ORT MatMulNBits 8-bit, blocks of 128, int8 compute": ("int8", _ort_rewritten(_nbits(8, 128))),
        "ORT MatMulNBits 4-bit, blocks of 32, int8 compute": ("int4×int8", _ort_rewritten(_nbits(4, 32))),
    }
    for engine in torch.backends.quantized.supported_engines:
        if engine != "none":
            found[f"PyTorch dynamic int8 Linear, {engine} engine"] = ("int8", _torch_dynamic(engine))
    found["PyTorch Linear f32"] = ("f32", _torch_f32)
    return found


def _median_call(call: Call, seconds: float) -> float:
    call()
    call()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_kernel(name: str, shapes: tuple[LinearShape, ...], threads: int, seconds: float, batch: int) -> dict:
    """In a fresh process: one kernel on every shape; seconds per image and its accuracy."""
    import warnings

    # PyTorch warns on every dynamic Linear that its quantized tensors are deprecated: they still run.
    warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
    builder = kernels()[name][1]
    total, cosines = 0.0, []
    for index, shape in enumerate(shapes):
        rng = np.random.default_rng(index)
        weight = (rng.standard_normal((shape.inputs, shape.outputs)) * WEIGHT_STD).astype(np.float32)
        x = rng.standard_normal((shape.rows, shape.inputs)).astype(np.float32)
        call = builder(x, weight, threads)
        out = call()
        if out is not None:
            exact = x.astype(np.float64) @ weight.astype(np.float64)
            out = np.asarray(out, dtype=np.float64).reshape(exact.shape)
            cosines.append(float(np.sum(out * exact) / np.linalg.norm(out) / np.linalg.norm(exact)))
        total += shape.count * _median_call(call, seconds)
    return {"seconds_per_image": total / batch, "min_cosine": min(cosines) if cosines else None}


def summarize(names: list[str], rounds: list[dict[str, dict]], computes: dict[str, str]) -> list[dict[str, Any]]:
    def per_round(name: str, other: str) -> list[float]:
        """`other`'s time over `name`'s, round by round: how many times faster `name` is."""
        return [r[other]["seconds_per_image"] / r[name]["seconds_per_image"] for r in rounds]

    table = []
    for name in names:
        seconds = statistics.median(r[name]["seconds_per_image"] for r in rounds)
        table.append(
            {
                "kernel": name,
                "computes": computes[name],
                "ms_per_image": 1e3 * seconds,
                "linear_only_it_per_s": 1.0 / seconds,
                "over_shipped": statistics.median(per_round(name, SHIPPED)),
                "over_shipped_rounds": per_round(name, SHIPPED),
                "share_of_limit_kernel": statistics.median(per_round(name, LIMIT)),
                "min_cosine": rounds[0][name]["min_cosine"],
            }
        )
    return table


def measure(shapes: tuple[LinearShape, ...], *, threads: int, rounds: int, seconds: float, batch: int) -> dict:
    found = kernels()
    names = list(found)
    measured = []
    for number in range(rounds):
        measured.append({name: in_own_process(time_kernel, name, shapes, threads, seconds, batch) for name in names})
        print(
            f"round {number + 1}/{rounds}: "
            + ", ".join(f"{n} {1e3 * m['seconds_per_image']:.1f} ms" for n, m in measured[-1].items()),
            file=sys.stderr,
        )
    table = summarize(names, measured, {name: found[name][0] for name in names})
    usable = [row for row in table if row["computes"] != "f32" and row["min_cosine"] is not None]
    fastest = max(usable, key=lambda row: row["over_shipped"])
    return {
        "shapes": [vars(shape) for shape in shapes],
        "kernels": table,
        "fastest_usable_int8": fastest["kernel"],
        "fastest_usable_int8_over_shipped": fastest["over_shipped"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# int8 Linear kernels on {result['model']}'s own Linear shapes, batch {result['batch']}, "
        f"{result['threads']} threads",
        "",
        f"{result['cpu']}; {result['rounds']} interleaved rounds, each kernel in its own process per round.",
        "",
        "| kernel | computes | ms per image (Linear products only) | img/s if nothing else cost anything "
        "| × the shipped kernel | share of MatMulInteger | min cosine to float64 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["kernels"]:
        cosine = "–" if row["min_cosine"] is None else f"{row['min_cosine']:.6f}"
        lines.append(
            f"| {row['kernel']} | {row['computes']} | {row['ms_per_image']:.2f} | {row['linear_only_it_per_s']:.2f} "
            f"| {row['over_shipped']:.2f} | {100 * row['share_of_limit_kernel']:.0f}% | {cosine} |"
        )
    lines += [
        "",
        f"Fastest kernel with a float output and int8 (or narrower) weights: {result['fastest_usable_int8']}, "
        f"{result['fastest_usable_int8_over_shipped']:.2f}× the shipped one (median of per-round ratios). "
        f"Load average before / after: {result['load_before'][0]:.2f} / {result['load_after'][0]:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (a .md table beside it)")
    parser.add_argument("--model", default="vit_base_patch16_224", help="a vitedge model spec (its shapes only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per shape per kernel per round")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    from vitedge.compress.registry import load_model
    from vitedge.targets.limits import linear_shapes

    loaded = load_model(args.model)
    shapes = linear_shapes(loaded.module, loaded.data_config.input_size, batch=args.batch)
    del loaded
    result = on_this_machine(
        lambda: measure(shapes, threads=args.threads, rounds=args.rounds, seconds=args.seconds, batch=args.batch),
        model=args.model,
        threads=args.threads,
        batch=args.batch,
        rounds=args.rounds,
    )
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
