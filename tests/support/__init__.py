"""What several test packages share: the tiny model builder here, the board helpers in
`boards`, the loopback sshd in `sshd`; `tests/conftest.py` turns them into fixtures."""

from __future__ import annotations

from vitedge.compress.train import tiny_cifar_vit
from vitedge.models import LoadedModel


def make_tiny_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images."""
    return tiny_cifar_vit(seed, **overrides)
