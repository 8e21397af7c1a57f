"""Distillation: the DeiT losses, student sizing, a distillation-token student, the recovery
step in a chain, and `vitedge distill`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from typer.testing import CliRunner

from vitedge.cli import app
from vitedge.compress.distill import (
    DistillConfig,
    distill,
    distillation_loss,
    make_student,
    student_kwargs,
)
from vitedge.compress.registry import apply_steps, load_model, parse_step_spec
from vitedge.compress.train import TrainConfig
from vitedge.core.errors import VitedgeError
from vitedge.models import save_checkpoint
from vitedge.models.loading import METADATA_KEY


class _Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(inputs)]


def test_soft_and_hard_losses() -> None:
    torch.manual_seed(0)
    teacher_logits, labels = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    inputs = torch.zeros(4, 3, 2, 2)
    soft = distillation_loss(_Fixed(teacher_logits), DistillConfig("soft", alpha=1.0, temperature=2.0), 0.0)
    assert float(soft(teacher_logits, inputs, labels)) == pytest.approx(0.0, abs=1e-6)  # KL(p‖p) = 0
    student = torch.randn(4, 10)
    expected_kl = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher_logits / 2, -1), reduction="batchmean") * 4
    assert float(soft(student, inputs, labels)) == pytest.approx(float(expected_kl), rel=1e-5)
    hard = distillation_loss(_Fixed(teacher_logits), DistillConfig("hard", alpha=0.5), 0.0)
    expected = 0.5 * F.cross_entropy(student, labels) + 0.5 * F.cross_entropy(student, teacher_logits.argmax(-1))
    assert float(hard(student, inputs, labels)) == pytest.approx(float(expected), rel=1e-6)
    # with a distillation token the class head sees the labels, the distillation head the teacher
    pair = hard((student, teacher_logits * 100), inputs, labels)
    assert float(pair) == pytest.approx(0.5 * float(F.cross_entropy(student, labels)), abs=1e-4)
    with pytest.raises(VitedgeError):
        DistillConfig("medium")


def test_half_width_student_keeps_head_width_and_depth(tiny_vit) -> None:
    kwargs = student_kwargs(tiny_vit.module, 0.5, distill_token=False)
    assert (
        kwargs["embed_dim"] == 32 and kwargs["num_heads"] == 1 and kwargs["depth"] == 2 and kwargs["mlp_ratio"] == 2.0
    )
    student = make_student(tiny_vit, student=None, width=0.5, distill_token=True)
    assert student.module.num_prefix_tokens == 2 and student.module.embed_dim == 32
    assert student.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _kl_to(teacher: torch.nn.Module, student: torch.nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        return float(
            F.kl_div(
                F.log_softmax(student(inputs), -1),
                F.log_softmax(teacher(inputs), -1),
                reduction="batchmean",
                log_target=True,
            )
        )


def test_distillation_pulls_the_student_towards_the_teacher(tiny_vit, cifar_batch) -> None:
    inputs, labels = torch.from_numpy(cifar_batch[0]), torch.from_numpy(cifar_batch[1])
    teacher = tiny_vit.module
    with torch.no_grad():  # a confident teacher, so there is something to learn
        teacher.head.weight.mul_(30.0)
    for distill_token in (False, True):
        student = make_student(tiny_vit, student=None, width=0.5, distill_token=distill_token, seed=1).module
        before = _kl_to(teacher, student, inputs)
        config = TrainConfig(epochs=10, batch_size=32, lr=3e-3, warmup_epochs=0.5, seed=0)
        trained, logs = distill(
            student,
            teacher,
            inputs,
            labels,
            config,
            DistillConfig("soft", alpha=1.0, temperature=1.0),
            show_progress=False,
        )
        assert len(logs) == 10 and all(math.isfinite(log.loss) for log in logs)
        assert not getattr(trained, "distilled_training", False)
        assert _kl_to(teacher, trained, inputs) < 0.8 * before


def test_distill_step_uses_the_chain_start_as_teacher(tiny_vit, cifar_batch) -> None:
    data = (torch.from_numpy(cifar_batch[0]), torch.from_numpy(cifar_batch[1]))
    with torch.no_grad():
        tiny_vit.module.head.weight.mul_(30.0)
    pruned = apply_steps(tiny_vit, [parse_step_spec("prune-structured:ratio=0.5")])
    chain = ["prune-structured:ratio=0.5", "distill:epochs=4,lr=1e-4,batch_size=16,alpha=1.0,temperature=1"]
    recovered = apply_steps(tiny_vit, [parse_step_spec(spec) for spec in chain], data=data)
    assert recovered.steps[-1]["structure"]["images"] == 64
    assert _kl_to(tiny_vit.module, recovered.module, data[0]) < 0.5 * _kl_to(tiny_vit.module, pruned.module, data[0])
    with pytest.raises(VitedgeError, match="needs images"):
        apply_steps(tiny_vit, [parse_step_spec("distill")])


def test_distill_command_trains_and_saves_a_student(tiny_vit, cifar_test, tmp_path) -> None:
    teacher = save_checkpoint(tiny_vit, tmp_path / "teacher.safetensors")
    np.savez(
        tmp_path / "train.npz", x=np.stack([cifar_test.get(i) for i in range(64)]), y=np.asarray(cifar_test.labels[:64])
    )
    out = tmp_path / "student.safetensors"
    args = [
        "distill",
        "--teacher",
        str(teacher),
        "--student-width",
        "0.5",
        "--data",
        str(tmp_path / "train.npz"),
        "--data-count",
        "40",
        "--test-data",
        "",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    student = load_model(str(out))
    assert student.module.embed_dim == 32
    with safe_open(out, "pt") as saved:  # --data-count: a 224-pixel teacher's data need not fit whole
        recorded = json.loads(saved.metadata()[METADATA_KEY])
    assert (recorded["train_data"], recorded["train_images"]) == (str(tmp_path / "train.npz"), 40)
    assert sum(p.numel() for p in student.module.parameters()) < 0.4 * sum(
        p.numel() for p in tiny_vit.module.parameters()
    )


@pytest.mark.parametrize(
    ("architecture", "config", "named"),
    [
        ({}, {"mean": (0.5, 0.5, 0.5)}, "mean (0.5, 0.5, 0.5) (the teacher's (0.4914, 0.4822, 0.4465))"),
        ({}, {"interpolation": "bilinear"}, "interpolation bilinear (the teacher's bicubic)"),
        (
            {"num_classes": 3},
            {"num_classes": 3, "labels": ("a", "b", "c")},
            "num_classes 3 (the teacher's 10); its class names",
        ),
        ({"img_size": 48}, {"input_size": (3, 48, 48)}, "input_size (3, 48, 48) (the teacher's (3, 32, 32))"),
    ],
    ids=["mean", "interpolation", "classes", "input-size"],
)
def test_a_given_student_that_sees_other_pixels_or_predicts_other_classes_is_refused(
    tiny_vit, tmp_path, architecture, config, named
) -> None:
    """A --student is trained on the teacher's preprocessed images and saved with its own
    DataConfig: another mean, std, interpolation or crop would deploy it on other pixels than it
    learned on (silently), other classes stopped training with torch's IndexError (a traceback)."""
    import dataclasses

    from tests.support import make_tiny_vit

    other = make_tiny_vit(seed=1, **architecture)
    other = dataclasses.replace(other, data_config=dataclasses.replace(other.data_config, **config))
    path = save_checkpoint(other, tmp_path / "student.safetensors")
    with pytest.raises(VitedgeError, match=r"differs from the teacher in ") as refused:
        make_student(tiny_vit, student=str(path), width=0.5, distill_token=False)
    assert named in refused.value.message, refused.value.message
    same = save_checkpoint(make_tiny_vit(seed=1), tmp_path / "same.safetensors")
    assert make_student(tiny_vit, student=str(same), width=0.5, distill_token=False).data_config == tiny_vit.data_config
