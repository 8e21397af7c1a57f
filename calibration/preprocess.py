"""The one preprocessing implementation: resize, center crop, normalize exactly as a model's
DataConfig says, in numpy + Pillow only.

Calibration, evaluation, parity and the board runner all call this module, and the bundle
vendors this very file, so a model never sees differently prepared pixels on the board than
on the desktop (the most common cause of "export lost accuracy" reports). It reproduces
timm's eval transform (`transforms_imagenet_eval`, crop_mode "center" or "squash") pixel for
pixel, because torchvision applies the same Pillow resize.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

_PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "random": Image.Resampling.BILINEAR,  # timm's train-time choice; eval uses bilinear
}
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input pixels, and what its outputs mean."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    crop_mode: str = "center"
    num_classes: int = 1000
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; one of {sorted(_PIL_INTERPOLATION)}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unsupported crop_mode {self.crop_mode!r}; one of {CROP_MODES}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std must be positive numbers (normalize divides by it), got {tuple(self.std)}")
        if len(self.input_size) != 3 or self.input_size[0] != 3 or not all(int(v) == v > 0 for v in self.input_size):
            raise ValueError(f"input_size must be (3, height, width) with positive sizes, got {tuple(self.input_size)}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(m) for m in self.mean):
            raise ValueError(
                f"mean and std need one finite number per RGB channel, got {tuple(self.mean)} and {tuple(self.std)}"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return int(self.input_size[1]), int(self.input_size[2])

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("input_size", "mean", "std", "labels"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB: EXIF orientation applied, alpha composited on white,
    16-bit and float images scaled (not clipped) to 0..255, CMYK/palette/grayscale converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        array = np.asarray(image)
        if array.dtype.kind in "iu" and array.max(initial=0) > 255:
            array = array.astype(np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _resize_short_side(image: Image.Image, short: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    return image if size == image.size else image.resize(size, resample)


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    img_w, img_h = image.size
    if width > img_w or height > img_h:  # torchvision pads with zeros before cropping
        padded = Image.new("RGB", (max(width, img_w), max(height, img_h)))
        padded.paste(image, ((padded.width - img_w) // 2, (padded.height - img_h) // 2))
        image, (img_w, img_h) = padded, padded.size
    top = int(round((img_h - height) / 2.0))
    left = int(round((img_w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def resize_and_crop(image: Image.Image, config: DataConfig) -> Image.Image:
    """The geometric half of timm's eval transform, on an RGB Pillow image."""
    height, width = config.image_size
    resample = _PIL_INTERPOLATION[config.interpolation]
    scale = (math.floor(height / config.crop_pct), math.floor(width / config.crop_pct))
    if config.crop_mode == "squash":
        if image.size != (scale[1], scale[0]):
            image = image.resize((scale[1], scale[0]), resample)
    elif scale[0] == scale[1]:
        image = _resize_short_side(image, scale[0], resample)
    else:  # timm's ResizeKeepRatio: one ratio that fits both target sides
        ratio = max(scale[0] / image.height, scale[1] / image.width)
        size = (round(image.width * ratio), round(image.height * ratio))
        image = image if size == image.size else image.resize(size, resample)
    return _center_crop(image, height, width)


def normalize(pixels: np.ndarray, config: DataConfig) -> np.ndarray:
    """uint8 N×H×W×3 (or H×W×3) → float32 N×3×H×W (or 3×H×W), scaled and normalized."""
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    normalized = (scaled - mean) / std
    axes = (0, 3, 1, 2) if normalized.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(normalized.transpose(axes))


def input_pixels(image: Image.Image | np.ndarray, config: DataConfig) -> np.ndarray:
    """One image (Pillow, or uint8 H×W×3 RGB array) → uint8 H×W×3 at the network's input size:
    everything but normalization, which comes last, so these bytes normalize to exactly the
    network input (a quarter of its float32 size to hold)."""
    if isinstance(image, np.ndarray):
        if image.shape[:2] == config.image_size and config.crop_pct == 1.0:
            return image
        image = Image.fromarray(image, mode="RGB")
    return np.asarray(resize_and_crop(to_rgb(image), config))


def preprocess_image(image: Image.Image | np.ndarray, config: DataConfig) -> np.ndarray:
    """One image (Pillow, or uint8 H×W×3 RGB array) → float32 3×H×W network input."""
    return normalize(input_pixels(image, config), config)


def preprocess_batch(images: Iterable[Image.Image | np.ndarray], config: DataConfig) -> np.ndarray:
    """Images → float32 N×3×H×W batch."""
    arrays = [preprocess_image(image, config) for image in images]
    if not arrays:
        height, width = config.image_size
        return np.zeros((0, 3, height, width), dtype=np.float32)
    return np.stack(arrays)
