"""What several test packages share: the tiny model builder here, the board helpers in
`boards`, the loopback sshd in `sshd`; `tests/conftest.py` turns them into fixtures."""

from __future__ import annotations

from vitedge.compress.train import tiny_cifar_vit
from vitedge.models import LoadedModel


def make_tiny_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images."""
    return tiny_cifar_vit(seed, **overrides)


def overlapping_labels(boxes: list[tuple[float, float, float, float]]) -> list[tuple[int, int]]:
    """Pairs of label boxes (x, y, width, height in display space) that overlap."""
    return [
        (i, j)
        for i, (x0, y0, w0, h0) in enumerate(boxes)
        for j, (x1, y1, w1, h1) in enumerate(boxes)
        if i < j and x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0
    ]


def key_names(key: list[str]) -> list[str]:
    """The row names of a plot's numbered key ("3. ONNX fp32 (front)" → "ONNX fp32")."""
    return [text.split(". ", 1)[1].removesuffix(" (front)") for text in key if text.split(". ", 1)[0].isdigit()]
