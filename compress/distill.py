"""Knowledge distillation (DeiT, Touvron et al. 2021): a student learns from the labels and
from a teacher's outputs on the same augmented batch, through the one training loop
(`compress.train.train`, so checkpoints, resume, progress and DDP come with it).

soft: (1-α)·CE(student, y) + α·τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))
hard: (1-α)·CE(student, y) + α·CE(student, argmax teacher)
With a distillation token (timm's VisionTransformerDistilled) the class head learns from the
labels and the distillation head from the teacher; inference averages the two heads.

The same loop is the short "recovery" fine-tune after pruning, low-rank or Nyström: the
`distill` step uses the model before compression as its teacher, `finetune` uses labels only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..calibration.preprocess import DataConfig
from ..core.errors import VitedgeError
from ..models import Architecture, LoadedModel, build_architecture, save_checkpoint
from .images import Inputs
from .step import Step, StepData, StepResult, clone, record, require_data, vit_blocks
from .train import EpochLog, LossFn, TrainConfig, train

KINDS = ("soft", "hard")


@dataclass(frozen=True)
class DistillConfig:
    kind: str = "soft"
    alpha: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VitedgeError(f"unknown distillation kind {self.kind!r}", f"use one of {', '.join(KINDS)}")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise VitedgeError(
                f"distillation alpha={self.alpha} must be in [0, 1] and temperature={self.temperature} positive",
                "e.g. alpha=0.5 temperature=2",
            )


def distillation_loss(teacher: nn.Module, config: DistillConfig, label_smoothing: float) -> LossFn:
    """The training loss: labels plus the teacher's outputs on the student's exact inputs."""
    teacher.eval()

    def loss(
        output: torch.Tensor | tuple[torch.Tensor, torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        class_out, distill_out = output if isinstance(output, tuple) else (output, output)
        with torch.no_grad():
            target = teacher(inputs).float()
        supervised = F.cross_entropy(class_out, labels, label_smoothing=label_smoothing)
        if config.kind == "soft":
            tau = config.temperature
            taught = (
                F.kl_div(
                    F.log_softmax(distill_out / tau, -1),
                    F.log_softmax(target / tau, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                * tau
                * tau
            )
        else:
            taught = F.cross_entropy(distill_out, target.argmax(-1))
        return (1.0 - config.alpha) * supervised + config.alpha * taught

    return loss


def _require_trainable(model: nn.Module, what: str) -> None:
    if any(p.dtype != torch.float32 for p in model.parameters()) or not any(
        p.requires_grad for p in model.parameters()
    ):
        raise VitedgeError(
            f"{what} needs an fp32 model with trainable weights", "train before quantize-dynamic / fp16 / bf16 steps"
        )


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_x: Inputs,
    train_y: torch.Tensor,
    config: TrainConfig,
    distill_config: DistillConfig = DistillConfig(),
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    test: tuple[Inputs, torch.Tensor] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    show_progress: bool = True,
) -> tuple[nn.Module, list[EpochLog]]:
    """Train `student` in place against `teacher`; returns it and the epoch logs."""
    _require_trainable(student, "distillation")
    has_token = hasattr(student, "set_distilled_training")
    if has_token:
        student.set_distilled_training(True)
    try:
        loss = distillation_loss(teacher, distill_config, config.label_smoothing)
        return train(
            student,
            train_x,
            train_y,
            config,
            checkpoint=checkpoint,
            resume=resume,
            test=test,
            loss_fn=loss,
            on_epoch=on_epoch,
            show_progress=show_progress,
        )
    finally:
        if has_token:
            student.set_distilled_training(False)


def student_kwargs(teacher: nn.Module, width: float, *, distill_token: bool) -> dict[str, object]:
    """A timm ViT like `teacher` with `width`× the embedding (same head width, same depth)."""
    if not 0.0 < width <= 1.0:
        raise VitedgeError(f"student width {width} must be in (0, 1]", "e.g. --student-width 0.5")
    attention = teacher.blocks[0].attn
    heads = max(1, round(attention.num_heads * width))
    dim = heads * attention.head_dim
    kwargs: dict[str, object] = {
        "img_size": tuple(teacher.patch_embed.img_size),
        "patch_size": tuple(teacher.patch_embed.patch_size),
        "embed_dim": dim,
        "depth": len(teacher.blocks),
        "num_heads": heads,
        "mlp_ratio": teacher.blocks[0].mlp.fc1.out_features / teacher.embed_dim,
        "num_classes": teacher.num_classes,
        "class_token": teacher.cls_token is not None or distill_token,
        "global_pool": "token" if distill_token else teacher.global_pool,
    }
    return kwargs


DISTILLED_ARCH = "deit_tiny_distilled_patch16_224"  # timm's VisionTransformerDistilled; kwargs set the size


def _short_config(epochs: float, lr: float, batch_size: int, seed: int) -> TrainConfig:
    if epochs <= 0 or int(epochs) != epochs:
        raise VitedgeError(f"epochs={epochs} must be a whole number of at least 1", "e.g. epochs=2")
    return TrainConfig(
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        warmup_epochs=min(0.2, float(epochs)),
        seed=int(seed),
    )


def distill_step(
    model: nn.Module,
    *,
    teacher: nn.Module | None = None,
    data: StepData | None = None,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 128,
    kind: str = "soft",
    alpha: float = 0.5,
    temperature: float = 2.0,
    seed: int = 0,
) -> StepResult:
    """Recovery fine-tune of a compressed model against its uncompressed self (or `teacher`)."""
    inputs, labels = require_data("distill", data)
    if teacher is None:
        raise VitedgeError(
            "step distill needs a teacher", "pass teacher=MODEL, or put distill after a compression step in the chain"
        )
    options = {
        "epochs": int(epochs),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "kind": kind,
        "alpha": float(alpha),
        "temperature": float(temperature),
        "seed": int(seed),
    }
    config = _short_config(epochs, lr, batch_size, seed)
    student, logs = distill(
        clone(model), teacher, inputs, labels, config, DistillConfig(kind, float(alpha), float(temperature))
    )
    return StepResult(
        student.eval(),
        record(
            "distill", options, {"final_loss": logs[-1].loss, "train_top1": logs[-1].train_top1, "images": len(inputs)}
        ),
    )


def finetune_step(
    model: nn.Module,
    *,
    data: StepData | None = None,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 128,
    seed: int = 0,
) -> StepResult:
    """Recovery fine-tune on labels only (the baseline the distill step is compared with)."""
    inputs, labels = require_data("finetune", data)
    _require_trainable(model, "finetune")
    options = {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed)}
    tuned, logs = train(clone(model), inputs, labels, _short_config(epochs, lr, batch_size, seed))
    return StepResult(
        tuned.eval(),
        record(
            "finetune", options, {"final_loss": logs[-1].loss, "train_top1": logs[-1].train_top1, "images": len(inputs)}
        ),
    )


_TRAINING = {
    "epochs": "passes over --data (default 1)",
    "lr": "peak learning rate (default 1e-4; short warm-up, cosine decay)",
    "batch_size": "batch size (default 128)",
    "seed": "seed for order and augmentation (default 0)",
}

STEPS: dict[str, Step] = {
    "distill": Step(
        distill_step,
        "recovery fine-tune by distillation from the model before the chain (or teacher=MODEL); needs --data",
        options={
            **_TRAINING,
            "teacher": "teacher model spec (default: the model the chain started from)",
            "kind": "soft (KL with temperature, default) or hard (teacher's argmax)",
            "alpha": "weight of the teacher term (default 0.5)",
            "temperature": "softmax temperature of the soft term (default 2)",
        },
        uses=("data", "teacher"),
    ),
    "finetune": Step(
        finetune_step, "recovery fine-tune on labels only; needs --data", options=_TRAINING, uses=("data",)
    ),
}


def _comparable(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def data_config_differences(student: DataConfig, teacher: DataConfig) -> list[str]:
    """Where a given student's DataConfig is not the teacher's. Both see the same preprocessed
    images in training, and the student is saved with its own config: any difference in the
    preprocessing would deploy it on other pixels than it learned on, and other classes would
    leave its outputs unmatched to the teacher's. Labels are compared where both models name them."""
    found = []
    for spec in dataclasses.fields(DataConfig):
        mine, theirs = getattr(student, spec.name), getattr(teacher, spec.name)
        if spec.name == "labels":
            if mine and theirs and tuple(mine) != tuple(theirs):
                found.append("its class names")
        elif _comparable(mine) != _comparable(theirs):
            found.append(f"{spec.name} {mine} (the teacher's {theirs})")
    return found


def make_student(
    teacher: LoadedModel, *, student: str | None, width: float, distill_token: bool, seed: int = 0
) -> LoadedModel:
    """The student: a given model spec (e.g. a pruned checkpoint), or the teacher's
    architecture at `width`× (optionally with a distillation token), freshly initialised."""
    if student is not None:
        from .registry import load_model  # the registry gathers this module's STEPS

        loaded = load_model(student)
        differences = data_config_differences(loaded.data_config, teacher.data_config)
        if differences:
            raise VitedgeError(
                f"--student {student} differs from the teacher in {'; '.join(differences)}",
                "distil between models that take the same input pixels and predict the same classes, "
                "or leave --student out for a fresh one",
            )
        return loaded
    vit_blocks(teacher.module, "distill")
    kwargs = student_kwargs(teacher.module, width, distill_token=distill_token)
    architecture = Architecture(
        DISTILLED_ARCH if distill_token else teacher.architecture.name, {**teacher.architecture.kwargs, **kwargs}
    )
    torch.manual_seed(seed)
    return LoadedModel(
        build_architecture(architecture), teacher.data_config, f"student of {teacher.spec}", architecture
    )


def distill_to_file(
    teacher_spec: str,
    out: Path,
    *,
    student: str | None = None,
    width: float = 0.5,
    distill_token: bool = False,
    data: str = "cifar10:train",
    data_count: int | None = None,
    test_data: str | None = "cifar10",
    config: TrainConfig = TrainConfig(),
    distill_config: DistillConfig = DistillConfig(),
    checkpoint: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    command: str = "vitedge distill",
    replace: bool = True,
) -> tuple[LoadedModel, list[EpochLog]]:
    """`vitedge distill`: train a student against a teacher on `data_count` images of `data`
    (None: all), save it to `out`."""
    from ..calibration.sources import in_model_numbering, open_source
    from .registry import load_model
    from .train import check_test_images, check_training_images, images_to_tensors

    train_images = open_source(data)  # a mistyped source is named before the teacher loads
    test_images = open_source(test_data, opened=(train_images,)) if test_data else None
    check_training_images(train_images, data_count, config.batch_size)
    check_test_images(test_images)
    teacher = load_model(teacher_spec)
    for images in (train_images, test_images):  # the labels fit the teacher, before an image is read
        if images is not None:
            in_model_numbering(images, teacher.data_config)
    pupil = make_student(teacher, student=student, width=width, distill_token=distill_token, seed=config.seed)
    train_x, train_y = images_to_tensors(train_images, teacher.data_config, data_count, seed=config.seed)
    test = images_to_tensors(test_images, teacher.data_config) if test_images is not None else None
    module, logs = distill(
        pupil.module,
        teacher.module,
        train_x,
        train_y,
        config,
        distill_config,
        checkpoint=checkpoint,
        resume=resume,
        test=test,
        on_epoch=on_epoch,
    )
    trained = LoadedModel(
        module.eval(), pupil.data_config, str(out), pupil.architecture, pupil.steps, pupil.source_sha256
    )
    final = logs[-1] if logs else None
    save_checkpoint(
        trained,
        out,
        replace=replace,
        made_by=command,
        teacher=teacher_spec,
        distill_config=distill_config.__dict__,
        train_config=config.__dict__,
        train_data=data,
        train_images=len(train_x),
        test_top1=final.test_top1 if final else None,
    )
    return trained, logs
