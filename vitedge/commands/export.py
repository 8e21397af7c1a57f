"""`vitedge export` (torch → ONNX / OpenVINO / ExecuTorch artifact, then a parity check) and `vitedge verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..cli import EXPORT, app, console, out
from ..core.errors import VitedgeError
from .common import PRETRAINED_HELP, home_expanded, load_cli_model, refuse_options_given

if TYPE_CHECKING:  # the CLI imports its heavy modules inside the commands: it starts fast
    from ..calibration.calibset import CalibrationSet
    from ..calibration.sources import ImageSet
    from ..models import LoadedModel
    from ..workflows.parity import ParityData


def _parse_batch(value: str) -> str | int:
    if value == "dynamic":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise VitedgeError(
            f"--batch must be 'dynamic' or a positive integer, not {value!r}", "use --batch dynamic or --batch 8"
        )
    return number


def _parity_table(report, title: str) -> Table:  # noqa: ANN001 - ParityReport
    from ..workflows.parity import format_metric

    table = Table(title=title, title_justify="left")
    for column in ("metric", "value", "bound", "ok"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    bounds = report.tolerance
    for name in ("max_abs", "mean_abs", "cosine_mean", "cosine_min", "top1_agreement", "top5_overlap"):
        if name in bounds:
            sign = "<=" if name.endswith("_abs") else ">="
            bound = f"{sign} {format_metric(name, bounds[name])}"
            ok = "[red]no[/]" if any(f.startswith(name + " ") for f in report.failures) else "[green]yes[/]"
        else:
            bound, ok = "", ""
        table.add_row(name, format_metric(name, getattr(report, name)), bound, ok)
    return table


def _worst_table(report) -> Table:  # noqa: ANN001 - ParityReport
    table = Table(title="worst samples", title_justify="left")
    table.add_column("image")
    table.add_column("cosine", justify="right")
    table.add_column("max abs", justify="right")
    for identity, cosine, max_abs in report.worst:
        table.add_row(identity, f"{cosine:.6f}", f"{max_abs:.3e}")
    return table


def _show(report, folder: Path, as_json: bool, extra: dict | None = None) -> None:  # noqa: ANN001 - ParityReport
    if as_json:
        out.print_json(json.dumps({**(extra or {}), "artifact": str(folder), "parity": report.to_dict()}))
    else:
        computed = f", computed in {report.execution_precision}" if report.execution_precision else ""
        out.print(_parity_table(report, f"parity of {folder} ({report.precision}{computed}, {report.samples} images)"))
        if report.data_line:
            out.print(f"parity data: {report.data_line}", highlight=False)
        for note in report.notes:
            out.print(f"note: {note}", highlight=False)
        if not report.passed:
            out.print(_worst_table(report))
    if not report.passed:
        console.print(
            f"[bold red]outside tolerance:[/] {'; '.join(report.failures)}; worst: {', '.join(w[0] for w in report.worst[:3])}",
            highlight=False,
        )
        raise typer.Exit(1)


@app.command("export", rich_help_panel=EXPORT)
def export_command(
    ctx: typer.Context,
    model: str = typer.Argument(
        ...,
        help="Model spec: vitedge-cifar10, a timm name, hf-hub:org/name, or a .safetensors/.pth (e.g. from `vitedge compress`).",
    ),
    to: str = typer.Option(..., "--to", help="Format: onnx, openvino or executorch (XNNPACK; the executorch extra)."),
    pretrained: bool = typer.Option(False, "--pretrained", help=PRETRAINED_HELP),
    precision: str = typer.Option(
        "fp32",
        help="onnx: fp32, int8-dynamic, int8-static; openvino: fp32, fp16, bf16 (CPUs with native bf16 only), int8, int8-bf16 (int8, float parts in bf16; CPUs with native bf16 only); executorch: fp32, int8.",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="Artifact folder to write (model file(s) + manifest.json).", callback=home_expanded
    ),
    calib: str | None = typer.Option(
        None,
        help="Calibration images for int8-static / openvino int8, int8-bf16 / executorch int8: cifar10:train, a folder, a .npz.",
    ),
    calib_samples: int | None = typer.Option(
        None,
        min=1,
        help="Number of calibration images (class-balanced when labelled); default: up to 256, as many as --calib can spare.",
    ),
    calib_method: str = typer.Option("minmax", help="ONNX static calibration: minmax, entropy or percentile."),
    calib_seed: int = typer.Option(0, min=0, help="Seed of the calibration draw."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)."),
    batch: str = typer.Option(
        "dynamic", help="Batch axis: dynamic (executorch: 1 to 32 images a call), or a fixed size N."
    ),
    per_channel: bool = typer.Option(
        True,  # ExportOptions.per_channel (imported lazily: the CLI starts without torch)
        "--per-channel/--per-tensor",
        help="ONNX int8 weight scales per output channel or per tensor.",
    ),
    reduce_range: bool = typer.Option(
        True,  # ExportOptions.reduce_range
        "--reduce-range/--full-range",
        help="ONNX int8: 7-bit weights, computed alike on every CPU; full-range 8-bit weights saturate in ONNX Runtime's u8s8 products on x86 without VNNI or AMX.",
    ),
    smooth_quant: bool = typer.Option(
        True, "--smooth-quant/--no-smooth-quant", help="OpenVINO int8: NNCF SmoothQuant on MatMuls."
    ),
    ort_fusions: bool = typer.Option(
        True,
        "--ort-fusions/--standard-ops",
        help="ONNX int8-dynamic: each ViT attention as ONNX Runtime's fused Attention node (runs as QAttention; "
        "the file then needs ONNX Runtime, as its manifest says), or standard ONNX ops for any ONNX runtime.",
    ),
    class_token_only: bool = typer.Option(
        True,
        "--class-token-only/--all-tokens",
        help="ViTs that classify from the class token: compute the last block for the tokens the classifier reads "
        "only (same logits, 7% less Linear work on ViT-B; recorded in the manifest), or for every token.",
    ),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        help="int8 accuracy budget: keep the most sensitive nodes in float until top-1 on --verify-data is within this many points of fp32 (as `vitedge quantize`).",
    ),
    min_cosine: float | None = typer.Option(
        None,
        "--min-cosine",
        help="Instead of --max-drop, for unlabelled --verify-data: smallest allowed mean cosine to the fp32 logits.",
    ),
    arch: str | None = typer.Option(None, help="timm architecture of a checkpoint that does not record it."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check parity against PyTorch after exporting."),
    verify_data: str | None = typer.Option(
        None,
        help="Images for the parity check (never a calibration image); default: images of --calib held out of calibration, else CIFAR-10 test.",
    ),
    verify_samples: int | None = typer.Option(None, min=1, help="Number of parity images; default: up to 1000."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for the parity check."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary and parity as JSON."),
) -> None:
    """Export MODEL to an ONNX, OpenVINO or ExecuTorch artifact folder, then verify it against PyTorch."""
    from ..calibration.sources import open_source
    from ..core.io import check_output_folder
    from ..core.manifest import MANIFEST, read_manifest
    from ..exporter.export import (
        NEEDS_CALIBRATION,
        OPTION_SCOPE,
        ExportOptions,
        check_request,
        export_artifact,
    )
    from ..exporter.quantize import CALIB_METHODS
    from ..models import has_random_weights, require_vit
    from ..workflows.parity import plan_parity_data, verify_folder

    if calib_method not in CALIB_METHODS:
        raise VitedgeError(f"unknown calibration method {calib_method!r}", f"use one of {', '.join(CALIB_METHODS)}")
    options = ExportOptions(
        opset=opset,
        batch=_parse_batch(batch),
        calib_method=calib_method,
        per_channel=per_channel,
        reduce_range=reduce_range,
        smooth_quant=smooth_quant,
        ort_fusions=ort_fusions,
        class_token_only=class_token_only,
    )
    needs_calibration = (to, precision) in NEEDS_CALIBRATION
    check_request(to, precision, calib is not None)
    if not needs_calibration:  # else a forgotten --precision gives an fp32 file the user took for int8
        refuse_options_given(
            ctx,
            ("calib", "calib_samples", "calib_seed"),
            f"for a calibrated int8 export, not {to} {precision}",
            "add --precision int8-static (onnx) or int8 (openvino, executorch), or drop those options",
        )
    for name, (scope, exports) in OPTION_SCOPE.items():
        if (to, precision) not in exports:
            refuse_options_given(ctx, (name,), f"for {scope}, not {to} {precision}", "drop it: it changes nothing here")
    budget = max_drop is not None or min_cosine is not None
    if budget and not verify:  # the budget is judged on the parity images: it always checks them
        refuse_options_given(
            ctx, ("verify",), "not for --max-drop/--min-cosine, whose budget is the parity check", "drop it"
        )
    elif not verify:
        refuse_options_given(
            ctx,
            ("verify_data", "verify_samples", "threads"),
            "for the parity check, which --no-verify skips",
            "drop --no-verify to check parity on them, or drop those options",
        )
    if budget:
        _export_to_budget(
            model,
            to,
            precision,
            out_dir,
            max_drop,
            min_cosine,
            calib,
            calib_samples,
            calib_seed,
            options,
            verify_data,
            verify_samples,
            arch,
            threads,
            force,
            as_json,
            pretrained=pretrained,
        )
        return
    # what needs no model is refused before one loads (seconds for ViT-B): a taken --out, a mistyped source
    check_output_folder(out_dir, marker=MANIFEST, force=force)
    images = open_source(calib) if needs_calibration else None
    # else a mistyped --verify-data is named after the export, beside an unverified artifact
    opened = [images] if images is not None else []  # --verify-data may name --calib's images
    verify_images = open_source(verify_data, opened=opened) if verify and verify_data else None
    loaded = load_cli_model(model, arch=arch, pretrained=pretrained)
    require_vit(loaded, "export")
    calibration, parity_data = None, None
    if images is not None:
        calibration, parity_data = _calibrate(loaded, images, calib_samples, calib_seed, verify, verify_data)
    elif verify:
        parity_data = plan_parity_data(verify_data, calibration_source=None, labels=loaded.data_config.labels)
    with console.status(f"exporting {model} to {to} {precision}"):
        folder = export_artifact(
            loaded, to=to, precision=precision, out=out_dir, calibration=calibration, options=options, force=force
        )
    manifest = read_manifest(folder)
    size = sum(entry["bytes"] for entry in manifest["files"])
    summary = {
        "artifact": str(folder),
        "format": to,
        "precision": precision,
        "bytes": size,
        "files": [e["path"] for e in manifest["files"]],
    }
    if not as_json:
        out.print(f"wrote {folder} ({to} {precision}, {size / 1e6:.2f} MB: {', '.join(summary['files'])})")
    if not verify:
        if as_json:
            out.print_json(json.dumps(summary))
        return
    with console.status(f"verifying on images of {parity_data.spec}"):
        report = verify_folder(
            folder,
            reference=loaded,
            data=parity_data,
            samples=verify_samples,
            threads=threads,
            random_weights=has_random_weights(model, pretrained=pretrained),
            opened=[source for source in (images, verify_images) if source is not None],
        )
    _show(report, folder, as_json, summary)


def _calibrate(
    loaded: LoadedModel,
    images: ImageSet,
    calib_samples: int | None,
    calib_seed: int,
    verify: bool,
    verify_data: str | None,
) -> tuple[CalibrationSet, ParityData | None]:
    """The calibration draw and the parity images, chosen together: a parity check on held-out
    images of --calib needs a defaulted draw to leave some of them out (`held_out_reserve`)."""
    from ..calibration.calibset import build_calibration_set
    from ..workflows.parity import held_out_reserve, plan_parity_data, settle_parity_data

    labels = loaded.data_config.labels
    plan = plan_parity_data(verify_data, calibration_source=images.name, labels=labels) if verify else None
    hold_out = held_out_reserve(images.count) if plan is not None and plan.held_out else 0
    with console.status(f"preparing calibration images from {images.name}"):
        calibration = build_calibration_set(
            images, loaded.data_config, calib_samples, seed=calib_seed, hold_out=hold_out
        )
    left = (
        f"; {images.count - len(calibration)} left for the parity check" if hold_out and calibration.defaulted else ""
    )
    console.print(f"{calibration.summary()}{left}", highlight=False)
    if plan is not None:
        plan = settle_parity_data(plan, calibration=calibration.manifest(), labels=labels, images=images)
    return calibration, plan


def _export_to_budget(
    model: str,
    to: str,
    precision: str,
    out_dir: Path,
    max_drop: float | None,
    min_cosine: float | None,
    calib: str | None,
    calib_samples: int | None,
    calib_seed: int,
    options,
    verify_data: str | None,
    verify_samples: int | None,
    arch: str | None,
    threads: int | None,
    force: bool,
    as_json: bool,
    *,
    pretrained: bool = False,
) -> None:  # noqa: ANN001 - ExportOptions
    """`export --max-drop` is `vitedge quantize` with export's options; the budget is judged on the
    parity images (by default those `plan_parity_data` picks: held-out images of --calib)."""
    from ..workflows.budget import DEFAULT_RANK_SAMPLES, PRECISION
    from ..workflows.parity import DEFAULT_VERIFY_SAMPLES, plan_parity_data
    from .int8 import run_budget

    if verify_data is None:  # the spec does not depend on the labels; only the reason given would
        verify_data = plan_parity_data(None, calibration_source=calib, labels=()).spec
    samples = verify_samples or DEFAULT_VERIFY_SAMPLES

    if to not in PRECISION:
        raise VitedgeError(
            f"--max-drop/--min-cosine work on {' and '.join(PRECISION)} int8, not {to}",
            f"export --to {to} --precision {precision} without them, or use --to onnx / openvino for an accuracy budget",
        )
    if PRECISION.get(to) != precision:
        raise VitedgeError(
            f"--max-drop/--min-cosine apply to calibrated int8, not {to} {precision}",
            f"use --to {to} --precision {PRECISION.get(to, 'int8-static')}",
        )
    run_budget(
        model,
        to=to,
        out_dir=out_dir,
        max_drop=max_drop,
        min_cosine=min_cosine,
        data=verify_data,
        samples=samples,
        rank_samples=min(DEFAULT_RANK_SAMPLES, samples),
        group="node",
        calib=calib or "",
        calib_samples=calib_samples,
        calib_seed=calib_seed,
        options=options,
        timing_runs=20,
        arch=arch,
        threads=threads,
        force=force,
        as_json=as_json,
        pretrained=pretrained,
    )


@app.command("verify", rich_help_panel=EXPORT)
def verify_command(
    artifact: Path = typer.Argument(..., help="Artifact folder written by `vitedge export`.", callback=home_expanded),
    model: str | None = typer.Option(None, help="Reference model (default: the source recorded in the manifest)."),
    arch: str | None = typer.Option(None, help="timm architecture of a reference checkpoint that does not record it."),
    data: str | None = typer.Option(
        None,
        help="Real images to compare on (never a calibration image); default: images of the recorded calibration source held out of it, else CIFAR-10 test.",
    ),
    samples: int | None = typer.Option(None, min=1, help="Number of images; default: up to 1000."),
    max_abs: float | None = typer.Option(None, min=0, help="Override: largest allowed |logit difference|."),
    min_cosine: float | None = typer.Option(
        None, min=0, max=1, help="Override: smallest allowed mean cosine similarity."
    ),
    min_cosine_each: float | None = typer.Option(
        None, min=0, max=1, help="Override: smallest allowed per-image cosine similarity."
    ),
    min_top1: float | None = typer.Option(
        None, min=0, max=1, help="Override: smallest allowed top-1 agreement (0..1)."
    ),
    threads: int | None = typer.Option(None, min=1, help="CPU threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the parity report as JSON."),
) -> None:
    """Compare an artifact's logits with PyTorch's on real images; exit 1 outside tolerance."""
    from ..calibration.sources import open_source
    from ..compress.registry import load_model
    from ..core.manifest import read_manifest, verify_checksums
    from ..models import has_random_weights
    from ..workflows.parity import verify_folder

    manifest = read_manifest(artifact)
    verify_checksums(artifact, manifest)
    images = open_source(data) if data else None  # a mistyped --data is named before the model loads
    spec = model or manifest.get("source", {}).get("spec")
    if not spec:
        raise VitedgeError(f"{artifact} does not record its source model", "pass --model REF")
    if has_random_weights(spec, pretrained=False):  # compared with new random weights, any artifact fails
        raise VitedgeError(
            f"the reference {spec} is a model name: loading it builds new random weights, not those {artifact} was exported from",
            "pass --model with the checkpoint file or hf-hub: name it was exported from (export from a checkpoint to keep one)",
        )
    # The recorded spec is what export was given, relative to the folder export ran in: from
    # another folder it may name nothing, or another file of that name, which is refused rather
    # than compared (an "outside tolerance" that says nothing of the artifact). A --model the
    # user names is theirs to compare with: a different file is only warned about.
    hint = f"pass --model with the file {artifact} was exported from"
    try:
        reference = load_model(spec, arch=arch)
    except VitedgeError as exc:
        if model:
            raise
        raise VitedgeError(f"{artifact}'s recorded source {spec} cannot be loaded here: {exc.message}", hint) from None
    recorded = manifest.get("source", {}).get("sha256")
    if recorded and reference.source_sha256 and recorded != reference.source_sha256:
        if not model:
            raise VitedgeError(
                f"{spec} here is not the file {artifact} was exported from (sha256 {reference.source_sha256[:12]}…, "
                f"recorded {recorded[:12]}…): the manifest names it as export was given it",
                hint,
            )
        console.print(
            f"[yellow]warning:[/] {spec} is not the file this artifact was exported from (sha256 differs)",
            highlight=False,
        )
    overrides = {
        "max_abs": max_abs,
        "cosine_mean": min_cosine,
        "cosine_min": min_cosine_each,
        "top1_agreement": min_top1,
    }
    with console.status(f"verifying {artifact} on images of {data or 'the default source'}"):
        report = verify_folder(
            artifact,
            reference=reference,
            data=data,
            samples=samples,
            tolerances={k: v for k, v in overrides.items() if v is not None},
            threads=threads,
            opened=[images] if images is not None else [],
        )
    _show(report, artifact, as_json)
