"""Which modules count as Vision Transformers, and of which family: the compression steps
declare the families they support by these names, and export refuses anything else."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..core.errors import VitedgeError
from .types import LoadedModel

HF_PREFIX = "transformers:"
TORCHVISION_PREFIX = "torchvision:"
# family name -> what a person calls it; the compression steps declare support by these names
FAMILIES = {
    "timm-vit": "timm VisionTransformer",
    "timm-eva": "timm Eva (EVA-02, RoPE ViTs)",
    "timm-beit": "timm Beit",
    "timm-relpos": "timm VisionTransformerRelPos",
    "hf-vit": "Hugging Face ViT/DeiT",
    "hf-beit": "Hugging Face BEiT",
    "hf-dinov2": "Hugging Face DINOv2",
    "torchvision-vit": "torchvision VisionTransformer",
}
# transformers `model_type` -> family: the ViT image classifiers we know how to export
HF_FAMILIES = {
    "vit": "hf-vit",
    "deit": "hf-vit",
    "vit_msn": "hf-vit",
    "beit": "hf-beit",
    "data2vec-vision": "hf-beit",
    "dinov2": "hf-dinov2",
    "dinov2_with_registers": "hf-dinov2",
}


class HFImageClassifier(nn.Module):
    """A transformers image classifier seen as every other model here: forward(pixel_values)
    returns the logits tensor (transformers returns an output object, which neither the
    exporters nor the training loop take). `model` keeps the transformers module whole."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _timm_family(module: nn.Module) -> str | None:
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    kinds = (
        (VisionTransformer, "timm-vit"),
        (Eva, "timm-eva"),
        (Beit, "timm-beit"),
        (VisionTransformerRelPos, "timm-relpos"),
    )
    return next((family for kind, family in kinds if isinstance(module, kind)), None)


def vit_family(module: nn.Module) -> str | None:
    """The ViT family of `module` (a key of FAMILIES), None when it is not a ViT we know."""
    if isinstance(module, HFImageClassifier):
        return HF_FAMILIES.get(str(module.config.model_type))
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    if isinstance(module, TorchvisionViT):
        return "torchvision-vit"
    return _timm_family(module)


def model_kind(module: nn.Module) -> str:
    """What the module is, in the words of its library (the transformers class, not our wrapper)."""
    return type(module.model if isinstance(module, HFImageClassifier) else module).__name__


def is_vit(module: nn.Module) -> bool:
    return vit_family(module) is not None


def require_vit(loaded: LoadedModel, what: str) -> None:
    if not is_vit(loaded.module):
        raise VitedgeError(
            f"{what} needs a Vision Transformer, but {loaded.spec} is a {model_kind(loaded.module)}",
            "use a ViT: timm (VisionTransformer/DeiT, Eva, Beit, RelPos), a transformers ViT/DeiT/BEiT/DINOv2 folder, "
            "torchvision:vit_b_16, or vitedge-cifar10",
        )
