"""`vitedge` commands: compress (apply compression steps, save the result) and distill."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ..cli import COMPRESSION, app, console, out
from .common import check_output_file, check_resume_checkpoint, home_expanded, print_epoch, refuse_options_given


@app.command("compress", rich_help_panel=COMPRESSION)
def compress_command(
    model: str = typer.Argument(..., help="Model spec: vitedge-cifar10, a timm name, or a .safetensors/.pth file."),
    step: list[str] = typer.Option(
        ...,
        "--step",
        help="A step NAME:key=value,... (repeat to chain), e.g. prune-heads:ratio=0.25 (an unknown name lists the valid ones).",
    ),
    out_path: Path = typer.Option(
        ..., "--out", help="Where to write the compressed .safetensors.", callback=home_expanded
    ),
    data: str | None = typer.Option(
        None,
        help="Labelled images for steps that use data (prune-taylor, importance=taylor, distill, finetune): cifar10:train, a folder, a .npz.",
    ),
    data_count: int = typer.Option(0, min=0, help="Use this many images of --data, class-balanced (0: all)."),
    arch: str | None = typer.Option(None, help="timm architecture of a .pth/.safetensors without metadata."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
) -> None:
    """Compress a model with one or more steps; the result loads anywhere a model is accepted."""
    from ..compress.pipeline import compress_to_file
    from ..models import count_weights

    check_output_file(out_path, force=force, reads=[model])
    command = "vitedge " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    compressed = compress_to_file(
        model,
        step,
        out_path,
        data=data,
        data_count=data_count or None,
        arch=arch,
        replace=force,
        command=command,
    )
    weights = count_weights(compressed.module)
    for record in compressed.steps:
        # token reduction caps r at what each block has left: the counts say what r did
        after = record.get("structure", {}).get("tokens_after_block")
        tokens = f" (tokens after each block: {', '.join(map(str, after))})" if after else ""
        console.print(f"{record['name']} {record['options']}{tokens}", highlight=False, soft_wrap=True)
    out.print(f"saved {out_path} ({weights:,} weights, {out_path.stat().st_size / 1e6:.2f} MB)")


@app.command("distill", rich_help_panel=COMPRESSION)
def distill_command(
    ctx: typer.Context,
    teacher: str = typer.Option(..., help="Teacher model spec (e.g. vitedge-cifar10)."),
    student: str | None = typer.Option(
        None, help="Student model spec to train further (default: the teacher's architecture at --student-width)."
    ),
    student_width: float = typer.Option(
        0.5, help="Width of a fresh student relative to the teacher (same depth and head width)."
    ),
    distill_token: bool = typer.Option(
        False, "--distill-token", help="Give a fresh student a DeiT distillation token and head."
    ),
    out_path: Path = typer.Option(
        ..., "--out", help="Where to write the student .safetensors.", callback=home_expanded
    ),
    data: str = typer.Option("cifar10:train", help="Training images with labels."),
    data_count: int = typer.Option(
        0,
        min=0,
        help="Train on this many images of --data, class-balanced, seeded (0: all); held in memory at the input size.",
    ),
    test_data: str | None = typer.Option(
        "cifar10", "--test-data", help="Images scored after every epoch ('' to skip)."
    ),
    epochs: int = typer.Option(30, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Global batch size (split over torchrun processes)."),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate."),
    kind: str = typer.Option("soft", help="soft (KL with temperature) or hard (teacher's argmax)."),
    alpha: float = typer.Option(0.5, help="Weight of the teacher term."),
    temperature: float = typer.Option(2.0, help="Softmax temperature of the soft term."),
    seed: int = typer.Option(0, min=0, help="Seed for initialization, order and augmentation."),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads."),
    checkpoint: Path | None = typer.Option(
        None, help="Checkpoint written after every epoch (default: OUT.ckpt).", callback=home_expanded
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file and checkpoint."),
) -> None:
    """Train a student against a teacher (DeiT-style knowledge distillation)."""
    if student is not None:
        refuse_options_given(
            ctx,
            ("student_width", "distill_token"),
            f"for a fresh student, not --student {student}",
            "drop them: the student is the model --student names",
        )
    if kind == "hard":
        refuse_options_given(
            ctx, ("temperature",), "for --kind soft (the teacher's argmax has none)", "drop it, or use --kind soft"
        )
    check_output_file(out_path, force=force, reads=[teacher, student])
    checkpoint = checkpoint or out_path.with_suffix(".ckpt")
    check_resume_checkpoint(checkpoint, resume=resume, force=force)
    from ..compress.distill import DistillConfig, distill_to_file
    from ..compress.train import TrainConfig

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads)

    _, logs = distill_to_file(
        teacher,
        out_path,
        student=student,
        width=student_width,
        distill_token=distill_token,
        data=data,
        data_count=data_count or None,
        test_data=test_data or None,
        config=config,
        distill_config=DistillConfig(kind, alpha, temperature),
        checkpoint=checkpoint,
        resume=resume,
        on_epoch=print_epoch,
        command="vitedge " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        replace=force,
    )
    out.print(f"saved {out_path} ({len(logs)} epochs)")
