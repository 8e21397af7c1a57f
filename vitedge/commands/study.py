"""`vitedge study`: the compression study's table, plot and comparison in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli import MAIN_JOB, app, console, out
from ..core.errors import VitedgeError
from .common import home_expanded


@app.command("study", rich_help_panel=MAIN_JOB)
def study_command(
    model: str | None = typer.Option(None, help="Accuracy-scale model (default from the recipe: vitedge-cifar10)."),
    speed_model: str | None = typer.Option(
        None, help="Speed/size-scale model (default from the recipe: vit_base_patch16_224, random weights)."
    ),
    student_speed_model: str | None = typer.Option(
        None, help="Speed/size-scale model of the distilled rows (default deit_small_patch16_224)."
    ),
    data: str | None = typer.Option(None, help="Labelled test images for top-1 (default cifar10)."),
    out_dir: Path = typer.Option(
        Path("study"), "--out", help="Folder for study.md, study.json and study.png.", callback=home_expanded
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="The quick recipe (vitedge/recipes/study-quick.toml): fewer images and variants, deit_small; about 10 minutes on 2 cores.",
    ),
    recipe: Path | None = typer.Option(
        None, help="A study recipe TOML (default vitedge/recipes/study.toml).", callback=home_expanded
    ),
    pretrained: bool = typer.Option(
        False,
        "--pretrained",
        help="Load timm's pretrained weights for the speed models and measure their top-1 too (needs internet).",
    ),
    gpu: bool | None = typer.Option(
        None, "--gpu/--no-gpu", help="Also time on CUDA (default: when torch sees a device)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Run the compression study's whole matrix from a committed recipe; write study.md, study.json, study.png."""
    from ..workflows.study import run_study
    from ..workflows.study_recipe import load_study_recipe, with_overrides
    from ..workflows.study_report import markdown

    if quick and recipe is not None:
        raise VitedgeError(
            f"--quick and --recipe {recipe} name two recipes", "pass one: --quick is the committed quick recipe"
        )
    plan = load_study_recipe(recipe, quick=quick)
    plan = with_overrides(
        plan,
        model=model,
        speed_model=speed_model,
        student_speed_model=student_speed_model,
        data=data,
        pretrained=pretrained or None,
    )
    console.print(
        f"study: {len(plan.rows)} rows; accuracy on {plan.model} / {plan.data}, speed on {plan.speed_model}; writing {out_dir}"
    )
    study = run_study(plan, out_dir, console=console, force=force, gpu=gpu)
    out.print(markdown(study), markup=False, highlight=False)
    console.print(f"wrote {out_dir / 'study.md'}, {out_dir / 'study.json'}, {out_dir / 'study.png'}")
