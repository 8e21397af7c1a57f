"""Intake of every ViT family: timm (VisionTransformer with distillation token or registers,
Eva, Beit, RelPos), transformers save_pretrained folders and torchvision; each one's
preprocessing comes from its own config; checkpoints rebuild them; non-ViTs stay refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.families import TIMM_MODELS, hf_folder, hf_tiny, timm_tiny, torchvision_tiny
from vitedge.calibration.preprocess import preprocess_batch
from vitedge.core.errors import VitedgeError
from vitedge.models import load_model, require_vit, save_checkpoint, vit_family

# each timm name's own pretrained config: (interpolation, crop_pct, mean[0]); input size is the built one
TIMM_PREPROCESSING = {
    "deit_small_distilled_patch16_224": ("bicubic", 0.9, 0.485),
    "vit_base_patch16_reg4_gap_256": ("bicubic", 0.9, 0.5),
    "eva02_small_patch14_224": ("bicubic", 0.9, 0.48145466),  # OpenAI CLIP mean
    "vit_base_patch16_rope_reg1_gap_256": ("bicubic", 0.95, 0.5),
    "beit_base_patch16_224": ("bicubic", 0.9, 0.5),
    "vit_relpos_small_patch16_224": ("bicubic", 0.9, 0.5),
}


@pytest.mark.parametrize("name", sorted(TIMM_MODELS))
def test_timm_families_are_vits_with_their_own_preprocessing(name):
    loaded = timm_tiny(name)
    assert vit_family(loaded.module) == TIMM_MODELS[name]
    require_vit(loaded, "export")
    config = loaded.data_config
    interpolation, crop_pct, mean = TIMM_PREPROCESSING[name]
    assert (config.input_size, config.interpolation, config.crop_pct) == ((3, 32, 32), interpolation, crop_pct)
    assert config.mean[0] == pytest.approx(mean) and config.num_classes == 10


@pytest.mark.parametrize(
    ("kind", "family", "model_class"),
    [
        ("vit", "hf-vit", "ViTForImageClassification"),
        ("deit", "hf-vit", "DeiTForImageClassification"),
        ("deit-teacher", "hf-vit", "DeiTForImageClassificationWithTeacher"),
        ("beit", "hf-beit", "BeitForImageClassification"),
        ("dinov2", "hf-dinov2", "Dinov2ForImageClassification"),
    ],
)
def test_transformers_folder_loads_as_a_vit_returning_logits(tmp_path, kind, family, model_class):
    loaded = hf_tiny(tmp_path / kind, kind)
    assert vit_family(loaded.module) == family
    assert loaded.architecture.name == f"transformers:{model_class}"
    assert loaded.data_config.input_size == (3, 32, 32) and loaded.data_config.labels[3] == "class3"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = loaded.module(x)
        expected = type(loaded.module.model).from_pretrained(str(tmp_path / kind))(pixel_values=x).logits
    assert logits.shape == (4, 10) and float(logits.std()) > 0.1
    assert torch.equal(logits, expected)


@pytest.mark.parametrize(
    ("kind", "geometry"),
    [
        ("vit", (1.0, "squash", "bilinear")),
        ("deit", (32 / 36, "squash", "bicubic")),
        ("dinov2", (32 / 36, "center", "bicubic")),
    ],
)
def test_transformers_preprocessing_is_the_image_processors(tmp_path, cifar_test, kind, geometry):
    """Our numpy/Pillow pipeline, fed the DataConfig read from preprocessor_config.json, gives
    the pixels transformers' own (PIL-based) processor gives, on real CIFAR-10 images."""
    import transformers

    folder = hf_folder(tmp_path / kind, kind)
    loaded = load_model(str(folder))
    crop_pct, mode, interpolation = geometry
    assert loaded.data_config.crop_pct == pytest.approx(crop_pct) and loaded.data_config.crop_mode == mode
    assert loaded.data_config.interpolation == interpolation
    images = [cifar_test.get(i) for i in range(8)]
    ours = preprocess_batch(images, loaded.data_config)
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), use_fast=False)
    theirs = processor(images=[np.asarray(image) for image in images], return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (8, 3, 32, 32)
    assert float(np.abs(ours - theirs).max()) < 1e-5


def test_transformers_checkpoint_rebuilds_from_its_recorded_config(tmp_path):
    loaded = hf_tiny(tmp_path / "vit", "vit")
    path = save_checkpoint(loaded, tmp_path / "vit.safetensors")
    back = load_model(str(path))
    assert back.architecture == loaded.architecture and back.data_config == loaded.data_config
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.module(x), loaded.module(x))


def test_torchvision_vit_and_its_weights_transforms(tmp_path):
    loaded = torchvision_tiny()
    assert vit_family(loaded.module) == "torchvision-vit"
    assert (loaded.data_config.interpolation, loaded.data_config.crop_mode) == ("bilinear", "center")
    assert loaded.data_config.mean == pytest.approx((0.485, 0.456, 0.406))
    back = load_model(str(save_checkpoint(loaded, tmp_path / "tv.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.module(x), loaded.module(x))
    builder = load_model("torchvision:vit_b_16")  # torchvision's resize 256 / crop 224 of IMAGENET1K_V1
    assert builder.data_config.input_size == (3, 224, 224) and builder.data_config.crop_pct == pytest.approx(0.875)
    assert builder.data_config.labels[0] == "tench" and vit_family(builder.module) == "torchvision-vit"


def test_non_vits_are_still_refused(tmp_path):
    import transformers

    folder = tmp_path / "resnet"
    transformers.ResNetForImageClassification(
        transformers.ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8, num_labels=10)
    ).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    for spec, kind in (
        (str(folder), "ResNetForImageClassification"),
        ("torchvision:resnet18", "ResNet"),
        ("resnet18", "ResNet"),
    ):
        with pytest.raises(VitedgeError) as refused:
            require_vit(load_model(spec), "export")
        assert refused.value.args[0] == f"export needs a Vision Transformer, but {spec} is a {kind}"


def test_transformers_folders_that_cannot_be_exported_are_refused(tmp_path):
    import transformers

    headless = tmp_path / "headless"
    transformers.ViTModel(
        transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(headless)
    with pytest.raises(VitedgeError, match="holds a ViTModel model, not an image classifier"):
        load_model(str(headless))
    no_processor = tmp_path / "bare"
    hf_folder(no_processor, "vit")
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(VitedgeError, match="bare has no preprocessor_config.json"):
        load_model(str(no_processor))


@pytest.mark.parametrize(
    ("edit", "refused"),
    [
        ({"image_mean": [0.5, 0.5]}, "mean and std need one finite number per RGB channel"),
        ({"image_std": [0, 0.5, 0.5]}, "std must be positive"),
        ({"size": {"height": -5, "width": 32}}, "input_size must be (3, height, width) with positive sizes"),
        ({"size": {"height": "big", "width": 32}}, "invalid literal"),
        ({"resample": 99}, "99 is not a valid Resampling"),
        (None, "not a valid JSON file"),
    ],
    ids=["two-means", "zero-std", "negative-size", "text-size", "unknown-resample", "not-json"],
)
def test_a_hand_edited_image_processor_is_named_not_a_traceback(tmp_path, edit, refused):
    """Every value is checked where a transformers folder is read (before: two means exported as
    if right, the others ended in a ValueError traceback). The folder is a deep one: the reason
    transformers gives names the path first and what is wrong last, which a long path once cut off
    ("...preprocessor_config.json' is not a valid JSON f")."""
    import json

    folder = hf_folder(tmp_path.joinpath(*["a-folder-some-levels-down"] * 4, "edited"), "vit")
    config = folder / "preprocessor_config.json"
    config.write_text("{oops" if edit is None else json.dumps(json.loads(config.read_text()) | edit))
    with pytest.raises(VitedgeError) as error:
        load_model(str(folder))
    assert refused in error.value.message and "edited" in error.value.message


def test_a_cut_transformers_weights_file_is_named_not_a_traceback(tmp_path):
    folder = hf_folder(tmp_path / "cut", "vit")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(
        VitedgeError, match="cannot load the transformers model .*cut: Error while deserializing header"
    ):
        load_model(str(folder))
