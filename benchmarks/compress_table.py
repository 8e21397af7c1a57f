"""The compression acceptance table: one row per technique on a trained model (default
`vitedge-cifar10`) with CIFAR-10 test top-1, parameters, saved size, and it/s in PyTorch,
ONNX Runtime and OpenVINO (batch 1, plus a larger batch), with the short recovery
fine-tunes, and the issue's acceptance checks computed from the rows.

    python benchmarks/compress_table.py --out benchmarks/compress_table.json          # the real run
    python benchmarks/compress_table.py --quick --out /tmp/compress_quick.json        # tiny random model, ~1 min
    # the pruning and token-merging acceptance rows, with a longer recovery fine-tune done by
    # `vitedge compress vitedge-cifar10 --step prune-structured:ratio=0.25 --step distill:epochs=3,lr=0.0005 --data cifar10:train --out pruned.safetensors`
    python benchmarks/compress_table.py --out benchmarks/compress_acceptance.json --groups prune-structured,tokens \
        --merge-r 9,10x4,12x3 --recovered pruned.safetensors --rounds 15 --seconds 0.3

Rows: fp32 baseline; dynamic int8 (PyTorch; ORT dynamic int8 of the fp32 ONNX), fp16, bf16;
SVD low-rank (+ fine-tune); Nyström for each m before/after a fine-tune; unstructured
magnitude / Taylor pruning (dense: no speedup expected); structured pruning of 25% heads + MLP
channels before/after a distillation fine-tune; ToMe merging for each r (all blocks, or RxK: the first K) and attention-score
dropping (training-free); a half-width student trained with and without distillation; and
the chain prune → distill → int8. Fine-tunes distil from the uncompressed model. Every
number comes from the product's own functions: artifacts from `export_artifact` (what
`vitedge export` writes), top-1 through the runners, weights by `models.count_weights`.

Timing is paired (`targets.paired.paired_rounds`): in every round each (row, runtime, batch) is timed right after the
baseline's runner for the same runtime and batch (warm-up, then calls for --seconds each, a
short pause first so the previous runtime's spinning threads go idle). A row's speedup is
the median over rounds of its pair's ratio of median call times, so drift on a shared
machine cancels within a pair; it/s is from the median of its bursts' median call times. Threads are explicit.
Do not trust figures taken while another process uses a core. --groups runs a subset.
Writes JSON (rows, checks, settings, machine, versions) and a markdown table beside it,
atomically, and prints the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compress_table_report import checks, markdown  # noqa: E402 - beside this script

from vitedge.compress.step import StepData
from vitedge.core.cpu import probe_cpu
from vitedge.core.io import write_text_atomic
from vitedge.targets.base import Runner
from vitedge.targets.measure import batched_logits, disk_size_mb, top_k_accuracy
from vitedge.targets.paired import Pair, paired_rounds, pooled_reference_s
from vitedge.targets.torch import open_torch


@dataclass(frozen=True)
class Settings:
    model: str = "vitedge-cifar10"
    threads: int = 2
    test_count: int = 10000
    train_count: int = 50000
    finetune_epochs: int = 2
    finetune_lr: float = 2e-4
    student_epochs: int = 10
    student_width: float = 0.5
    landmarks: tuple[int, ...] = (4, 8, 16, 32)
    merge_r: tuple[str, ...] = ("4", "8", "12x3")  # r, or RxK: r in the first K blocks only
    drop_r: tuple[int, ...] = (6,)
    lowrank_energy: float = 0.9
    batches: tuple[int, ...] = (1, 32)
    seconds: float = 1.0
    rounds: int = 5
    groups: tuple[str, ...] = ()  # empty: every group
    recovered: str = ""  # a pruned + fine-tuned checkpoint to use instead of fine-tuning here
    quick: bool = False


QUICK = Settings(
    model="tiny-random",
    test_count=200,
    train_count=256,
    finetune_epochs=1,
    student_epochs=1,
    landmarks=(4, 8),
    merge_r=("4", "8x1"),
    drop_r=(4,),
    batches=(1, 8),
    seconds=0.02,
    rounds=1,
    quick=True,
)


@dataclass
class Variant:
    """One row: the torch model, and the fp32 model its ONNX/OpenVINO files come from."""

    name: str
    group: str
    loaded: Any  # LoadedModel
    export_from: Any | None  # LoadedModel exported to ONNX (None: no ONNX/OpenVINO row)
    onnx_precision: str = "fp32"  # "int8-dynamic": ORT dynamic int8 of the export, and no OpenVINO row
    runners: dict[str, Runner] | None = None
    row: dict[str, Any] | None = None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_model(settings: Settings):  # noqa: ANN201 - LoadedModel
    from vitedge.compress.registry import load_model

    if not settings.quick:
        return load_model(settings.model)
    from vitedge.compress.train import tiny_cifar_vit

    return dataclasses.replace(tiny_cifar_vit(0), spec="tiny-random")


def slug_of(name: str) -> str:
    """A row name as a file name (checkpoints and artifacts in --work)."""
    return name.replace(" ", "_").replace("/", "_").replace("%", "pct").replace("+", "_")


def top1(runner: Runner, test: StepData) -> float:
    """Test top-1 through a runner, as `vitedge eval` and `vitedge bench` compute it."""
    return top_k_accuracy(batched_logits(runner, test[0][:].numpy(), batch_size=500), test[1].numpy()).top1


def export_runners(
    variant: Variant, probe: np.ndarray, folder: Path, settings: Settings, row: dict[str, Any]
) -> dict[str, Runner]:
    """The row's ONNX (and, for fp32, OpenVINO) artifacts written by `export_artifact` as
    `vitedge export` writes them, opened by `open_artifact` ("runtime/batch" -> runner), with
    their parity against the PyTorch model they were exported from recorded in `row`.
    OpenVINO gets one compiled model per batch size: one dynamic-shape compile alternating
    between batch sizes would time its shape changes too."""
    from vitedge.exporter.export import export_artifact
    from vitedge.targets.runners import open_artifact

    source = variant.export_from
    slug = slug_of(variant.name)
    formats = [("onnx", variant.onnx_precision)] + ([("openvino", "fp32")] if variant.onnx_precision == "fp32" else [])
    reference = open_torch(source.module, threads=settings.threads)(probe)
    runners = {}
    for to, precision in formats:
        out = export_artifact(source, to=to, precision=precision, out=folder / f"{slug}-{to}-{precision}", force=True)
        if to == "openvino":
            opened = {batch: open_artifact(out, threads=settings.threads) for batch in settings.batches}
        else:
            opened = dict.fromkeys(settings.batches, open_artifact(out, threads=settings.threads))
            row["onnx_mb"] = disk_size_mb(out)
        row[f"{to}_max_abs_diff"] = float(np.abs(opened[settings.batches[0]](probe) - reference).max())
        runners.update({f"{to}/{batch}": runner for batch, runner in opened.items()})
    return runners


def prepare(variant: Variant, test: StepData, folder: Path, settings: Settings) -> None:
    """Accuracy, weights, size, exports, parity, and the runners to time later."""
    from vitedge.models import count_weights, save_checkpoint

    began = time.perf_counter()
    loaded = variant.loaded
    checkpoint = save_checkpoint(loaded, folder / f"{slug_of(variant.name)}.safetensors")
    torch_runner = open_torch(loaded.module, threads=settings.threads)
    row: dict[str, Any] = {
        "name": variant.name,
        "group": variant.group,
        "steps": [{"name": r["name"], "options": r["options"]} for r in loaded.steps],
        "top1": top1(torch_runner, test),
        "params": count_weights(loaded.module),
        "mb": checkpoint.stat().st_size / 1e6,
    }
    sparsity = [r["structure"].get("sparsity") for r in loaded.steps if "sparsity" in r.get("structure", {})]
    if sparsity:
        row["sparsity"] = sparsity[-1]
    variant.runners = {f"torch/{batch}": torch_runner for batch in settings.batches}
    if variant.export_from is not None:
        variant.runners.update(export_runners(variant, test[0][:32].numpy(), folder, settings, row))
    variant.row = row
    log(
        f"{variant.name}: top-1 {row['top1']:.2f}%, {row['params']:,} weights, {row['mb']:.2f} MB ({time.perf_counter() - began:.0f} s)"
    )


def timing_pairs(variants: list[Variant], inputs: dict[int, np.ndarray]) -> list[Pair]:
    """Every (variant, runtime, batch) paired with the baseline's runner for the same runtime
    and batch; a baseline runner no row is compared with is paired with itself, so that it
    still has an it/s. Pair names are "index:runtime/batch"."""
    base = variants[0].runners or {}

    def batch_of(key: str) -> np.ndarray:
        return inputs[int(key.split("/")[1])]

    compared = {key for variant in variants[1:] for key in variant.runners or {}}
    pairs = [Pair(f"0:{key}", runner, runner, batch_of(key)) for key, runner in base.items() if key not in compared]
    for index, variant in enumerate(variants[1:], start=1):
        for key, runner in (variant.runners or {}).items():
            pairs.append(Pair(f"{index}:{key}", base[key], runner, batch_of(key)))
    return pairs


def time_all(variants: list[Variant], settings: Settings, image_shape: tuple[int, ...]) -> None:
    """Paired rounds (targets.paired), then each row's img/s per runtime and batch, its speedup
    over the baseline, and its best export's batch-1 it/s."""
    rng = np.random.default_rng(0)
    inputs = {batch: rng.standard_normal((batch, *image_shape)).astype(np.float32) for batch in settings.batches}
    timed = paired_rounds(
        timing_pairs(variants, inputs),
        rounds=settings.rounds,
        seconds=settings.seconds,
        on_round=lambda done: log(f"timing round {done}/{settings.rounds} done"),
    )
    for index, variant in enumerate(variants):
        for key in variant.runners or {}:
            runtime, batch = key.split("/")
            if index:
                median, ratio = timed[f"{index}:{key}"].median_s, timed[f"{index}:{key}"].ratio
                variant.row.setdefault("speedup", {}).setdefault(runtime, {})[batch] = ratio
            else:
                median = pooled_reference_s(timing for name, timing in timed.items() if name.split(":", 1)[1] == key)
            variant.row.setdefault("images_per_s", {}).setdefault(runtime, {})[batch] = int(batch) / median
        per_runtime = variant.row.get("images_per_s", {})
        variant.row["it_per_s_torch"] = per_runtime.get("torch", {}).get("1")
        exported = {
            name: per_runtime[name]["1"]
            for name in ("onnx", "openvino")
            if name in per_runtime and "1" in per_runtime[name]
        }
        if exported:
            best = max(exported, key=exported.get)
            variant.row["it_per_s_export"], variant.row["export_runtime"] = exported[best], best


def build_variants(settings: Settings, base, train) -> list[Variant]:  # noqa: ANN001 - LoadedModel, StepData
    from vitedge.compress.distill import DistillConfig, distill, make_student
    from vitedge.compress.registry import apply_step, apply_steps, load_model
    from vitedge.compress.train import TrainConfig
    from vitedge.compress.train import train as train_loop

    def chain(*specs: tuple[str, dict[str, Any]], start=None):  # noqa: ANN001, ANN202 - LoadedModel
        """Steps after `start`, any distill step learning from the uncompressed model."""
        loaded = start or base
        for name, options in specs:
            loaded = apply_step(loaded, name, options, data=train, teacher=base.module)
        return loaded

    def want(group: str) -> bool:
        return not settings.groups or group in settings.groups

    finetune = ("distill", {"epochs": settings.finetune_epochs, "lr": settings.finetune_lr})
    variants = [Variant("fp32 baseline", "baseline", base, base)]
    if want("quantize"):
        variants.append(
            Variant(
                "dynamic int8",
                "quantize",
                apply_steps(base, [("quantize-dynamic", {})]),
                base,
                onnx_precision="int8-dynamic",
            )
        )
        variants.append(Variant("fp16", "quantize", apply_steps(base, [("fp16", {})]), None))
        variants.append(Variant("bf16", "quantize", apply_steps(base, [("bf16", {})]), None))

    if want("lowrank"):
        lowrank = apply_steps(base, [("lowrank", {"energy": settings.lowrank_energy})])
        variants.append(Variant(f"low-rank energy {settings.lowrank_energy}", "lowrank", lowrank, lowrank))
        tuned = chain(finetune, start=lowrank)
        variants.append(Variant(f"low-rank energy {settings.lowrank_energy} + fine-tune", "lowrank", tuned, tuned))

    for m in settings.landmarks if want("nystrom") else ():
        nystrom = apply_steps(base, [("nystrom", {"landmarks": m})])
        variants.append(Variant(f"Nyström m={m}", "nystrom", nystrom, nystrom))
        tuned = chain(finetune, start=nystrom)
        variants.append(Variant(f"Nyström m={m} + fine-tune", "nystrom", tuned, tuned))

    for name, options in (
        (("prune-magnitude", {"ratio": 0.5}), ("prune-taylor", {"ratio": 0.5, "samples": 512}))
        if want("prune-unstructured")
        else ()
    ):
        pruned = chain((name, options))
        variants.append(Variant(f"{name} 50% (unstructured)", "prune-unstructured", pruned, pruned))

    if want("prune-structured"):
        structured = apply_steps(base, [("prune-structured", {"ratio": 0.25})])
        variants.append(Variant("structured 25% heads+MLP", "prune-structured", structured, structured))
        if (
            settings.recovered
        ):  # e.g. from `vitedge compress ... --step prune-structured:ratio=0.25 --step distill:epochs=3`
            recovered = load_model(settings.recovered)
            if [step["name"] for step in recovered.steps][:1] != ["prune-structured"]:
                raise SystemExit(
                    f"--recovered {settings.recovered}: expected a prune-structured checkpoint, got steps {[s['name'] for s in recovered.steps]}"
                )
        else:
            recovered = chain(finetune, start=structured)
        variants.append(
            Variant("structured 25% heads+MLP + distill fine-tune", "prune-structured", recovered, recovered)
        )
        chained = apply_steps(recovered, [("quantize-dynamic", {})])
        variants.append(
            Variant(
                "structured 25% + distill + int8 (chain)", "chain", chained, recovered, onnx_precision="int8-dynamic"
            )
        )

    if want("tokens"):
        for spec in settings.merge_r:
            r, _, blocks = spec.partition("x")
            merged = apply_steps(
                base, [("tokens", {"r": int(r), "mode": "merge", **({"blocks": int(blocks)} if blocks else {})})]
            )
            variants.append(
                Variant(f"ToMe merge r={r}" + (f", first {blocks} blocks" if blocks else ""), "tokens", merged, merged)
            )
        for r in settings.drop_r:
            dropped = apply_steps(base, [("tokens", {"r": r, "mode": "drop"})])
            variants.append(Variant(f"token drop r={r}", "tokens", dropped, dropped))

    if not want("distill"):
        return variants
    config = TrainConfig(
        epochs=settings.student_epochs,
        batch_size=128 if len(train[0]) >= 128 else 32,
        lr=1e-3,
        warmup_epochs=min(2.0, settings.student_epochs / 5),
        seed=0,
    )
    for distilled in (False, True):
        student = make_student(base, student=None, width=settings.student_width, distill_token=False, seed=0)
        log(f"training the {'distilled' if distilled else 'plain'} student ({settings.student_epochs} epochs)")
        if distilled:
            module, logs = distill(
                student.module, base.module, *train, config, DistillConfig("soft", 0.5, 2.0), show_progress=False
            )
        else:
            module, logs = train_loop(student.module, *train, config, show_progress=False)
        trained = student.with_module(module.eval())
        label = f"student width {settings.student_width}, {settings.student_epochs} epochs, {'with' if distilled else 'without'} distillation"
        variants.append(Variant(label, "distill", trained, trained))
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON output; the markdown goes beside it (.md)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model, few images, 1 epoch: proves the script runs"
    )
    parser.add_argument("--model", help="model spec (default vitedge-cifar10)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--test-count", type=int)
    parser.add_argument("--train-count", type=int)
    parser.add_argument("--finetune-epochs", type=int)
    parser.add_argument("--finetune-lr", type=float)
    parser.add_argument("--student-epochs", type=int)
    parser.add_argument("--seconds", type=float, help="timing seconds per runner per round")
    parser.add_argument("--rounds", type=int)
    parser.add_argument(
        "--groups",
        type=lambda text: tuple(text.split(",")),
        help="only these row groups (baseline always): quantize,lowrank,nystrom,prune-unstructured,prune-structured,tokens,distill",
    )
    parser.add_argument(
        "--merge-r",
        type=lambda text: tuple(text.split(",")),
        help="ToMe rows: r per block, or RxK for r in the first K blocks only, e.g. 9,10x4,12x3",
    )
    parser.add_argument(
        "--recovered",
        help="checkpoint of the structured 25%% pruning after its recovery fine-tune (skips the fine-tune here)",
    )
    parser.add_argument("--work", type=Path, help="folder for checkpoints and exported files (default: a temp folder)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.__dataclass_fields__ and value is not None and key != "quick"
    }
    settings = replace(settings, **overrides)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)

    import onnxruntime
    import openvino

    from vitedge.calibration.sources import open_source
    from vitedge.compress.pipeline import step_data

    base = base_model(settings)
    log(f"model {settings.model}: loading {settings.train_count} train / {settings.test_count} test images")
    train = step_data(open_source("cifar10:train"), base.data_config, settings.train_count)
    test = step_data(open_source("cifar10"), base.data_config, settings.test_count)
    meta = {
        "settings": asdict(settings),
        "machine": {
            "cpu": probe_cpu().model,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version(),
        },
    }
    variants = build_variants(settings, base, train)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.work or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for variant in variants:
            prepare(variant, test, folder, settings)
        time_all(variants, settings, tuple(base.data_config.input_size))
    rows = [variant.row for variant in variants]
    result = checks(rows)
    meta["machine"]["load_average_after"] = os.getloadavg()
    write_text_atomic(args.out, json.dumps({"rows": rows, "checks": result, **meta}, indent=2, default=str))
    write_text_atomic(args.out.with_suffix(".md"), markdown(rows, result, meta))
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    print(markdown(rows, result, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
