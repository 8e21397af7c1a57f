"""The `vitedge` command line: small Typer functions that parse options and call library code."""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .core.errors import VitedgeError

app = typer.Typer(
    name="vitedge",
    help="Compress, export, verify and benchmark Vision Transformers for CPUs, GPUs and edge boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # scripts and logs get the whole table
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        out.print(f"vitedge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vitedge: from a PyTorch ViT to a verified, benchmarked edge artifact."""
    _state["debug"] = debug


@app.command("train")
def train_command(
    out_path: Path = typer.Option(..., "--out", help="Where to write the trained .safetensors."),
    data: str = typer.Option(
        "cifar10:train",
        help="Training images: cifar10:train, a .npz with x/y, or a folder with one subfolder per class.",
    ),
    test_data: str | None = typer.Option(
        "cifar10", "--test-data", help="Images scored after every epoch ('' to skip)."
    ),
    epochs: int = typer.Option(30, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Global batch size (split over torchrun processes)."),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(0.05, help="AdamW weight decay."),
    warmup_epochs: float = typer.Option(2.0, help="Linear warm-up epochs before cosine decay."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the cross-entropy."),
    img_size: int = typer.Option(32, help="Input resolution."),
    patch_size: int = typer.Option(4, help="Patch size."),
    embed_dim: int = typer.Option(128, help="Token width."),
    depth: int = typer.Option(6, help="Transformer blocks."),
    num_heads: int = typer.Option(4, help="Attention heads."),
    mlp_ratio: float = typer.Option(2.0, help="MLP hidden width / token width."),
    seed: int = typer.Option(0, help="Seed for initialization, order and augmentation."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint written after every epoch (default: OUT.ckpt)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint."),
) -> None:
    """Train a small timm ViT from scratch (this made the embedded vitedge-cifar10)."""
    from .compress.train import TrainConfig, cifar_vit_architecture, train_classifier

    architecture = cifar_vit_architecture(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
    )
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        seed=seed,
        threads=threads,
    )
    command = "vitedge " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])

    def report(log) -> None:  # noqa: ANN001 - EpochLog
        test = f" test top-1 {log.test_top1:.2f}%" if log.test_top1 is not None else ""
        console.print(
            f"epoch {log.epoch}: loss {log.loss:.4f} train top-1 {log.train_top1:.2f}%{test} ({log.seconds:.0f} s)"
        )

    _, logs = train_classifier(
        architecture,
        data=data,
        test_data=test_data or None,
        config=config,
        out=out_path,
        checkpoint=checkpoint or out_path.with_suffix(".ckpt"),
        resume=resume,
        command=command,
        on_epoch=report,
    )
    out.print(f"saved {out_path} ({len(logs)} epochs)")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
    console.print(f"[yellow]warning:[/] {escape(str(message).splitlines()[0])}", highlight=False, soft_wrap=True)


def run() -> None:
    """Console-script entry: user errors become one red line and exit code 2."""
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False)
    except VitedgeError as exc:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"[dim]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[red]aborted[/]")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if code == 130:  # Typer turns Ctrl-C into a returned 130 under standalone_mode=False
        console.print("[red]aborted[/]")
    sys.exit(code if isinstance(code, int) else 0)


# Each area's commands live in vitedge/commands/; importing a module registers its commands.
from .commands import compress, edge, export, int8, measure, study  # noqa: E402,F401
