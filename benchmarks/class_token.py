"""What computing the last block for the class token only gains: each default export of one model
written twice (the default, and `--all-tokens`) and timed side by side in one run.

    python benchmarks/class_token.py --out benchmarks/results/class_token_vit_base.json

The model is the transformers ViT-B/16 of benchmarks/peers.py (`ViTConfig()` defaults, random
weights) unless --model names another (a timm name, a folder, a checkpoint). Each timing burst
runs in a fresh process (peers.timed), the two artifacts of a precision are interleaved round by
round, and the ratio trimmed / whole is taken per round; its median is reported with the
per-round values. Beside each pair: the fraction of the model's Linear work the trimmed file
does (targets.limits.linear_shapes of each forward: every Linear product, functional ones too), and the largest logit difference between
the two files on the parity images. Check that nothing else runs first.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from cpu_formats import in_own_process, write_result  # noqa: E402 - beside this script
from peers import make_model, timed  # noqa: E402

from vitedge.core.cpu import on_fastest_cpus, probe_cpu

KINDS = ("onnx:int8-dynamic", "onnx:int8-static", "openvino:int8", "onnx:fp32")


def linear_work(module: Any, input_size: tuple[int, int, int], trim: bool) -> float:
    """Multiply-adds of one image's Linear products, the forward trimmed or whole
    (targets.limits.linear_shapes)."""
    from vitedge.exporter.class_token import trimmed
    from vitedge.targets.limits import linear_shapes

    with trimmed(module, trim, "onnx"):
        shapes = linear_shapes(module, input_size)
    return float(sum(s.rows * s.inputs * s.outputs * s.count for s in shapes))


def work_fraction(module: Any, input_size: tuple[int, int, int]) -> float:
    """The trimmed forward's share of the whole one's Linear multiply-adds."""
    return linear_work(module, input_size, True) / linear_work(module, input_size, False)


def build(loaded: Any, kinds: tuple[str, ...], work: Path, calib_count: int, threads: int) -> list[dict[str, Any]]:
    """Two artifacts per kind (class_token_only on, off), written by export_artifact as the CLI does."""
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.core.manifest import read_manifest
    from vitedge.exporter.export import ExportOptions, export_artifact
    from vitedge.targets.measure import RunnerSpec
    from vitedge.workflows.pipeline import needs_calibration

    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, calib_count)
    rows = []
    for kind in kinds:
        fmt, precision = kind.split(":")
        for trim in (True, False):
            folder = export_artifact(
                loaded,
                to=fmt,
                precision=precision,
                out=work / f"{kind.replace(':', '-')}-{'trimmed' if trim else 'whole'}",
                calibration=calibration if needs_calibration(kind) else None,
                options=ExportOptions(class_token_only=trim),
            )
            tokens = read_manifest(folder)["last_block_tokens"]
            spec = RunnerSpec(f"{kind} last block: {tokens}", "artifact", str(folder), precision, "cpu", threads)
            rows.append({"kind": kind, "trimmed": trim, "tokens": tokens, "open": ("spec", dataclasses.asdict(spec))})
    return rows


def summarize(rows: list[dict[str, Any]], rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    pairs = []
    for kind in dict.fromkeys(row["kind"] for row in rows):
        at = {row["trimmed"]: index for index, row in enumerate(rows) if row["kind"] == kind}
        rates = {trim: [r[index]["images_per_s"] for r in rounds] for trim, index in at.items()}
        ratios = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
        logits = {trim: np.asarray(rounds[0][index]["logits"]) for trim, index in at.items()}
        pairs.append(
            {
                "kind": kind,
                "last_block_tokens": rows[at[True]]["tokens"],
                "trimmed_images_per_s": statistics.median(rates[True]),
                "whole_images_per_s": statistics.median(rates[False]),
                "trimmed_over_whole": statistics.median(ratios),
                "per_round": ratios,
                "max_abs_logit_difference": float(np.abs(logits[True] - logits[False]).max()),
                "computes": rounds[0][at[True]]["execution_precision"],
            }
        )
    return pairs


def markdown(result: dict[str, Any]) -> str:
    unit = "it/s" if result["batch"] == 1 else "img/s"
    work = (
        f"The trimmed file does {100 * result['linear_work_fraction']:.1f}% of the whole model's Linear multiply-adds."
    )
    lines = [
        f"# The last block for the class token only: {result['model']}, batch {result['batch']}, "
        f"{result['threads']} threads",
        "",
        f"{result['cpu']}; {result['rounds']} interleaved rounds, every burst in its own process. " + work,
        "",
        f"| export | computes | last block tokens | trimmed {unit} | whole {unit} | trimmed / whole (median) | per round | max logit difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in result["pairs"]:
        lines.append(
            f"| {pair['kind']} | {pair['computes']} | {pair['last_block_tokens']} | {pair['trimmed_images_per_s']:.2f} | "
            f"{pair['whole_images_per_s']:.2f} | {pair['trimmed_over_whole']:.3f}× | "
            f"{', '.join(f'{r:.3f}' for r in pair['per_round'])} | {pair['max_abs_logit_difference']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (a .md table beside it)")
    parser.add_argument("--model", default=None, help="default: peers.py's transformers ViT-B/16")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help="format:precision of each pair")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row per round")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--parity-samples", type=int, default=8)
    args = parser.parse_args(argv)
    from vitedge.calibration.preprocess import preprocess_batch
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model

    with (
        tempfile.TemporaryDirectory(prefix="vitedge-class-token-") as scratch,
        on_fastest_cpus(args.threads) as pinned,  # as vitedge's own rows are timed
    ):
        work = Path(scratch)
        spec = args.model or str(make_model(work / "hf-vit-base"))
        loaded = load_model(spec)
        size = loaded.data_config.input_size
        fraction = work_fraction(loaded.module, size)
        rows = build(loaded, tuple(args.kinds), work, args.calib_samples, args.threads)
        test = open_source("cifar10")
        np.save(
            work / "inputs.npy", preprocess_batch([test.get(i) for i in range(args.parity_samples)], loaded.data_config)
        )
        del loaded
        rounds = []
        for number in range(args.rounds):
            rounds.append(
                [
                    in_own_process(timed, row["open"], args.threads, args.seconds, str(work / "inputs.npy"), args.batch)
                    for row in rows
                ]
            )
            print(
                f"round {number + 1}/{args.rounds}: "
                + ", ".join(
                    f"{row['open'][1]['name']} {m['images_per_s']:.2f}" for row, m in zip(rows, rounds[-1], strict=True)
                ),
                file=sys.stderr,
            )
    cpu = probe_cpu()
    result = {
        "model": args.model or "transformers ViT-B/16 (ViTConfig defaults, random weights)",
        "threads": args.threads,
        "timed_on": pinned,
        "batch": args.batch,
        "rounds": args.rounds,
        "cpu": cpu.described,
        "linear_work_fraction": fraction,
        "pairs": summarize(rows, rounds),
    }
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
