"""The one training loop: `vitedge train`, distillation and recovery fine-tunes all run here.

AdamW, linear warm-up then cosine decay per step, label smoothing, reflect-pad random crop +
horizontal flip, a checkpoint every epoch (atomic) and `resume`. Runs data-parallel under
`torchrun` (DDP: gloo on CPU, NCCL on GPUs): every rank draws the same seeded permutation and
augmentation for the global batch and trains on its slice, so N processes compute the same
update as one process with the whole batch.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ..calibration.calibset import images_at_input_size
from ..calibration.preprocess import DataConfig
from ..calibration.sources import ImageSet, in_model_numbering, open_source, require_labels, subset_indices
from ..core.cpu import runtime_threads
from ..core.errors import VitedgeError, first_line
from ..core.io import write_bytes_atomic
from ..models import Architecture, LoadedModel, build_architecture, save_checkpoint
from .images import InputImages, Inputs, first_rows

# (model output on this rank's batch, that batch's augmented inputs, its labels) -> loss; the
# output is a tuple (class, distillation) for a model with a distillation token.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        """A setting no training can run with fails here, before any data loads: otherwise torch
        fails mid-epoch (label smoothing, threads) or zero epochs save the random start as if
        trained."""
        checks = (
            ("epochs", self.epochs, self.epochs >= 1, "at least 1", "30"),
            ("batch size", self.batch_size, self.batch_size >= 1, "at least 1", "128"),
            ("learning rate", self.lr, self.lr > 0, "positive", "1e-3"),
            ("weight decay", self.weight_decay, self.weight_decay >= 0, "0 or more", "0.05"),
            ("warm-up epochs", self.warmup_epochs, self.warmup_epochs >= 0, "0 or more", "2"),
            ("label smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)", "0.1"),
            ("crop padding", self.crop_padding, self.crop_padding >= 0, "0 or more", "4"),
            ("threads", self.threads, self.threads is None or self.threads >= 1, "at least 1", "2"),
        )
        for name, value, holds, bound, example in checks:
            if not holds:
                raise VitedgeError(f"training {name} {value} must be {bound}", f"e.g. {name} {example}")


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    train_top1: float
    test_top1: float | None
    lr: float
    seconds: float


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed() -> None:
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=size)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def augment(batch: torch.Tensor, generator: torch.Generator, padding: int, flip: bool) -> torch.Tensor:
    """Reflect-pad random crop + random horizontal flip of a float N×C×H×W batch."""
    n, _, height, width = batch.shape
    if padding:
        padded = F.pad(batch, (padding,) * 4, mode="reflect")
        tops = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        lefts = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        batch = torch.stack(
            [
                padded[i, :, top : top + height, left : left + width]
                for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True))
            ]
        )
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
        batch = torch.where(flips[:, None, None, None], batch.flip(-1), batch)
    return batch


@torch.no_grad()
def evaluate_top1(model: nn.Module, inputs: Inputs, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(inputs))


def _atomic_torch_save(obj: object, path: Path) -> None:
    """The resume checkpoint, serialized in memory, then written by the one atomic writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def _prediction_logits(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A model with a distillation head returns (class, distillation) logits while training;
    it predicts with their mean, as timm's VisionTransformerDistilled does at inference."""
    return torch.stack(output).mean(0) if isinstance(output, tuple) else output


def default_loss(label_smoothing: float) -> LossFn:
    def loss(logits: torch.Tensor, _inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss


def data_fingerprint(inputs: Inputs, labels: torch.Tensor) -> dict[str, Any]:
    """What a resume checkpoint records of the images it trained on: how many, and a sha256 of
    their labels and each image's first pixel row, in order (another --data, --data-count or
    draw changes it; hashing every pixel would read 7.5 GB for CIFAR-10 at 224 pixels)."""
    digest = hashlib.sha256(labels.numpy().tobytes())
    digest.update(first_rows(inputs).contiguous().numpy().tobytes())
    return {"images": len(labels), "sha256": digest.hexdigest()}


def _resume(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, data: dict[str, Any]
) -> tuple[int, list[EpochLog]]:
    """The epoch to go on from and the logs so far, with model and optimizer restored; a file
    that is not such a checkpoint is one line (torch's own advice for a refused pickle is to
    load it unsafely, which vitedge never does), and so is one trained on other images (`data`,
    `data_fingerprint`; a checkpoint written before it was recorded is not checked)."""
    try:  # weights_only: tensors and plain containers, never code
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "not a training checkpoint (vitedge loads tensors from it, never code)"
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a cut file
        reason = first_line(exc)
    else:
        recorded = state.get("data") if isinstance(state, dict) else None
        if recorded is not None and recorded != data:
            raise VitedgeError(
                f"cannot resume from {checkpoint}: it trained on {recorded.get('images')} images, this run has "
                f"{data['images']}{'' if recorded.get('images') != data['images'] else ' other ones'}",
                "pass the --data and --data-count it trained on, or --force to start over and replace it",
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            return int(state["epoch"]), [EpochLog(**log) for log in state["logs"]]
        except (KeyError, TypeError, AttributeError, IndexError):
            reason = "not a training checkpoint (it lacks the model, optimizer, epoch or logs)"
        except (RuntimeError, ValueError):  # load_state_dict: missing keys, other shapes
            reason = "its weights do not fit this model (another architecture or size)"
    raise VitedgeError(
        f"cannot resume from {checkpoint}: {reason}",
        "it is damaged or belongs to another model or run: --force starts over and replaces it",
    )


def refuse_diverged(model: nn.Module, mean_loss: float, epoch: int, lr: float) -> None:
    """Weights that are no longer finite end training before the epoch is checkpointed or the
    model saved: NaN weights saved as a trained model passed for one (exit 0) until export
    refused them. Checked on the weights, not this process's loss: torchrun's processes hold the
    same weights, so all of them stop here together."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise VitedgeError(
            f"training diverged in epoch {epoch}: the weights are no longer finite (mean loss {mean_loss:.4g})",
            f"lower the learning rate (it was {lr:g}) or warm up for longer; nothing of this epoch was saved",
        )


def train(
    model: nn.Module,
    train_x: Inputs,
    train_y: torch.Tensor,
    config: TrainConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    test: tuple[Inputs, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    show_progress: bool = True,
) -> tuple[nn.Module, list[EpochLog]]:
    """Train `model` in place on normalized N×3×H×W inputs; returns it and the epoch logs."""
    import time

    init_distributed()
    rank, size = world()
    if threads := runtime_threads(config.threads):
        torch.set_num_threads(threads)
    if config.batch_size % size:
        raise VitedgeError(
            f"batch size {config.batch_size} does not split over {size} processes",
            "pick a batch size divisible by --nproc-per-node",
        )
    torch.manual_seed(config.seed)
    loss_fn = loss_fn or default_loss(config.label_smoothing)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or "pos_embed" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    wrapped: nn.Module = nn.parallel.DistributedDataParallel(model) if size > 1 else model
    refuse_fewer_than_a_batch(len(train_x), config.batch_size)
    steps_per_epoch = len(train_x) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    start_epoch, logs = 0, []
    data = data_fingerprint(train_x, train_y)
    if resume and checkpoint is not None and checkpoint.is_file():
        start_epoch, logs = _resume(checkpoint, model, optimizer, data)
    local = config.batch_size // size
    with Progress(
        TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        disable=not show_progress or rank != 0,
    ) as progress:
        task = progress.add_task(
            "train",
            total=total_steps,
            completed=start_epoch * steps_per_epoch,
            epoch=start_epoch + 1,
            loss=float("nan"),
        )
        for epoch in range(start_epoch, config.epochs):
            began = time.perf_counter()
            generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            order = torch.randperm(len(train_x), generator=generator)
            wrapped.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for step in range(steps_per_epoch):
                lr = lr_at(epoch * steps_per_epoch + step, total_steps, warmup_steps, config.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = order[step * config.batch_size : (step + 1) * config.batch_size]
                batch = augment(train_x[index], generator, config.crop_padding, config.flip)
                labels = train_y[index]
                mine = slice(rank * local, (rank + 1) * local)
                logits = wrapped(batch[mine])
                loss = loss_fn(logits, batch[mine], labels[mine])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * local
                correct += int((_prediction_logits(logits).argmax(-1) == labels[mine]).sum())
                seen += local
                progress.update(task, advance=1, epoch=epoch + 1, loss=loss_sum / seen)
            refuse_diverged(model, loss_sum / seen, epoch + 1, config.lr)
            test_top1 = evaluate_top1(model, *test) if test is not None and rank == 0 else None
            log = EpochLog(
                epoch + 1, loss_sum / seen, 100.0 * correct / seen, test_top1, lr, time.perf_counter() - began
            )
            logs.append(log)
            if checkpoint is not None and rank == 0:
                _atomic_torch_save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch + 1,
                        "logs": [asdict(x) for x in logs],
                        "data": data,
                    },
                    checkpoint,
                )
            if on_epoch is not None and rank == 0:
                on_epoch(log)
    model.eval()
    return model, logs


# ---------------------------------------------------------------- `vitedge train`: a ViT from scratch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar_vit_architecture(
    *,
    img_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 128,
    depth: int = 6,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    num_classes: int = 10,
    class_token: bool = False,
    global_pool: str = "avg",
) -> Architecture:
    """A small timm ViT for low-resolution images: no class token, average-pooled tokens
    (64 tokens at 32×32/patch 4, which token merging and Nyström landmarks divide evenly).
    Refuses a size timm would build but not train as asked: a patch that does not tile the
    image (the border would be cut off), no blocks, or an MLP of width 0."""
    if patch_size < 1 or img_size < patch_size or img_size % patch_size:
        raise VitedgeError(
            f"image size {img_size} is not a whole number of {patch_size}-pixel patches",
            "pass an image size that is a multiple of the patch size, e.g. 32 with patch 4",
        )
    if depth < 1 or embed_dim < 1 or num_heads < 1 or mlp_ratio <= 0:
        raise VitedgeError(
            f"depth {depth}, width {embed_dim}, heads {num_heads} and MLP ratio {mlp_ratio} must all be positive",
            "e.g. depth 6, width 128, heads 4, MLP ratio 2",
        )
    return Architecture(
        "vit_tiny_patch16_224",
        {
            "img_size": img_size,
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "num_classes": num_classes,
            "class_token": class_token,
            "global_pool": global_pool,
        },
    )


def tiny_cifar_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images: seconds to
    export, for tests and the benchmarks' quick modes (`overrides` go to the architecture)."""
    from ..calibration.sources import CIFAR10_CLASSES

    torch.manual_seed(seed)
    architecture = cifar_vit_architecture(
        **{"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, **overrides}
    )
    config = DataConfig(
        input_size=(3, 32, 32),
        interpolation="bicubic",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        crop_pct=1.0,
        num_classes=10,
        labels=CIFAR10_CLASSES,
    )
    return LoadedModel(build_architecture(architecture).eval(), config, "tiny-vit", architecture)


LABELLED_HINT = "pass labelled images: cifar10:train, a .npz with y, or one subfolder per class"
TEST_LABELLED_HINT = "pass labelled test images (cifar10, a .npz with y, or one subfolder per class), or --test-data ''"


def refuse_fewer_than_a_batch(images: int, batch_size: int) -> None:
    if images < batch_size:
        raise VitedgeError(
            f"{images} training images is fewer than one batch of {batch_size}", "lower --batch-size or add data"
        )


def check_training_images(
    images: ImageSet, count: int | None, batch_size: int | None, *, needed_by: str = "which training needs"
) -> None:
    """What the images alone decide, refused before a model loads or an image is read: no
    labels, or fewer than one batch of them (`count`: the draw asked for, None: all)."""
    require_labels(images, needed_by, LABELLED_HINT)
    if batch_size is not None:
        refuse_fewer_than_a_batch(images.count if count is None else min(count, images.count), batch_size)


def check_test_images(images: ImageSet | None) -> None:
    """Test images scored after every epoch need labels; refused with the training images, not
    after an epoch's worth of reading."""
    if images is not None:
        require_labels(images, "which --test-data's top-1 needs", TEST_LABELLED_HINT)


def images_to_tensors(
    images: ImageSet,
    config: DataConfig,
    count: int | None = None,
    *,
    seed: int = 0,
    needed_by: str = "which training needs",
) -> tuple[InputImages, torch.Tensor]:
    """`count` of the images (a seeded, class-balanced draw; None: all), held in memory at the
    input size (normalized a batch at a time) with their labels in the model's numbering: at a
    224-pixel input, CIFAR-10's 50,000 training images are 7.5 GB."""
    require_labels(images, needed_by, LABELLED_HINT)
    images = in_model_numbering(images, config)
    indices = subset_indices(images, count, seed=seed)
    pixels = images_at_input_size((images.get(int(i)) for i in indices), len(indices), config)
    return InputImages(pixels, config), torch.from_numpy(np.asarray(images.labels, dtype=np.int64)[indices])


def train_classifier(
    architecture: Architecture,
    *,
    data: str,
    test_data: str | None,
    config: TrainConfig,
    out: Path,
    checkpoint: Path | None,
    resume: bool,
    command: str,
    data_count: int | None = None,
    mean: tuple[float, float, float] = CIFAR10_MEAN,
    std: tuple[float, float, float] = CIFAR10_STD,
    on_epoch: Callable[[EpochLog], None] | None = None,
    replace: bool = True,
) -> tuple[LoadedModel, list[EpochLog]]:
    train_images = open_source(data)
    # a typo named before the training set is read; the training set itself handed back, not listed again
    test_images = open_source(test_data, opened=(train_images,)) if test_data else None
    check_training_images(train_images, data_count, config.batch_size)
    check_test_images(test_images)
    img_size = int(architecture.kwargs.get("img_size", 224))
    labels = train_images.class_names or tuple(
        str(i) for i in range(int(train_images.labels.max()) + 1 if train_images.labels is not None else 0)
    )
    if len(labels) < 2:  # one output: the loss is 0 from the start and every prediction right
        raise VitedgeError(
            f"{train_images.name} has one class ({labels[0] if labels else 'none'}); a classifier learns from two or more",
            "pass images of every class: one subfolder per class, or a .npz whose y holds two or more labels",
        )
    data_config = DataConfig(
        input_size=(3, img_size, img_size),
        interpolation="bicubic",
        mean=mean,
        std=std,
        crop_pct=1.0,
        num_classes=len(labels),
        labels=labels,
    )
    architecture = Architecture(architecture.name, {**architecture.kwargs, "num_classes": len(labels)})
    if test_images is not None:
        in_model_numbering(test_images, data_config)  # refused before the training set is read
    train_x, train_y = images_to_tensors(train_images, data_config, data_count, seed=config.seed)
    test = images_to_tensors(test_images, data_config) if test_images is not None else None
    module = build_architecture(architecture)
    module, logs = train(
        module, train_x, train_y, config, checkpoint=checkpoint, resume=resume, test=test, on_epoch=on_epoch
    )
    loaded = LoadedModel(module, data_config, str(out), architecture)
    final = logs[-1] if logs else None
    save_checkpoint(
        loaded,
        out,
        replace=replace,
        made_by=command,
        train_config=config.__dict__,
        test_top1=final.test_top1 if final else None,
        train_data=data,
        train_images=len(train_x),
    )
    return loaded, logs
