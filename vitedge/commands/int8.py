"""Accuracy-aware int8: `vitedge sensitivity`, `vitedge quantize --max-drop`, `vitedge calibrate-sweep`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..cli import INT8, app, console, out
from ..core.errors import VitedgeError
from ..core.io import atomic_folder, check_output_folder, refuse_a_file_as_folder
from ..core.manifest import MANIFEST
from .common import PRETRAINED_HELP, home_expanded, load_cli_model, refuse_options_given

if TYPE_CHECKING:
    from ..calibration.sources import ImageSet

FORMATS = ("onnx", "openvino")
SWEEP_COUNTS = (16, 64, 256, 1024)


def _refuse_calib_method_unless_onnx(ctx: typer.Context, to: str) -> None:
    """--calib-method picks ONNX Runtime's calibrator; NNCF's int8 has none to pick."""
    from ..exporter.export import OPTION_SCOPE
    from ..workflows.budget import PRECISION

    scope, exports = OPTION_SCOPE["calib_method"]
    if (to, PRECISION[to]) not in exports:
        refuse_options_given(ctx, ("calib_method",), f"for {scope}, not {to}", "drop it: it changes nothing here")


def _format(value: str) -> str:
    if value not in FORMATS:
        raise VitedgeError(
            f"--to must be onnx or openvino, not {value!r}",
            "int8 with calibration exists for onnx (static QDQ) and openvino (NNCF)",
        )
    return value


def _ints(value: str, option: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise VitedgeError(
            f"{option} must be a comma-separated list of numbers, got {value!r}", f"e.g. {option} 16,64,256,1024"
        ) from None
    if not numbers or min(numbers) < 1:
        raise VitedgeError(f"{option} needs positive numbers, got {value!r}", f"e.g. {option} 16,64,256,1024")
    return numbers


def _sweep_counts(counts: str | None, available: int) -> tuple[int, ...]:
    """--counts as given, or the default ladder cut to the `available` calibration images (with
    all of them as the last rung): a 100-image folder sweeps 16, 64 and 100 instead of failing at 256."""
    if counts is not None:
        return _ints(counts, "--counts")
    return tuple(sorted({c for c in SWEEP_COUNTS if c < available} | {min(available, max(SWEEP_COUNTS))}))


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _tracker(progress: Progress, title: str):  # noqa: ANN202 - exporter.sensitivity.Progress callable
    task = progress.add_task(title, total=None)

    def update(done: int, total: int, what: str) -> None:
        progress.update(task, completed=done, total=total, description=f"{title}: {what}")

    return update


def _setup(
    model: str,
    arch: str | None,
    calib: str,
    calib_samples: int | None,
    calib_seed: int,
    data: str,
    samples: int,
    threads: int | None,
    pretrained: bool = False,
    check_data: Callable[[ImageSet], None] | None = None,
):  # noqa: ANN202
    """Model, calibration draw, and held-out evaluation images (disjoint from the draw). When
    both come from one source, a defaulted draw leaves part of it for the evaluation.
    `check_data`: what the evaluation images must be, checked before the model loads."""
    import torch

    from ..calibration.calibset import build_calibration_set
    from ..calibration.sources import in_model_numbering, open_source
    from ..exporter.export import preflight
    from ..models import require_vit
    from ..workflows.int8_eval import evaluation_set
    from ..workflows.parity import held_out_reserve

    if threads:
        torch.set_num_threads(threads)
    images = open_source(calib)  # a missing source is named before the model loads
    evaluated = open_source(data, opened=(images,))
    shared = evaluated is images
    if check_data is not None:
        check_data(evaluated)
    loaded = load_cli_model(model, arch=arch, pretrained=pretrained)
    require_vit(loaded, "int8 quantization")
    preflight(loaded)  # what `vitedge export` refuses: compressed int8/fp16 weights, NaN, a wrong input size
    in_model_numbering(evaluated, loaded.data_config)  # before a draw is read
    hold_out = held_out_reserve(images.count) if shared else 0
    with console.status(f"preparing calibration images from {calib} and evaluation images from {data}"):
        calibration = build_calibration_set(
            images, loaded.data_config, calib_samples, seed=calib_seed, hold_out=hold_out
        )
        console.print(calibration.summary(), highlight=False)
        if shared:  # what the draw left of the source, not the source's size
            samples = min(samples, images.count - len(calibration))
        evalset = evaluation_set(loaded, evaluated, samples, calibration.manifest(), threads=threads)
    return loaded, calibration, evalset


def _score_cells(score, reference_top1: float | None) -> list[str]:  # noqa: ANN001 - Score
    from ..workflows.report import fmt

    top1 = (
        [fmt(score.top1, "pct"), fmt(score.top1 - reference_top1, "delta")]
        if score.top1 is not None and reference_top1 is not None
        else ["—", "—"]
    )
    return [fmt(score.cosine_mean, "cosine"), fmt(score.top1_agreement, "agree"), *top1]


@app.command("sensitivity", rich_help_panel=INT8)
def sensitivity_command(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="Model spec: vitedge-cifar10, a timm name, hf-hub:org/name, or a .safetensors/.pth."
    ),
    pretrained: bool = typer.Option(False, "--pretrained", help=PRETRAINED_HELP),
    data: str = typer.Option("cifar10", "--data", help="Held-out images to score on (never a calibration image)."),
    samples: int = typer.Option(1000, min=1, help="Number of held-out images."),
    to: str = typer.Option(
        "onnx", "--to", help="Runtime whose int8 to analyse: onnx (ORT static QDQ) or openvino (NNCF)."
    ),
    mode: str = typer.Option(
        "float-one", help="float-one: keep one unit in float, quantize the rest; int8-one: quantize only that unit."
    ),
    group: str = typer.Option(
        "node", help="Unit: node, block (one transformer block), or kind (the same layer in every block)."
    ),
    calib: str = typer.Option("cifar10:train", help="Calibration images."),
    calib_samples: int | None = typer.Option(
        None, min=1, help="Number of calibration images; default: up to 256, as many as --calib can spare."
    ),
    calib_seed: int = typer.Option(0, min=0, help="Seed of the calibration draw."),
    calib_method: str = typer.Option("minmax", help="ONNX calibration: minmax, entropy, percentile."),
    out_dir: Path = typer.Option(
        Path("sensitivity"), "--out", help="Folder for sensitivity.json and sensitivity.png.", callback=home_expanded
    ),
    arch: str | None = typer.Option(None, help="timm architecture of a checkpoint that does not record it."),
    threads: int | None = typer.Option(1, min=1, help="CPU threads."),
    force: bool = typer.Option(False, "--force", help="Replace --out if an earlier report is there."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rank MODEL's quantizable nodes by how much int8 accuracy they cost; table + bar plot."""
    from ..exporter.export import ExportOptions
    from ..workflows.sensitivity import run_sensitivity, write_report

    to = _format(to)
    _refuse_calib_method_unless_onnx(ctx, to)
    refuse_a_file_as_folder(out_dir)  # before atomic_folder's "already exists": the file is named
    with atomic_folder(out_dir, marker="sensitivity.json", force=force) as staging:
        loaded, calibration, evalset = _setup(
            model, arch, calib, calib_samples, calib_seed, data, samples, threads, pretrained
        )
        with _progress() as progress:
            report = run_sensitivity(
                loaded,
                to=to,
                calibration=calibration,
                evalset=evalset,
                options=ExportOptions(calib_method=calib_method),
                mode=mode,
                group=group,
                threads=threads,
                progress=_tracker(progress, "sensitivity"),
            )
        paths = {kind: out_dir / path.name for kind, path in write_report(report, staging).items()}
    if as_json:
        out.print_json(json.dumps({**report.to_dict(), "files": {k: str(v) for k, v in paths.items()}}))
        return
    table = Table(
        title=f"int8 sensitivity of {model} ({to}, {mode}, per {group}; {evalset.record['count']} images of {evalset.record['source']})",
        title_justify="left",
    )
    for column in ("#", "unit", "sensitivity", "cosine", "top-1 agree", "top-1 %", "Δ top-1"):
        table.add_column(column, justify="left" if column == "unit" else "right")
    table.add_row("", "[dim]all int8[/]", "", *_score_cells(report.int8, report.reference_top1))
    for rank, row in enumerate(report.rows, start=1):
        table.add_row(str(rank), row.unit, f"{row.sensitivity:.2e}", *_score_cells(row.score, report.reference_top1))
    out.print(table)
    out.print(f"wrote {paths['json']} and {paths['plot']}")


@app.command("quantize", rich_help_panel=INT8)
def quantize_command(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="Model spec: vitedge-cifar10, a timm name, hf-hub:org/name, or a .safetensors/.pth."
    ),
    pretrained: bool = typer.Option(False, "--pretrained", help=PRETRAINED_HELP),
    to: str = typer.Option(..., "--to", help="onnx (ORT static QDQ int8) or openvino (NNCF int8)."),
    out_dir: Path = typer.Option(
        ..., "--out", help="Artifact folder to write (as `vitedge export` writes it).", callback=home_expanded
    ),
    max_drop: float | None = typer.Option(
        None, "--max-drop", help="Largest allowed top-1 drop below fp32, in points (labelled --data)."
    ),
    min_cosine: float | None = typer.Option(
        None, "--min-cosine", help="Instead of --max-drop: smallest allowed mean cosine to the fp32 logits."
    ),
    data: str = typer.Option("cifar10", "--data", help="Held-out validation images (never a calibration image)."),
    samples: int = typer.Option(10000, min=1, help="Validation images the budget is judged on."),
    rank_samples: int = typer.Option(1000, min=1, help="Of those, how many rank the nodes (sensitivity)."),
    group: str = typer.Option("node", help="Exclusion unit: node, block or kind."),
    calib: str = typer.Option("cifar10:train", help="Calibration images."),
    calib_samples: int | None = typer.Option(
        None, min=1, help="Number of calibration images; default: up to 256, as many as --calib can spare."
    ),
    calib_seed: int = typer.Option(0, min=0, help="Seed of the calibration draw."),
    calib_method: str = typer.Option("minmax", help="ONNX calibration: minmax, entropy, percentile."),
    timing_runs: int = typer.Option(20, min=0, help="Batch-1 timed runs per exclusion for its speed cost (0: skip)."),
    arch: str | None = typer.Option(None, help="timm architecture of a checkpoint that does not record it."),
    threads: int | None = typer.Option(1, min=1, help="CPU threads (evaluation and timing)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's accuracy_budget as JSON."),
) -> None:
    """int8 within an accuracy budget: keep the most sensitive nodes in float until it holds."""
    from ..exporter.export import ExportOptions

    to = _format(to)
    _refuse_calib_method_unless_onnx(ctx, to)
    run_budget(
        model,
        to=to,
        out_dir=out_dir,
        max_drop=max_drop,
        min_cosine=min_cosine,
        data=data,
        samples=samples,
        rank_samples=rank_samples,
        group=group,
        calib=calib,
        calib_samples=calib_samples,
        calib_seed=calib_seed,
        options=ExportOptions(calib_method=calib_method),
        timing_runs=timing_runs,
        arch=arch,
        threads=threads,
        force=force,
        as_json=as_json,
        pretrained=pretrained,
    )


def run_budget(
    model: str,
    *,
    to: str,
    out_dir: Path,
    max_drop: float | None,
    min_cosine: float | None,
    data: str,
    samples: int,
    rank_samples: int,
    group: str,
    calib: str,
    calib_samples: int | None,
    calib_seed: int,
    options,  # noqa: ANN001 - exporter.export.ExportOptions (imported lazily: the CLI starts fast)
    timing_runs: int,
    arch: str | None,
    threads: int | None,
    force: bool,
    as_json: bool,
    pretrained: bool = False,
) -> None:
    """The budget search behind `vitedge quantize` and `vitedge export --max-drop`: one code path, one table."""
    from ..workflows.budget import Budget, quantize_to_budget
    from ..workflows.report import fmt

    budget = Budget(max_drop=max_drop, cosine_floor=min_cosine)
    check_output_folder(Path(out_dir), marker=MANIFEST, force=force)  # before the model loads
    loaded, calibration, evalset = _setup(
        model, arch, calib, calib_samples, calib_seed, data, samples, threads, pretrained, budget.check_source
    )
    with _progress() as progress:
        outcome = quantize_to_budget(
            loaded,
            to=to,
            calibration=calibration,
            evalset=evalset,
            budget=budget,
            out=out_dir,
            options=options,
            rank_samples=rank_samples,
            group=group,
            threads=threads,
            timing_runs=timing_runs,
            force=force,
            progress=_tracker(progress, "int8 budget"),
        )
    if as_json:
        out.print_json(json.dumps({"artifact": str(out_dir), "accuracy_budget": outcome.record()}))
    else:
        limit = f"drop ≤ {budget.max_drop} points" if budget.max_drop is not None else f"cosine ≥ {budget.cosine_floor}"
        table = Table(
            title=f"{model} → {to} int8, budget {budget.metric} {limit} ({evalset.record['count']} images of {evalset.record['source']})",
            title_justify="left",
        )
        for column in ("kept in float", "cosine", "top-1 agree", "top-1 %", "Δ top-1", "it/s b1", "speed cost"):
            table.add_column(column, justify="left" if column == "kept in float" else "right")
        speeds = {row.kept: row for row in outcome.speed}
        for i in range(len(outcome.result.excluded) + 1):
            kept = outcome.result.excluded[:i]
            score = outcome.scores.get(tuple(sorted(kept)))
            speed = speeds.get(tuple(kept))
            cells = _score_cells(score, outcome.reference_top1) if score else ["—"] * 4
            table.add_row(
                ("+ " + kept[-1]) if kept else "none (all int8)",
                *cells,
                fmt(speed.it_per_s if speed else None, "rate"),
                f"{speed.cost_pct:+.1f}%" if speed else "—",
            )
        out.print(table)
        out.print(
            f"fp32 top-1 {fmt(outcome.reference_top1, 'pct')}%; kept in float: {', '.join(outcome.result.excluded) or 'nothing'}; wrote {out_dir}"
        )
    if not outcome.result.met:
        console.print(
            f"[bold red]budget not met[/] even with every node in float (drop {outcome.result.drop:.4g}); the artifact keeps them all in float",
            highlight=False,
        )
        raise typer.Exit(1)


def sweep_markdown(points, recommendations: dict, reference_top1: float | None) -> str:  # noqa: ANN001 - SweepPoint list
    """The sweep as a markdown table (for notes), numbers through vitedge.report.fmt."""
    from ..workflows.report import fmt

    lines = [
        "| format | images | method | top-1 % | Δ top-1 | cosine | top-1 agree | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        delta = p.score.top1 - reference_top1 if p.score.top1 is not None and reference_top1 is not None else None
        mark = " **←**" if recommendations.get(p.format) is p else ""
        lines.append(
            f"| {p.format} | {p.count} | {p.method}{mark} | {fmt(p.score.top1, 'pct')} | {fmt(delta, 'delta')} | {fmt(p.score.cosine_mean, 'cosine')} | {fmt(p.score.top1_agreement, 'agree')} | {p.seconds:.1f} |"
        )
    lines.append("")
    lines.append(
        f"fp32 top-1 {fmt(reference_top1, 'pct')}%. **←** recommended: the fewest images within 0.1 top-1 points of the best (cosine within 1e-4 without labels)."
    )
    return "\n".join(lines) + "\n"


@app.command("calibrate-sweep", rich_help_panel=INT8)
def calibrate_sweep_command(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="Model spec: vitedge-cifar10, a timm name, hf-hub:org/name, or a .safetensors/.pth."
    ),
    pretrained: bool = typer.Option(False, "--pretrained", help=PRETRAINED_HELP),
    to: str = typer.Option("onnx,openvino", "--to", help="onnx, openvino, or both (comma-separated)."),
    counts: str | None = typer.Option(
        None, help="Calibration image counts; default: 16,64,256,1024, those --calib holds, and all it has if fewer."
    ),
    methods: str = typer.Option("minmax,entropy,percentile", help="ONNX calibration methods."),
    variants: str = typer.Option(
        "all",
        help="OpenVINO variants: all, or a comma-separated subset of default, mixed, smoothquant-off, bias-correction-off, bias-correction-full.",
    ),
    data: str = typer.Option("cifar10", "--data", help="Held-out evaluation images (never a calibration image)."),
    samples: int = typer.Option(1000, min=1, help="Number of evaluation images."),
    calib: str = typer.Option("cifar10:train", help="Calibration images."),
    calib_seed: int = typer.Option(0, min=0, help="Seed of the calibration draws."),
    out_dir: Path = typer.Option(
        Path("calibrate-sweep"), "--out", help="Folder for sweep.json, sweep.png and sweep.md.", callback=home_expanded
    ),
    arch: str | None = typer.Option(None, help="timm architecture of a checkpoint that does not record it."),
    threads: int | None = typer.Option(1, min=1, help="CPU threads."),
    force: bool = typer.Option(False, "--force", help="Replace --out if an earlier report is there."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep as JSON."),
) -> None:
    """Calibration image count × method (ORT) / NNCF settings (OpenVINO) → top-1, cosine; plot and recommendation."""
    import torch

    from ..calibration.sources import in_model_numbering, open_source
    from ..core.io import write_text_atomic
    from ..exporter.export import preflight
    from ..models import require_vit
    from ..workflows.int8_eval import calibration_record, evaluation_set
    from ..workflows.sweep import (
        calibration_draws,
        openvino_variants,
        recommend,
        sweep_onnx,
        sweep_openvino,
        write_sweep,
    )

    formats = [_format(f) for f in _names(to)]
    for name, sweep in (("methods", "onnx"), ("variants", "openvino")):
        if sweep not in formats:
            refuse_options_given(
                ctx, (name,), f"for the {sweep} sweep, not --to {to}", f"drop it, or add {sweep} to --to"
            )
    refuse_a_file_as_folder(out_dir)  # before atomic_folder's "already exists": the file is named
    with atomic_folder(out_dir, marker="sweep.json", force=force) as staging:
        calibrating = open_source(calib)  # a missing source is named before the model loads
        evaluated = open_source(data, opened=(calibrating,))
        if threads:
            torch.set_num_threads(threads)
        loaded = load_cli_model(model, arch=arch, pretrained=pretrained)
        require_vit(loaded, "int8 quantization")
        preflight(loaded)  # what `vitedge export` refuses: compressed int8/fp16 weights, NaN, a wrong input size
        in_model_numbering(evaluated, loaded.data_config)  # before a draw
        all_variants = openvino_variants()
        if variants != "all":
            unknown = [v for v in _names(variants) if v not in all_variants]
            if unknown:
                raise VitedgeError(
                    f"unknown OpenVINO variant(s) {', '.join(unknown)}", f"use {', '.join(all_variants)}"
                )
            all_variants = {v: all_variants[v] for v in _names(variants)}
        with console.status(f"preparing calibration draws from {calib} and {samples} evaluation images from {data}"):
            draws = calibration_draws(loaded, calibrating, _sweep_counts(counts, calibrating.count), seed=calib_seed)
            record = calibration_record(list(draws.values()))
            evalset = evaluation_set(loaded, evaluated, samples, record, threads=threads)
        points = []
        with _progress() as progress:
            if "onnx" in formats:
                points += sweep_onnx(
                    loaded,
                    draws,
                    evalset,
                    methods=_names(methods),
                    threads=threads,
                    progress=_tracker(progress, "sweep onnx"),
                )
            if "openvino" in formats:
                points += sweep_openvino(
                    loaded,
                    draws,
                    evalset,
                    variants=all_variants,
                    threads=threads,
                    progress=_tracker(progress, "sweep openvino"),
                )
        recommendations = {fmt_: recommend([p for p in points if p.format == fmt_]) for fmt_ in formats}
        paths = write_sweep(points, staging, evalset=evalset, calibration=record)
        write_text_atomic(staging / "sweep.md", sweep_markdown(points, recommendations, evalset.reference_top1))
    paths = {kind: out_dir / path.name for kind, path in paths.items()}
    if as_json:
        out.print_json(paths["json"].read_text())
        return
    from rich.markdown import Markdown

    out.print(Markdown(sweep_markdown(points, recommendations, evalset.reference_top1)))  # a table, not raw markdown
    for fmt_, point in recommendations.items():
        out.print(f"recommended for {fmt_}: {point.count} images, {point.method}")
    out.print(f"wrote {paths['json']}, {paths['plot']} and {out_dir / 'sweep.md'}")
