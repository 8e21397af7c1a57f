"""vitedge's default int8 exports beside the peers' default int8 paths, on one model, in one run.

    python benchmarks/peers.py --out benchmarks/results/peers_vit_base.json

The model is a transformers ViT-B/16 (`ViTConfig()` defaults, random weights: weights do not
change speed) saved with `save_pretrained`, so every tool starts from the same model:
- Optimum, its own CLI: `optimum-cli export onnx`, then `optimum-cli onnxruntime quantize` with
  the flag for this CPU (--avx512_vnni, --avx2 or --arm64). Optimum pins its own transformers,
  so it runs from a virtualenv the script makes beside the output (`--peers-venv`).
- NNCF's documented ViT recipe: the model converted with a batch-1 example input (static
  shape), `nncf.quantize(model, dataset, model_type=TRANSFORMER)` with every other setting
  NNCF's default (`exporter.openvino.quantize_openvino(nncf_defaults=True)`), compiled with
  OpenVINO's own defaults (bf16 float parts where the CPU has native bf16) plus the LATENCY
  hint and thread count of every row.
- PyTorch dynamic int8 with PyTorch's own defaults (one scale per weight tensor; the study's
  DQ; vitedge's `quantize-dynamic` step is per channel), and the fp32 rows (PyTorch eager,
  ONNX, OpenVINO).
- vitedge's defaults: `export --to onnx --precision int8-dynamic`, `int8-static`, and
  `--to openvino --precision int8`, exactly as the CLI makes them; where the CPU computes bf16
  natively, also the opt-in `--to openvino --precision int8-bf16` (and the compressed recipe's).

Batch 1 (or --batch N: every row timed on N images a call and read in images/s; NNCF's recipe is
then converted with a batch-N example input, as its example would be for that batch), --threads
threads. Each timing burst runs in a fresh process, and the rows are
interleaved round by round, so drift on a shared machine hits every row alike. The
headline ratio is taken per round (the fastest vitedge default over the fastest peer) and
its median is reported. Beside the rows: this machine's measured GEMM limits
(`targets.limits`) and each row's share of its limit; a row's Linear-layer limits are measured
every round, beside the rows, from the products its file runs (vitedge's exports compute the
last block for the class token only, the peers' files and PyTorch the whole forward): each
weight in cache, and every weight read once per image (an int8 row's share is of the faster of
ONNX Runtime's and OpenVINO's; where OpenVINO will not run the chain in int8 on this CPU, its
limit is recorded as not measurable and the share is of ONNX Runtime's). Check that nothing
else runs first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from cpu_formats import in_own_process, write_result  # noqa: E402 - beside this script

from vitedge.core.cpu import on_fastest_cpus, probe_cpu
from vitedge.core.precision import bf16_missing
from vitedge.targets.limits import LinearLimit, NotInt8

PEER = "peer"
VITEDGE = "vitedge default"
COMPRESSED = "vitedge compressed"
OPT_IN = "vitedge opt-in"  # a vitedge export the user asks for by name, not a default
REFERENCE = "fp32 reference"
PYTORCH_DQ = "PyTorch dynamic int8 (per tensor, its defaults)"
# The Linear-layer limit with every weight read once per image, through each runtime's int8
# kernels; an int8 row's share is taken of the faster of the two in its round
STREAMED_RUNTIMES = ("int8, weights streamed, onnxruntime", "int8, weights streamed, openvino")
# The compressed recipe timed beside the defaults (`--compressed`, `vitedge compress` step specs):
# half of every block's heads and five eighths of its MLP channels removed, then vitedge's int8
# exports. Its accuracy cost is measured on vitedge-cifar10, where weights are real (the same
# steps + a distillation fine-tune, through the same int8 export: docs/compressed-recipe.md);
# here the weights are random and only the speed is read.
COMPRESSED_RECIPE = ("prune-heads:ratio=0.5", "prune-mlp:ratio=0.625")
COMPRESSED_KINDS = ("onnx:int8-dynamic", "openvino:int8")
# Where the CPU computes bf16 natively and OpenVINO offers it: `--to openvino --precision
# int8-bf16` (the int8 IR, its float parts in bf16), an opt-in row, and the compressed recipe's too.
BF16_KIND = "openvino:int8-bf16"


def optimum_flag(cpu: Any) -> str:
    """Optimum's quantization config for the CPU at hand, as its CLI names them."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "--arm64"
    return "--avx512_vnni" if "AVX512-VNNI" in cpu.isa else "--avx2"


def peers_venv(folder: Path) -> Path:
    """A virtualenv with optimum-onnx (and the transformers it pins), seeing the heavy packages."""
    python = folder / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "optimum-onnx"], check=True)
    return folder / "bin"


def make_model(folder: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.ViTForImageClassification(transformers.ViTConfig()).save_pretrained(folder)
    transformers.ViTImageProcessor().save_pretrained(folder)
    return folder


def optimum_int8(model: Path, work: Path, venv_bin: Path, flag: str) -> Path:
    exported, quantized = work / "optimum-onnx", work / "optimum-int8"
    cli = str(venv_bin / "optimum-cli")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(
        [cli, "export", "onnx", "--model", str(model), "--task", "image-classification", str(exported)], **quiet
    )
    subprocess.run([cli, "onnxruntime", "quantize", "--onnx_model", str(exported), flag, "-o", str(quantized)], **quiet)
    return quantized / "model_quantized.onnx"


def nncf_recipe(loaded: Any, calibration: Any, work: Path, batch: int) -> Path:
    """As NNCF's ViT example does it: convert with an example input (so the shape is static,
    its batch the timed one), `nncf.quantize` with the TRANSFORMER model type, nothing else set."""
    from vitedge.exporter.openvino import convert_openvino, quantize_openvino, save_openvino

    model = convert_openvino(loaded.module, input_size=loaded.data_config.input_size, batch=batch)
    quantized, _ = quantize_openvino(model, calibration, nncf_defaults=True, batch_size=batch)
    return save_openvino(quantized, work / "nncf" / "model.xml", compress_to_fp16=False, metadata={})


def pytorch_dynamic_int8(loaded: Any, work: Path, threads: int) -> Any:
    """`torch.ao.quantization.quantize_dynamic` with PyTorch's defaults (one scale per weight
    tensor), through vitedge's step so it saves and reloads like every PyTorch row."""
    from vitedge.compress.registry import apply_steps
    from vitedge.models import save_checkpoint
    from vitedge.targets.measure import RunnerSpec

    model = apply_steps(loaded, [("quantize-dynamic", {"per_channel": False})])
    path = save_checkpoint(model, work / "rows" / "torch-int8-dynamic-per-tensor.safetensors")
    return RunnerSpec(PYTORCH_DQ, "torch", str(path), precision="int8-dynamic", target="cpu", threads=threads)


def trimmed_artifact(spec: Any) -> bool:
    """Whether the row's artifact computes its last block for the class token only (its
    manifest says so): its Linear-layer limit is then the trimmed forward's."""
    from vitedge.core.manifest import read_manifest

    return spec.kind == "artifact" and read_manifest(Path(spec.path))["last_block_tokens"] != "all"


def build_rows(
    model: Path, work: Path, venv_bin: Path, calib_count: int, threads: int, compressed: tuple[str, ...], batch: int
) -> tuple[list[dict[str, Any]], Any]:
    """Every row as (name, who, how to open it), artifacts written under `work`; and the
    compressed model (its own reference logits and Linear-layer limit)."""
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import apply_steps, load_model, parse_step_spec
    from vitedge.workflows.pipeline import runner_spec

    loaded = load_model(str(model))
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, calib_count)
    cpu = probe_cpu()
    bf16 = bf16_missing("openvino", cpu) is None  # what vitedge itself would build and run here
    rows = []
    for who, kind in (
        (REFERENCE, "torch:fp32"),
        (REFERENCE, "onnx:fp32"),
        (REFERENCE, "openvino:fp32"),
        (VITEDGE, "onnx:int8-dynamic"),
        (VITEDGE, "onnx:int8-static"),
        (VITEDGE, "openvino:int8"),
        *([(OPT_IN, BF16_KIND)] if bf16 else []),
    ):
        spec = runner_spec(loaded, kind, work / "rows", threads=threads, target="cpu", calibration=calibration)
        rows.append({"name": spec.name, "who": who, "open": ("spec", vars(spec)), "trimmed": trimmed_artifact(spec)})
    rows.append({"name": PYTORCH_DQ, "who": PEER, "open": ("spec", vars(pytorch_dynamic_int8(loaded, work, threads)))})
    pruned = apply_steps(loaded, [parse_step_spec(step) for step in compressed])
    for kind in COMPRESSED_KINDS + ((BF16_KIND,) if bf16 else ()):
        spec = runner_spec(pruned, kind, work / "compressed", threads=threads, target="cpu", calibration=calibration)
        name = f"{spec.name}, {' + '.join(compressed)}"
        rows.append({"name": name, "who": COMPRESSED, "open": ("spec", vars(spec)), "trimmed": trimmed_artifact(spec)})
    flag = optimum_flag(cpu)
    rows.append(
        {
            "name": f"Optimum CLI quantize {flag}",
            "who": PEER,
            "open": ("onnx", str(optimum_int8(model, work, venv_bin, flag)), "int8-dynamic"),
        }
    )
    rows.append(
        {
            "name": "NNCF ViT recipe (TRANSFORMER, defaults)",
            "who": PEER,
            "open": ("openvino-defaults", str(nncf_recipe(loaded, calibration, work, batch)), "int8"),
        }
    )
    return rows, pruned


def row_shapes(loaded: Any, trim: bool, batch: int) -> Any:
    """The Linear products the model's rows run: the whole forward (PyTorch and the peers'
    files), or the last block for the class token only, as vitedge's default exports write it."""
    from vitedge.exporter.class_token import trimmed
    from vitedge.targets.limits import linear_shapes

    with trimmed(loaded.module, trim, "onnx"):
        return linear_shapes(loaded.module, loaded.data_config.input_size, batch=batch)


def openvino_defaults(path: str, precision: str, threads: int) -> Any:
    """What NNCF's example compiles: `core.compile_model(model, "CPU")` with OpenVINO's own
    defaults (its inference precision is bf16 on CPUs with native bf16), held to LATENCY and
    the row's thread count like every row. The runner records the precision it chose."""
    import openvino as ov

    from vitedge.targets.openvino import compiled_runner

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    return compiled_runner(compiled, precision=precision, device="cpu", threads=threads, name=path)


def timed(opener: tuple, threads: int, seconds: float, inputs: str, batch: int) -> dict[str, Any]:
    """In a fresh process: open the row, its logits on the parity images, then timing at `batch`
    (the parity images, repeated if there are fewer)."""
    from vitedge.targets.measure import RunnerSpec, batched_logits, open_spec, time_runner, timing_config
    from vitedge.targets.onnxruntime import open_onnx
    from vitedge.targets.openvino import open_openvino

    if opener[0] == "spec":
        runner = open_spec(RunnerSpec(**opener[1]))
    elif opener[0] == "onnx":
        runner = open_onnx(Path(opener[1]), precision=opener[2], threads=threads)
    elif opener[0] == "openvino-defaults":
        runner = openvino_defaults(opener[1], opener[2], threads)
    else:
        runner = open_openvino(Path(opener[1]), precision=opener[2], threads=threads)
    images = np.load(inputs)
    logits = batched_logits(runner, images, batch_size=batch)
    timed_batch = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
    timing = time_runner(runner, timed_batch, runs=10, min_seconds=seconds)
    config = timing_config(runner, batch)
    return {
        "images_per_s": timing.images_per_s,
        "p50_ms": timing.p50_ms,
        "config": config,
        "execution_precision": runner.info.execution_precision,
        "kernels": config.get("kernels"),  # products per kernel (OpenVINO) or operator (ONNX Runtime) that ran
        "logits": logits.tolist(),
    }


@dataclass(frozen=True)
class Scale:
    """What a row is compared with: its own model's fp32 logits, forward FLOPs and
    Linear-layer limits (the compressed rows run a smaller model than the rest)."""

    reference: np.ndarray
    flops: float
    # per round: whole (False) or trimmed (True) forward → kind → LinearLimit, or its NotInt8 refusal
    linear: list[dict[bool, dict[str, Any]]]


def _shares(
    rates: list[float], linear: list[dict[bool, dict[str, Any]]], trim: bool, *kinds: str
) -> list[float | None]:
    """Per round: a row's rate over the fastest of its limits of `kinds` measured in that round
    (a refused one, NotInt8, is left out); None where every one was refused."""
    shares: list[float | None] = []
    for rate, each in zip(rates, linear, strict=True):
        measured = [each[trim][kind].it_per_s for kind in kinds if not isinstance(each[trim][kind], NotInt8)]
        shares.append(rate / max(measured) if measured else None)
    return shares


def _median(values: list[float | None]) -> float | None:
    """The median of the rounds that have a value; None if none has."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(rows: list[dict[str, Any]], rounds: list[list[dict[str, Any]]], limits: dict, scales: dict) -> dict:
    """The table: each row's median over rounds, its share of the square-GEMM limit of its
    kind, and the median over rounds of its share of its model's own Linear-layer limit
    measured in the same round (int8 rows: int8, the rest: f32; int8 rows also the int8 limit
    with every weight read once per image)."""
    from vitedge.targets.limits import limit_kind
    from vitedge.workflows.parity import compare_logits  # the parity check's own cosine

    table = []
    for index, row in enumerate(rows):
        rates = [r[index]["images_per_s"] for r in rounds]
        first = rounds[0][index]
        limit = limits[limit_kind(first["execution_precision"] or "f32")]
        median = statistics.median(rates)
        scale = scales[row["who"] == COMPRESSED]
        linear_kind = "int8" if limit.kind == "int8" else "f32"
        trim = bool(row.get("trimmed"))
        linear_shares = _shares(rates, scale.linear, trim, linear_kind)
        streamed_shares = _shares(rates, scale.linear, trim, *STREAMED_RUNTIMES) if linear_kind == "int8" else []
        table.append(
            {
                "name": row["name"],
                "who": row["who"],
                "images_per_s": median,
                "images_per_s_rounds": rates,
                "execution_precision": first["execution_precision"],
                "config": first["config"],
                "kernels": first.get("kernels"),
                "cosine_vs_pytorch_fp32": compare_logits(
                    scale.reference, np.asarray(first["logits"]), precision="fp32"
                ).cosine_mean,
                "share_of_limit": median * scale.flops / limit.ops_per_s,
                "limit": limit.kind,
                "linear_limit_of": "trimmed forward" if trim else "whole forward",
                "share_of_linear_limit": statistics.median(linear_shares),
                "share_of_linear_limit_rounds": linear_shares,
                "share_of_streamed_linear_limit": _median(streamed_shares),
                "share_of_streamed_linear_limit_rounds": streamed_shares,
            }
        )

    def ratios(who: str) -> list[float]:
        """Per round: the fastest row of `who` over the fastest peer row."""
        return [
            max(r[i]["images_per_s"] for i, row in enumerate(rows) if row["who"] == who)
            / max(r[i]["images_per_s"] for i, row in enumerate(rows) if row["who"] == PEER)
            for r in rounds
        ]

    per_round, compressed = ratios(VITEDGE), ratios(COMPRESSED)
    opt_in = ratios(OPT_IN) if any(row["who"] == OPT_IN for row in rows) else []
    return {
        "rows": table,
        "fastest_vitedge_over_fastest_peer": statistics.median(per_round),
        "per_round": per_round,
        "fastest_compressed_over_fastest_peer": statistics.median(compressed),
        "compressed_per_round": compressed,
        "fastest_opt_in_over_fastest_peer": statistics.median(opt_in) if opt_in else None,
        "opt_in_per_round": opt_in,
    }


def torch_logits(module: Any, inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module.eval()(torch.from_numpy(inputs)).numpy()


def limits_json(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One Linear-layer limit measured every round: its median and per-round rates, by kind. A
    round whose runtime refused the limit (NotInt8) has null there, the medians are of the
    rounds measured (null if none was), and the refusal is kept once, as "unavailable"."""
    shapes = [vars(x) for x in next(v for v in rounds[0].values() if not isinstance(v, NotInt8)).shapes]
    table: dict[str, Any] = {}
    for kind in rounds[0]:
        each = [r[kind] for r in rounds]
        measured = [x for x in each if not isinstance(x, NotInt8)]
        refused = [x for x in each if isinstance(x, NotInt8)]
        table[kind] = {
            "it_per_s": statistics.median(x.it_per_s for x in measured) if measured else None,
            "it_per_s_rounds": [None if isinstance(x, NotInt8) else x.it_per_s for x in each],
            "giga": statistics.median(x.giga for x in measured) if measured else None,
            "runtime": (measured or refused)[0].runtime,
            "shapes": shapes,
            **({"unavailable": str(refused[0])} if refused else {}),
        }
    return table


def limit_or_refusal(job: Callable[..., LinearLimit], *args: Any) -> LinearLimit | NotInt8:
    """`job(*args)` in its own process, or its NotInt8 refusal as the result: the one refusal a
    limit may make is recorded and the run goes on; any other error still ends the benchmark."""
    try:
        return in_own_process(job, *args)
    except NotInt8 as refusal:
        return refusal


def linear_limits(shapes: dict[bool, Any], threads: int, batch: int) -> dict[bool, dict[str, Any]]:
    """A model's Linear-layer limits, whole and trimmed forward: int8 and f32 each weight in
    cache, and int8 with every weight read once per image through ONNX Runtime's and
    OpenVINO's kernels (`STREAMED_RUNTIMES`), each in its own process like the rows
    (measured every round, so drift hits limit and rows alike). OpenVINO's is its NotInt8
    refusal instead where it will not run the chain in int8 on this CPU."""
    from vitedge.targets.limits import linear_limit, openvino_streamed_linear_limit, streamed_linear_limit

    limits: dict[bool, dict[str, Any]] = {}
    for trim in shapes:
        limits[trim] = {
            kind: in_own_process(partial(linear_limit, batch=batch), shapes[trim], threads, kind)
            for kind in ("int8", "f32")
        }
        streamed = (
            in_own_process(partial(streamed_linear_limit, batch=batch), shapes[trim], threads, "int8"),
            limit_or_refusal(partial(openvino_streamed_linear_limit, batch=batch), shapes[trim], threads),
        )
        limits[trim].update(zip(STREAMED_RUNTIMES, streamed, strict=True))
    return limits


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# vitedge defaults vs peers: {result['model']}, batch {result['batch']}, {result['threads']} threads",
        "",
        f"{result['cpu']}; {result['rounds']} interleaved rounds, every burst in its own process.",
        "",
        f"| path | who | {'it/s' if result['batch'] == 1 else 'img/s'} (median) | computes | share of the Linear-layer limit "
        "| share of the int8 limit, weights streamed (faster runtime) | share of the square-GEMM limit "
        "| cosine vs its model in PyTorch fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def streamed_share(row: dict[str, Any]) -> str:
        share = row.get("share_of_streamed_linear_limit")
        return "–" if share is None else f"{100 * share:.0f}%"

    for row in result["rows"]:
        kind = "int8" if row["limit"] == "int8" else "f32"
        lines.append(
            f"| {row['name']} | {row['who']} | {row['images_per_s']:.1f} | {row['execution_precision']} | "
            f"{100 * row['share_of_linear_limit']:.0f}% of {kind}, {row['linear_limit_of']} "
            f"| {streamed_share(row)} "
            f"| {100 * row['share_of_limit']:.0f}% of {row['limit']} | {row['cosine_vs_pytorch_fp32']:.5f} |"
        )
    limits = ", ".join(f"{k} {v['giga']:.0f} G/s" for k, v in result["limits"].items())

    def load(averages: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in averages)

    def linear(limits: dict[str, Any]) -> str:
        return ", ".join(
            f"{k} not measurable"
            if v["it_per_s"] is None
            else f"{k} {v['it_per_s']:.1f} img/s ({v['giga']:.0f} G/s; per round "
            f"{'/'.join('–' if x is None else f'{x:.1f}' for x in v['it_per_s_rounds'])})"
            for k, v in limits.items()
        )

    sections = (
        "linear_limits",
        "trimmed_linear_limits",
        "compressed_linear_limits",
        "compressed_trimmed_linear_limits",
    )
    refusals = list(
        dict.fromkeys(v["unavailable"] for key in sections for v in result[key].values() if "unavailable" in v)
    )

    lines += [
        "",
        f"Fastest vitedge default over fastest peer: {result['fastest_vitedge_over_fastest_peer']:.2f}× "
        f"(median of per-round ratios {', '.join(f'{r:.2f}' for r in result['per_round'])}).",
        f"Fastest vitedge compressed row ({' + '.join(result['compressed_recipe'])} + int8) over fastest peer: "
        f"{result['fastest_compressed_over_fastest_peer']:.2f}× "
        f"(per round {', '.join(f'{r:.2f}' for r in result['compressed_per_round'])}).",
        *(
            [
                f"Fastest vitedge opt-in row (`--precision int8-bf16`: the int8 IR, its float parts in bf16) over "
                f"fastest peer: {result['fastest_opt_in_over_fastest_peer']:.2f}× "
                f"(per round {', '.join(f'{r:.2f}' for r in result['opt_in_per_round'])})."
            ]
            if result.get("opt_in_per_round")
            else []
        ),
        f"Linear-layer limits, the speed if nothing but the model's Linear products cost anything "
        f"(targets.limits.linear_limit: each shape timed alone, its weight in cache, summed; "
        f"'int8, weights streamed': streamed_linear_limit and openvino_streamed_linear_limit, every product "
        f"in one call, each with its own weight, as a whole model reads them, through each runtime's int8 kernels; "
        f"a row's streamed share is of the faster; measured "
        f"every round after the rows, a row's share is the median of its per-round shares): "
        f"whole forward {linear(result['linear_limits'])}, "
        f"last block for the class token only (vitedge's exports) {linear(result['trimmed_linear_limits'])}; "
        f"the compressed model's own: whole {linear(result['compressed_linear_limits'])}, "
        f"trimmed {linear(result['compressed_trimmed_linear_limits'])}.",
        *(
            [
                f"Streamed limits not measurable here, so a row's streamed share is of the faster of those measured "
                f"in its round (– where none was): {'; '.join(refusals)}."
            ]
            if refusals
            else []
        ),
        f"GEMM limits ({result['limits_note']}): {limits}.",
        *(
            [
                f"Load average (1, 5, 15 min) before / after the rounds: {load(result['load_before'])} / {load(result['load_after'])}."
            ]
            if result.get("load_after")
            else []
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (a .md table beside it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row per round")
    parser.add_argument("--batch", type=int, default=1, help="images per timed call (1: latency)")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--parity-samples", type=int, default=8)
    parser.add_argument("--peers-venv", type=Path, default=None, help="default: .peers-venv beside --out")
    parser.add_argument(
        "--compressed",
        nargs="+",
        default=list(COMPRESSED_RECIPE),
        help="the compressed rows' steps, as `vitedge compress --step` specs",
    )
    args = parser.parse_args(argv)
    from vitedge.calibration.preprocess import preprocess_batch
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model
    from vitedge.targets.limits import forward_flops, gemm_limits

    venv_bin = peers_venv(args.peers_venv or args.out.parent / ".peers-venv")
    # every row, limit and build on the fastest CPUs where they differ (each row's own process
    # inherits it), as vitedge's own rows are timed
    with (
        tempfile.TemporaryDirectory(prefix="vitedge-peers-") as scratch,
        on_fastest_cpus(args.threads) as pinned,
    ):
        work = Path(scratch)
        model = make_model(work / "hf-vit-base")
        rows, pruned = build_rows(
            model, work, venv_bin, args.calib_samples, args.threads, tuple(args.compressed), args.batch
        )
        loaded = load_model(str(model))
        test = open_source("cifar10")
        inputs = preprocess_batch([test.get(i) for i in range(args.parity_samples)], loaded.data_config)
        np.save(work / "inputs.npy", inputs)
        sizes = {
            compressed: (
                forward_flops(each.module, each.data_config.input_size),
                {trim: row_shapes(each, trim, args.batch) for trim in (False, True)},
                # the compressed rows' reference: their own model in PyTorch fp32
                None if not compressed else torch_logits(each.module, inputs),
            )
            for compressed, each in ((False, loaded), (True, pruned))
        }
        del loaded, pruned
        load_before = os.getloadavg()  # after the builds (this script's own work), before the timed rounds
        rounds, linear = [], []
        for number in range(args.rounds):
            measured = [
                in_own_process(timed, row["open"], args.threads, args.seconds, str(work / "inputs.npy"), args.batch)
                for row in rows
            ]
            rounds.append(measured)
            linear.append(
                {
                    compressed: linear_limits(shapes, args.threads, args.batch)
                    for compressed, (_, shapes, _) in sizes.items()
                }
            )
            print(
                f"round {number + 1}/{args.rounds}: "
                + ", ".join(f"{r['name']} {m['images_per_s']:.1f}" for r, m in zip(rows, measured, strict=True)),
                file=sys.stderr,
            )
        limits = gemm_limits(args.threads)
    scales = {
        compressed: Scale(
            np.asarray(rounds[0][0]["logits"]) if reference is None else reference,
            flops,
            [each[compressed] for each in linear],
        )
        for compressed, (flops, _, reference) in sizes.items()
    }
    cpu = probe_cpu()
    result = {
        "model": "transformers ViT-B/16 (ViTConfig defaults, random weights)",
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "compressed_recipe": list(args.compressed),
        "cpu": cpu.described,
        "timed_on": pinned,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "limits": {k: {"giga": v.giga, "size": v.size, "runtime": v.runtime} for k, v in limits.items()},
        "limits_note": "square GEMMs, targets.limits",
        "linear_limits": limits_json([each[False][False] for each in linear]),
        "trimmed_linear_limits": limits_json([each[False][True] for each in linear]),
        "compressed_linear_limits": limits_json([each[True][False] for each in linear]),
        "compressed_trimmed_linear_limits": limits_json([each[True][True] for each in linear]),
        **summarize(rows, rounds, limits, scales),
    }
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
