"""A model's own preprocessing as our DataConfig: timm's pretrained config, torchvision's
published weights transforms, or a transformers image processor config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..calibration.preprocess import DataConfig
from ..core.errors import VitedgeError, first_line
from ..core.manifest import MANIFEST
from .families import TORCHVISION_PREFIX, HFImageClassifier, vit_family
from .types import Architecture


def _imagenet_labels(num_classes: int) -> tuple[str, ...]:
    import timm.data

    if num_classes != 1000 or not hasattr(timm.data, "ImageNetInfo"):
        return ()
    return tuple(name.split(",")[0] for name in timm.data.ImageNetInfo().label_descriptions(as_dict=False))


def _crop_pct(crop: int, resized: int) -> float:
    """crop/resized, nudged down where float division would make timm's floor(crop / pct) land
    one pixel short of `resized` (32 / (32 / 36) is 35.99...)."""
    pct = crop / resized
    while math.floor(crop / pct) < resized:
        pct = math.nextafter(pct, 0.0)
    return pct


def _torchvision_data_config(module: nn.Module, name: str) -> DataConfig:
    """The eval transform torchvision publishes with the builder's weights (`weights.transforms()`:
    resize the short side, center crop, normalize); the weights entry whose crop fits the
    module's image size, else the default entry's crop ratio at the module's size."""
    import torchvision

    try:
        entries = torchvision.models.get_model_weights(name)
    except ValueError:  # the class itself, or a builder without weights: the ViT-B/16 recipe
        entries = torchvision.models.ViT_B_16_Weights
    size = int(getattr(module, "image_size", 0) or entries.DEFAULT.transforms().crop_size[0])  # CNNs: any size
    chosen = next((w for w in (entries.DEFAULT, *entries) if w.transforms().crop_size[0] == size), entries.DEFAULT)
    preset = chosen.transforms()
    ratio = _crop_pct(preset.crop_size[0], preset.resize_size[0])
    categories = tuple(chosen.meta.get("categories", ()))
    num_classes = int(getattr(module, "num_classes", 0) or len(categories))
    return DataConfig(
        input_size=(3, size, size),
        interpolation=preset.interpolation.value,
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        crop_pct=_crop_pct(size, math.floor(size / ratio)),
        crop_mode="center",
        num_classes=num_classes,
        labels=categories if len(categories) == num_classes else (),
    )


def _hf_geometry(settings: dict[str, Any], source: str) -> tuple[int, int, float, str]:
    """(height, width, crop_pct, crop_mode) of a transformers image processor's resize + crop:
    a fixed height×width resize is timm's "squash", a shortest-edge resize its "center"."""
    size = settings.get("size") or {}
    crop = settings.get("crop_size") if settings.get("do_center_crop") else None
    if not settings.get("do_resize", True):
        raise VitedgeError(
            f"the image processor of {source} does not resize", "set do_resize and size in preprocessor_config.json"
        )
    if "height" in size and "width" in size:
        height, width = (int(crop["height"]), int(crop["width"])) if crop else (int(size["height"]), int(size["width"]))
        pct = _crop_pct(height, int(size["height"]))
        if math.floor(width / pct) != int(size["width"]):
            raise VitedgeError(
                f"the image processor of {source} crops height and width by different ratios ({size} → {crop})",
                "use a processor whose crop keeps the resize's aspect ratio",
            )
        return height, width, pct, "squash"
    if "shortest_edge" in size and crop and int(crop["height"]) == int(crop["width"]):
        side = int(crop["height"])
        return side, side, _crop_pct(side, int(size["shortest_edge"])), "center"
    raise VitedgeError(
        f"the image processor of {source} resizes to {size} with crop {crop}, which gives no fixed input size",
        "use size {height, width}, or shortest_edge with a square center crop",
    )


def hf_data_config(source: str, config: Any) -> DataConfig:
    """A transformers model's own image processor (preprocessor_config.json, read through
    AutoImageProcessor) as our DataConfig; labels from the model config's id2label."""
    import transformers

    hint = "save the model's processor beside it: AutoImageProcessor.from_pretrained(...).save_pretrained(folder)"
    if Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").is_file():
        raise VitedgeError(
            f"{source} has no preprocessor_config.json (how its images are resized and normalized)", hint
        )
    try:
        settings = transformers.AutoImageProcessor.from_pretrained(source).to_dict()
    except (OSError, ValueError, KeyError) as exc:
        raise VitedgeError(f"{source} has no usable image processor config ({first_line(exc, 160)})", hint) from None
    try:
        return _processor_data_config(settings, config, source)
    except (ValueError, TypeError, KeyError) as exc:  # a hand-edited value: a string size, 2 means, std 0
        raise VitedgeError(
            f"the image processor of {source} is not usable: {first_line(exc, 200)}",
            "fix its preprocessor_config.json, or save the model's processor again",
        ) from None


def _processor_data_config(settings: dict[str, Any], config: Any, source: str) -> DataConfig:
    from PIL import Image

    if (
        settings.get("do_rescale", True) is False
        or abs(float(settings.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9
    ):
        raise VitedgeError(
            f"the image processor of {source} does not scale pixels by 1/255",
            "vitedge feeds pixels scaled to 0..1; set do_rescale true with rescale_factor 1/255",
        )
    height, width, pct, mode = _hf_geometry(settings, source)
    normalize = settings.get("do_normalize", True)
    mean, std = (settings.get("image_mean"), settings.get("image_std")) if normalize else (0.0, 1.0)
    mean, std = (
        ([mean] * 3 if isinstance(mean, (int, float)) else mean),
        ([std] * 3 if isinstance(std, (int, float)) else std),
    )
    labels = tuple(str(config.id2label[i]) for i in range(int(config.num_labels)))
    generic = all(label == f"LABEL_{i}" for i, label in enumerate(labels))
    return DataConfig(
        input_size=(3, height, width),
        interpolation=Image.Resampling(int(settings.get("resample", Image.Resampling.BILINEAR))).name.lower(),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        crop_pct=pct,
        crop_mode=mode,
        num_classes=int(config.num_labels),
        labels=() if generic else labels,
    )


def data_config_for(module: nn.Module, labels: tuple[str, ...] = (), *, arch: Architecture | None = None) -> DataConfig:
    """timm's pretrained config (or torchvision's weights transforms) → our DataConfig
    (ImageNet labels when it has 1000 classes). A transformers model's comes from its image
    processor (`hf_data_config`), which the module does not carry."""
    import timm.data

    if isinstance(module, HFImageClassifier):
        raise VitedgeError(
            "a transformers model needs its image processor config for preprocessing",
            "load it from its save_pretrained folder, or save a checkpoint that records data_config",
        )
    if vit_family(module) == "torchvision-vit" or (arch is not None and arch.name.startswith(TORCHVISION_PREFIX)):
        return _torchvision_data_config(module, arch.name.removeprefix(TORCHVISION_PREFIX) if arch else "vit_b_16")
    resolved = timm.data.resolve_data_config({}, model=module)
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    # the pretrained config keeps its 224 px when the model was built at another img_size
    built = getattr(getattr(module, "patch_embed", None), "img_size", None)
    size = (3, *(int(v) for v in built)) if built is not None else tuple(int(v) for v in resolved["input_size"])
    return DataConfig(
        input_size=size,
        interpolation=str(resolved.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in resolved["mean"]),
        std=tuple(float(v) for v in resolved["std"]),
        crop_pct=float(resolved.get("crop_pct", 0.875)),
        crop_mode=str(resolved.get("crop_mode", "center")),
        num_classes=num_classes,
        labels=labels or _imagenet_labels(num_classes),
    )


def recorded_data_config(data: object, where: str, hint: str) -> DataConfig:
    """A DataConfig read back from a file (a checkpoint's metadata, an artifact's manifest):
    a damaged or hand-edited one is one user error naming `where`, not a traceback."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return DataConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise VitedgeError(f"the data_config recorded in {where} is invalid: {first_line(exc)}", hint) from None


def artifact_data_config(folder: Path, manifest: dict[str, Any]) -> DataConfig:
    """The preprocessing an exported artifact records in its manifest (`read_manifest`'s)."""
    return recorded_data_config(
        manifest["data_config"], str(Path(folder) / MANIFEST), "re-export the artifact with `vitedge export`"
    )
