"""`vitedge run`: the main job, from one recipe to a measured, verified results folder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import typer

from ..cli import MAIN_JOB, app, console, out
from ..core.io import claimed_folder
from .common import home_expanded, parse_samples


@app.command("run", rich_help_panel=MAIN_JOB)
def run_command(
    recipe: Path | None = typer.Argument(
        None,
        help="Recipe TOML (see vitedge/recipes/default.toml); default: the built-in run, its 8 rows "
        "and openvino:int8-bf16 where the CPU computes bf16 natively.",
        callback=home_expanded,
    ),
    model: str | None = typer.Option(None, help="Override the recipe's model."),
    data: str | None = typer.Option(None, help="Override the recipe's test images."),
    samples: str | None = typer.Option(None, help="Override how many test images (or 'all')."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Output folder (default: vitedge-out/run-<time>).", callback=home_expanded
    ),
    force: bool = typer.Option(False, help="Replace an existing output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json's rows to stdout instead of the table."),
) -> None:
    """The main job: load → compress → export every artifact → parity → bench → report."""
    from ..workflows.pipeline import run_pipeline
    from ..workflows.recipe import load_recipe, rows_for
    from ..workflows.report import print_table

    plan = load_recipe(recipe)
    overrides = {k: v for k, v in {"model": model, "data": data}.items() if v is not None}
    if samples is not None:
        overrides["samples"] = parse_samples(samples)
    plan = dataclasses.replace(plan, **overrides)
    if out_dir is not None:
        folder, rows = out_dir, run_pipeline(plan, out_dir, console=console, force=force)
    else:  # a folder of its own, even beside a run started the same second
        with claimed_folder(Path("vitedge-out") / f"run-{dt.datetime.now():%Y%m%d-%H%M%S}") as folder:
            rows = run_pipeline(plan, folder, console=console, force=True)
    if plan.target == "cpu":
        from ..workflows.board import record_run

        steps = "".join(f" + {name}" for name, _ in plan.steps)
        # what `vitedge targets` recommends on this CPU from now on
        record_run(rows, rows_for(plan).kinds, plan.model + steps)
    if as_json:
        out.print_json(json.dumps([row.to_dict() for row in rows], default=str))
    else:
        print_table(rows, out, title=plan.title)
        out.print(f"wrote {folder}/results.json, report.md, pareto.png")
