"""Tiny random models of every ViT family vitedge accepts (timm, transformers, torchvision),
built the way a user's model arrives: a timm Architecture, a transformers `save_pretrained`
folder with its image processor, a torchvision module. 32×32 inputs, 2 blocks, 32 wide, so
each exports in about a second."""

from __future__ import annotations

from pathlib import Path

import torch

from vitedge.models import Architecture, LoadedModel, build_architecture, data_config_for, load_model

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
# one timm model per family and head kind; each name's own pretrained config gives the preprocessing
TIMM_MODELS = {
    "deit_small_distilled_patch16_224": "timm-vit",  # distillation token
    "vit_base_patch16_reg4_gap_256": "timm-vit",  # registers + average pooling
    "eva02_small_patch14_224": "timm-eva",  # EVA-02: RoPE, SwiGLU
    "vit_base_patch16_rope_reg1_gap_256": "timm-eva",  # RoPE ViT
    "beit_base_patch16_224": "timm-beit",
    "vit_relpos_small_patch16_224": "timm-relpos",
}


LAYER_SCALES = ("gamma", "lambda", "layer_scale", "ls1", "ls2")


def spread(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight matrix drawn with variance 1/fan-in, in place: the libraries' own inits
    (std 0.02, zero heads) give logits near 1e-9, against which any parity bound is met by a
    broken export too. With these, logits differ between images by whole units."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif any(part in name for part in LAYER_SCALES):  # 1e-5 layer scales would hide every block
                param.fill_(1.0)
    return module


def timm_tiny(name: str, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)  # what spread leaves (biases, tokens' 1-D parts) comes from the global generator
    architecture = Architecture(name, dict(TINY))
    module = spread(build_architecture(architecture), seed).eval()
    return LoadedModel(module, data_config_for(module), name, architecture)


def hf_folder(folder: Path, kind: str = "vit", seed: int = 0) -> Path:
    """A transformers classifier of `kind` (vit, deit, deit-teacher, beit, dinov2) saved with
    save_pretrained, beside the image processor its family ships with."""
    import transformers

    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    labels = {"num_labels": 10, "id2label": {i: f"class{i}" for i in range(10)}}
    torch.manual_seed(seed)
    if kind == "vit":
        model = transformers.ViTForImageClassification(
            transformers.ViTConfig(image_size=32, patch_size=8, **shape, **labels)
        )
        processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    elif kind in ("deit", "deit-teacher"):
        config = transformers.DeiTConfig(image_size=32, patch_size=8, **shape, **labels)
        builder = (
            transformers.DeiTForImageClassification
            if kind == "deit"
            else transformers.DeiTForImageClassificationWithTeacher
        )
        model = builder(config)
        processor = transformers.DeiTImageProcessor(
            size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}
        )
    elif kind == "beit":
        config = transformers.BeitConfig(
            image_size=32, patch_size=8, use_relative_position_bias=True, use_mean_pooling=True, **shape, **labels
        )
        model = transformers.BeitForImageClassification(config)
        processor = transformers.BeitImageProcessor(
            size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True
        )
    elif kind == "dinov2":
        model = transformers.Dinov2ForImageClassification(
            transformers.Dinov2Config(image_size=32, patch_size=8, **shape, **labels)
        )
        processor = transformers.BitImageProcessor(
            size={"shortest_edge": 36},
            crop_size={"height": 32, "width": 32},
            do_center_crop=True,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    else:
        raise ValueError(kind)
    spread(model, seed).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def hf_tiny(folder: Path, kind: str = "vit", seed: int = 0) -> LoadedModel:
    return load_model(str(hf_folder(folder, kind, seed)))


def torchvision_tiny(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    architecture = Architecture(
        "torchvision:VisionTransformer",
        {
            "image_size": 32,
            "patch_size": 8,
            "num_layers": 2,
            "num_heads": 2,
            "hidden_dim": 32,
            "mlp_dim": 64,
            "num_classes": 10,
        },
    )
    module = spread(build_architecture(architecture), seed).eval()
    return LoadedModel(module, data_config_for(module, arch=architecture), architecture.name, architecture)
