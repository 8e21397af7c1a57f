"""Shared fixtures: a tiny 32×32 ViT (seconds to export) and real CIFAR-10 test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibration.preprocess import DataConfig
from calibration.sources import CIFAR10_CLASSES, open_source
from vitedge.models import LoadedModel, build_architecture
from vitedge.training import CIFAR10_MEAN, CIFAR10_STD, cifar_vit_architecture

torch.set_num_threads(1)


def make_tiny_vit(seed: int = 0, **overrides: object) -> LoadedModel:
    """A randomly initialised 2-block, 64-wide ViT for 32×32 CIFAR-10 images."""
    torch.manual_seed(seed)
    architecture = cifar_vit_architecture(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, **overrides)
    module = build_architecture(architecture).eval()
    config = DataConfig(input_size=(3, 32, 32), interpolation="bicubic", mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, num_classes=10, labels=CIFAR10_CLASSES)
    return LoadedModel(module, config, "tiny-vit", architecture)


@pytest.fixture()
def tiny_vit() -> LoadedModel:
    return make_tiny_vit()


@pytest.fixture(scope="session")
def cifar_test():
    """The real CIFAR-10 test set (from ../shared/data or $VITEDGE_DATA)."""
    return open_source("cifar10")


@pytest.fixture(scope="session")
def cifar_batch(cifar_test) -> tuple[np.ndarray, np.ndarray]:
    """64 real test images, preprocessed for the tiny ViT, with their labels."""
    from calibration.preprocess import preprocess_batch

    config = make_tiny_vit().data_config
    images = [cifar_test.get(i) for i in range(64)]
    return preprocess_batch(images, config), np.asarray(cifar_test.labels[:64])
