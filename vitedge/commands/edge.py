"""`vitedge` commands: edge (`bundle` for a board, `targets` for what this machine offers)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..cli import EDGE, app, console, out
from .common import home_expanded


@app.command("bundle", rich_help_panel=EDGE)
def bundle_command(
    artifact: Path = typer.Argument(
        ...,
        help="An artifact folder written by `vitedge export` (ONNX, OpenVINO or ExecuTorch).",
        callback=home_expanded,
    ),
    out_dir: Path = typer.Option(..., "--out", help="The bundle folder to write.", callback=home_expanded),
    runtime: str | None = typer.Option(
        None, help="Runtime on the board: onnxruntime, openvino or executorch (default: the artifact's own)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Make a folder that runs on a board with numpy, Pillow and the runtime only (no torch, except for ExecuTorch, whose runtime links it)."""
    from ..core.manifest import read_manifest
    from ..targets.bundle_build import build_bundle

    bundle = build_bundle(artifact, out_dir, runtime=runtime, force=force)
    manifest = read_manifest(bundle)
    size = sum(entry["bytes"] for entry in manifest["files"]) / 1e6
    out.print(
        f"bundle {bundle} ({manifest['format']} {manifest['precision']}, {manifest['bundle']['runtime']}, {size:.1f} MB)"
    )
    console.print(
        "on the board: pip install -r requirements.txt, then python3 run_bundle.py classify IMAGE | bench | eval FOLDER",
        highlight=False,
    )


@app.command("targets", rich_help_panel=EDGE)
def targets_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Advise from this model's measurements (as `vitedge run --model` named it), not the latest.",
    ),
) -> None:
    """What this machine offers (CPU ISA, ONNX Runtime providers, OpenVINO and CUDA devices) and the format to export for each target: from what the last `vitedge run` here (or `vitedge bench` on a board) measured, where it did, or from the runs of --model; else from the CPU's ISA."""
    from rich.table import Table

    from ..core.cpu import onednn_cap_note, usable_words
    from ..targets.detect import machine_dict, probe_machine, recommend
    from ..targets.measured import load_store

    machine = probe_machine()
    targets = recommend(machine, load_store(), model)
    if as_json:
        out.print_json(json.dumps({**machine_dict(machine), "targets": [t.to_dict() for t in targets]}))
        return
    cpu = machine.cpu
    capped = onednn_cap_note(cpu.onednn_cap, cpu.isa)
    cores = f"{cpu.cores} logical CPUs" + usable_words(cpu.cores, *machine.usable_cpus)
    out.print(
        f"CPU: {cpu.model}, {cpu.arch}, {cores}; ISA: {', '.join(cpu.isa) or 'none reported'}"
        + (f" ({capped})" if capped else ""),
        highlight=False,
    )
    out.print(f"ONNX Runtime providers: {', '.join(machine.ort_providers)}", highlight=False)
    out.print(
        f"OpenVINO devices: {', '.join(f'{k} ({v})' for k, v in machine.openvino_devices.items()) or 'none'}",
        highlight=False,
    )
    out.print(f"CUDA devices: {', '.join(machine.cuda_devices) or 'none'}", highlight=False)
    table = Table("target", "here", "device", "export", "why")
    for target in targets:
        why = target.why + "".join(f"\n[yellow]warning: {w}[/]" for w in target.warnings)
        table.add_row(target.target, "yes" if target.available else "[dim]no[/]", target.device, target.recommend, why)
    out.print(table)
