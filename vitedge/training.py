"""`vitedge train`: build a timm ViT, train it on an image source, save it with its DataConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from calibration.preprocess import DataConfig, preprocess_batch
from calibration.sources import ImageSet, open_source
from compress.train import EpochLog, TrainConfig, train
from vitedge.errors import VitedgeError
from vitedge.models import Architecture, LoadedModel, build_architecture, save_checkpoint

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar_vit_architecture(*, img_size: int = 32, patch_size: int = 4, embed_dim: int = 128, depth: int = 6, num_heads: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10, class_token: bool = False, global_pool: str = "avg") -> Architecture:
    """A small timm ViT for low-resolution images: no class token, average-pooled tokens
    (64 tokens at 32×32/patch 4, which token merging and Nyström landmarks divide evenly)."""
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


def images_to_tensors(images: ImageSet, config: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if images.labels is None:
        raise VitedgeError(f"{images.name} has no labels", "training needs labelled data: cifar10:train, a .npz with y, or one subfolder per class")
    inputs = preprocess_batch((images.get(i) for i in range(images.count)), config)
    return torch.from_numpy(inputs), torch.from_numpy(np.asarray(images.labels, dtype=np.int64))


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
    mean: tuple[float, float, float] = CIFAR10_MEAN,
    std: tuple[float, float, float] = CIFAR10_STD,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> tuple[LoadedModel, list[EpochLog]]:
    train_images = open_source(data)
    img_size = int(architecture.kwargs.get("img_size", 224))
    labels = train_images.class_names or tuple(str(i) for i in range(int(train_images.labels.max()) + 1 if train_images.labels is not None else 0))
    data_config = DataConfig(input_size=(3, img_size, img_size), interpolation="bicubic", mean=mean, std=std, crop_pct=1.0, num_classes=len(labels), labels=labels)
    architecture = Architecture(architecture.name, {**architecture.kwargs, "num_classes": len(labels)})
    train_x, train_y = images_to_tensors(train_images, data_config)
    test = images_to_tensors(open_source(test_data), data_config) if test_data else None
    module = build_architecture(architecture)
    module, logs = train(module, train_x, train_y, config, checkpoint=checkpoint, resume=resume, test=test, on_epoch=on_epoch)
    loaded = LoadedModel(module, data_config, str(out), architecture)
    final = logs[-1] if logs else None
    save_checkpoint(loaded, out, made_by=command, train_config=config.__dict__, test_top1=final.test_top1 if final else None, train_data=data)
    return loaded, logs
