"""Does structured pruning speed up ONNX Runtime at batch 1? It depends on the model's size.

Removing 25% of heads and MLP channels removes 25% of the block compute, so the ideal speedup
is 1/0.75 = 1.33×. What reaches the runtime is less: patch embedding, LayerNorms, residual
adds, the head and every kernel launch cost the same after pruning. For each model this
prunes 25% and 50% (random weights unless the model is a checkpoint: speed depends on shapes
only), exports fp32 ONNX, and times each pruned model paired with its unpruned one (bursts
alternate within a round, the speedup is the median over rounds of the per-round ratios). A
line through time/time_unpruned against the kept fraction (1, 0.75, 0.5) gives at kept = 0 the
share of the batch-1 time that pruning cannot touch.

    python benchmarks/prune_scale.py --out benchmarks/prune_scale.json
    python benchmarks/prune_scale.py --models vitedge-cifar10 --rounds 2 --seconds 0.05 --out /tmp/p.json   # ~20 s

Writes JSON and a markdown table beside it (atomically). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitedge.core.cpu import probe_cpu
from vitedge.core.io import write_text_atomic
from vitedge.targets.base import Runner
from vitedge.targets.paired import Pair, paired_rounds, pooled_reference_s

RATIOS = (0.25, 0.5)
DEFAULT_MODELS = ("vitedge-cifar10", "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def open_pruned_runners(
    spec: str, folder: Path, threads: int
) -> tuple[dict[float, Runner], dict[float, int], tuple[int, ...]]:
    """ONNX Runtime runners of the model pruned by 0 and by each of RATIOS (fp32 artifacts as
    `vitedge export` writes them), and the weights each model stores."""
    from vitedge.compress.registry import apply_steps, load_model
    from vitedge.exporter.export import export_artifact
    from vitedge.models import count_weights
    from vitedge.targets.runners import open_artifact

    base = load_model(spec)
    runners, weights = {}, {}
    for ratio in (0.0, *RATIOS):
        loaded = apply_steps(base, [("prune-structured", {"ratio": ratio})]) if ratio else base
        out = folder / f"{spec.replace('/', '_')}-{ratio}"
        runners[ratio] = open_artifact(export_artifact(loaded, to="onnx", precision="fp32", out=out), threads=threads)
        weights[ratio] = count_weights(loaded.module)
    return runners, weights, tuple(base.data_config.input_size)


def time_model(runners: dict[float, Runner], image: np.ndarray, rounds: int, seconds: float) -> dict[str, object]:
    """Each pruned model paired with the unpruned one in every round; the untouched share
    is the intercept at kept fraction 0 of the line through relative time against kept."""
    pairs = [Pair(str(ratio), runners[0.0], runners[ratio], image) for ratio in RATIOS]
    timed = paired_rounds(pairs, rounds=rounds, seconds=seconds)
    speedups = {ratio: timed[str(ratio)].ratio for ratio in RATIOS}
    kept = np.array([1.0, *(1.0 - ratio for ratio in RATIOS)])
    relative_time = np.array([1.0, *(1.0 / speedups[ratio] for ratio in RATIOS)])
    _, untouched = np.polyfit(kept, relative_time, 1)
    return {
        "unpruned_ms": 1000.0 * pooled_reference_s(timed.values()),
        "speedup": {str(ratio): speedups[ratio] for ratio in RATIOS},
        "round_ratios": {name: list(timing.round_ratios) for name, timing in timed.items()},
        "untouched_share": float(untouched),
    }


def markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        "# Structured pruning at batch 1: ONNX Runtime fp32 speedup by model size",
        "",
        f"{meta['cpu']}, {meta['threads']} threads, onnxruntime {meta['onnxruntime']}; batch 1; speedup over the unpruned model, median of {meta['rounds']} paired rounds. "
        "Untouched share: the part of the unpruned batch-1 time that pruning does not shrink (line fit through kept fraction 1, 0.75, 0.5; "
        "below 0 when the pruned model gains more than its share, e.g. smaller weights staying in cache). "
        "Heads are removed in whole numbers per block, so the weights kept differ from 75% / 50% (a 3-head model loses 1 of 3). "
        "Ideal for 25%: 1.33×; reaching 1.25× needs an untouched share of at most 0.20.",
        "",
        "| model | weights (M) | unpruned ms | 25% pruned (weights kept) | 50% pruned (weights kept) | untouched share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        kept = {ratio: row["weights_pruned_m"][ratio] / row["weights_m"] for ratio in ("0.25", "0.5")}
        lines.append(
            f"| {row['model']} | {row['weights_m']:.1f} | {row['unpruned_ms']:.2f} | {row['speedup']['0.25']:.2f}× ({kept['0.25']:.0%}) | {row['speedup']['0.5']:.2f}× ({kept['0.5']:.0%}) | {row['untouched_share']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON output; the markdown goes beside it (.md)")
    parser.add_argument(
        "--models",
        type=lambda text: tuple(text.split(",")),
        default=DEFAULT_MODELS,
        help="model specs, comma-separated",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="timing seconds per burst")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.models:
            runners, weights, input_size = open_pruned_runners(spec, Path(scratch), args.threads)
            image = np.random.default_rng(0).standard_normal((1, *input_size)).astype(np.float32)
            row = {
                "model": spec,
                "weights_m": weights[0.0] / 1e6,
                "weights_pruned_m": {str(r): weights[r] / 1e6 for r in RATIOS},
            }
            row.update(time_model(runners, image, args.rounds, args.seconds))
            rows.append(row)
            log(
                f"{spec}: 25% {row['speedup']['0.25']:.2f}×, 50% {row['speedup']['0.5']:.2f}×, untouched share {row['untouched_share']:.2f}"
            )
    meta = {
        "cpu": probe_cpu().model,
        "cores": os.cpu_count(),
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
    write_text_atomic(args.out, json.dumps({"rows": rows, **meta}, indent=2))
    write_text_atomic(args.out.with_suffix(".md"), markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
