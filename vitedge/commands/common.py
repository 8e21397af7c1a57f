"""What more than one command shares: option parsers, the model loader that says when a name
has random weights, and the line printed per training epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from ..cli import console
from ..core.errors import VitedgeError
from ..core.io import refuse_an_unwritable_place

PathLike = TypeVar("PathLike", Path, str, list, None)


def home_expanded(value: PathLike) -> PathLike:
    """A path the shell left as typed ("~/art" in quotes, from a script or a recipe tool) names
    the home folder, as it already does wherever vitedge reads a model or images: without this
    `--out "~/art"` wrote a folder named "~" here, and `verify "~/art"` called an artifact none.
    The Typer callback of every option and argument that names a path."""
    if value is None:
        return value
    if isinstance(value, list):
        return [home_expanded(item) for item in value]
    return type(value)(os.path.expanduser(value))


def parse_samples(value: str) -> int | None:
    """--samples N or --samples all (None: every image)."""
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise VitedgeError(
            f"--samples must be a number or 'all', got {value!r}", "e.g. --samples 1000 or --samples all"
        ) from None
    if count <= 0:
        raise VitedgeError(f"--samples must be positive, got {count}", "e.g. --samples 1000")
    return count


def refuse_options_given(ctx, names: Sequence[str], why: str, hint: str) -> None:  # noqa: ANN001 - click.Context
    """Options the user typed that do nothing here (an ssh:// option on a local run) are refused,
    not ignored: a figure measured without them would be read as measured with them."""
    given = [  # Typer's own Click's ParameterSource: compared by name
        _typed(ctx, name) for name in names if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    ]
    if given:
        raise VitedgeError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} {why}", hint)


def _typed(ctx, name: str) -> str:  # noqa: ANN001 - click.Context
    """The option as the user typed it: `--per-tensor`, not the parameter's `--per-channel`."""
    option = next(param for param in ctx.command.params if param.name == name)
    off = getattr(option, "secondary_opts", None) and ctx.params.get(name) is False
    return (option.secondary_opts if off else option.opts)[0]


def check_output_file(out_path: Path, *, force: bool, reads: Sequence[str | None] = ()) -> None:
    """A model file is written only where nothing is, or with --force; never over a model the
    command reads (`reads`), which --force would lose (the write is atomic, the original gone)."""
    target = out_path.expanduser().resolve()
    if any(spec and Path(spec).expanduser().resolve() == target for spec in reads):
        raise VitedgeError(f"--out {out_path} is a model this command reads", "write the result to another file")
    if out_path.is_dir():
        raise VitedgeError(f"--out {out_path} is a folder", "name a .safetensors file, e.g. --out small.safetensors")
    if out_path.exists() and not force:
        raise VitedgeError(
            f"output file {out_path} already exists", "pass --force to replace it, or choose another --out"
        )
    refuse_an_unwritable_place(out_path, "--out")


def check_resume_checkpoint(checkpoint: Path, *, resume: bool, force: bool) -> None:
    """The checkpoint a training run writes after every epoch is that run's state: an earlier
    one is continued (--resume) or replaced (--force), never overwritten by a fresh run's
    first epoch. --resume with none yet starts at epoch 1 and says so (a job that always
    passes --resume can start and restart alike)."""
    if checkpoint.is_dir():
        raise VitedgeError(f"--checkpoint {checkpoint} is a folder", "name a file, e.g. --checkpoint run.ckpt")
    refuse_an_unwritable_place(checkpoint, "--checkpoint")
    if resume and not checkpoint.exists():
        console.print(
            f"[yellow]warning:[/] no checkpoint at {checkpoint} to resume from: training starts at epoch 1",
            highlight=False,
        )
    elif checkpoint.exists() and not resume and not force:
        raise VitedgeError(
            f"checkpoint {checkpoint} exists (an earlier run's state, saved after each epoch)",
            "pass --resume to continue it, --force to start over and replace it, or --checkpoint elsewhere",
        )


def print_epoch(log) -> None:  # noqa: ANN001 - compress.train.EpochLog
    """One line per epoch, for `train` and `distill` alike."""
    test = f" test top-1 {log.test_top1:.2f}%" if log.test_top1 is not None else ""
    console.print(
        f"epoch {log.epoch}: loss {log.loss:.4f} train top-1 {log.train_top1:.2f}%{test} ({log.seconds:.0f} s)"
    )


PRETRAINED_HELP = (
    "Load the trained weights of a timm name, transformers:org/name or torchvision: builder (hub or its cache); "
    "without it such a name gets random weights."
)


def load_cli_model(spec: str, *, arch: str | None, pretrained: bool):  # noqa: ANN201 - models.LoadedModel
    """`load_model`, plus one warning line when the spec builds random weights: parity and
    speed hold for them, but an accuracy a user reads off them would be meaningless."""
    from ..compress.registry import load_model
    from ..models import has_random_weights

    loaded = load_model(spec, arch=arch, pretrained=pretrained)
    if has_random_weights(spec, pretrained=pretrained):
        console.print(
            f"[yellow]warning:[/] {spec} has random weights (fine for parity and speed, not accuracy); "
            "pass --pretrained for its trained weights",
            highlight=False,
        )
    return loaded
