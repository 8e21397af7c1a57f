"""`vitedge train`: train a small ViT from scratch."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ..cli import TRAINING, app, out
from .common import check_output_file, check_resume_checkpoint, home_expanded, print_epoch


@app.command("train", rich_help_panel=TRAINING)
def train_command(
    out_path: Path = typer.Option(
        ..., "--out", help="Where to write the trained .safetensors.", callback=home_expanded
    ),
    data: str = typer.Option(
        "cifar10:train",
        help="Training images: cifar10:train, a .npz with x/y, or a folder with one subfolder per class.",
    ),
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
    weight_decay: float = typer.Option(0.05, help="AdamW weight decay."),
    warmup_epochs: float = typer.Option(2.0, help="Linear warm-up epochs before cosine decay."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the cross-entropy."),
    img_size: int = typer.Option(32, help="Input resolution."),
    patch_size: int = typer.Option(4, help="Patch size."),
    embed_dim: int = typer.Option(128, help="Token width."),
    depth: int = typer.Option(6, help="Transformer blocks."),
    num_heads: int = typer.Option(4, help="Attention heads."),
    mlp_ratio: float = typer.Option(2.0, help="MLP hidden width / token width."),
    seed: int = typer.Option(0, min=0, help="Seed for initialization, order and augmentation."),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)."),
    checkpoint: Path | None = typer.Option(
        None, help="Checkpoint written after every epoch (default: OUT.ckpt).", callback=home_expanded
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file and checkpoint."),
) -> None:
    """Train a small timm ViT from scratch (this made the embedded vitedge-cifar10)."""
    check_output_file(out_path, force=force)
    checkpoint = checkpoint or out_path.with_suffix(".ckpt")
    check_resume_checkpoint(checkpoint, resume=resume, force=force)
    from ..compress.train import TrainConfig, cifar_vit_architecture, train_classifier

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

    _, logs = train_classifier(
        architecture,
        data=data,
        data_count=data_count or None,
        test_data=test_data or None,
        config=config,
        out=out_path,
        checkpoint=checkpoint,
        resume=resume,
        command=command,
        on_epoch=print_epoch,
        replace=force,
    )
    out.print(f"saved {out_path} ({len(logs)} epochs)")
