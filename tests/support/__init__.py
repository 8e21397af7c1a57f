"""What several test packages share: the tiny model builder here, the board helpers in
`boards`, the loopback sshd in `sshd`; `tests/conftest.py` turns them into fixtures."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from vitedge.compress.train import cifar_vit_architecture, tiny_cifar_vit
from vitedge.models import LoadedModel


def make_tiny_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images."""
    return tiny_cifar_vit(seed, **overrides)


def with_weight_outliers(loaded: LoadedModel) -> LoadedModel:
    """`loaded` with one weight of 2.0 in every block Linear (not the head, whose outlier would
    be the logits): what torch's `trunc_normal_(std=0.02)`, which timm and transformers
    initialise ViTs with, draws into most random ViT-Bs (exactly ±2.0, 100 standard deviations;
    pytorch/pytorch#155588). One int8 scale per tensor is then set by that weight."""
    draw = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in loaded.module.blocks:
            for linear in (m for m in block.modules() if isinstance(m, torch.nn.Linear)):
                row, column = (int(torch.randint(size, (1,), generator=draw)) for size in linear.weight.shape)
                linear.weight[row, column] = 2.0
    return loaded


def make_class_token_vit() -> torch.nn.Module:
    """The tiny CIFAR ViT with a class token and token pooling (timm's default ViT layout)."""
    from vitedge.models import Architecture, build_architecture

    torch.manual_seed(0)
    base = cifar_vit_architecture(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    return build_architecture(
        Architecture(base.name, {**base.kwargs, "class_token": True, "global_pool": "token"})
    ).eval()


def overlapping_labels(boxes: list[tuple[float, float, float, float]]) -> list[tuple[int, int]]:
    """Pairs of label boxes (x, y, width, height in display space) that overlap."""
    return [
        (i, j)
        for i, (x0, y0, w0, h0) in enumerate(boxes)
        for j, (x1, y1, w1, h1) in enumerate(boxes)
        if i < j and x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0
    ]


def label_numbers(labels: list[str]) -> list[str]:
    """The point numbers a plot's labels name, in order ("7, 8" labels two points on one spot)."""
    return [number for label in labels for number in label.split(", ")]


def key_names(key: list[str]) -> list[str]:
    """The row names of a plot's numbered key ("3. ONNX fp32 (front)" → "ONNX fp32")."""
    return [text.split(". ", 1)[1].removesuffix(" (front)") for text in key if text.split(". ", 1)[0].isdigit()]


def count_openings(patch: pytest.MonkeyPatch, *importers: object) -> list[str]:
    """The specs of the sources really opened from now on (one already opened and handed back
    by `open_source(..., opened=...)` is not counted): each opening of a folder lists it and
    reads every image's header. `importers`: modules that imported `open_source` by name."""
    import vitedge.calibration.sources as sources

    specs: list[str] = []
    real = sources.open_source

    def counting(spec: str, *, opened: Sequence[object] = ()) -> object:
        images = real(spec, opened=opened)
        if not any(images is known for known in opened):
            specs.append(spec)
        return images

    for module in (sources, *importers):
        patch.setattr(module, "open_source", counting)
    return specs
