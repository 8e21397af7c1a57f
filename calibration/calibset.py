"""Calibration sets: N real images drawn reproducibly from a source, preprocessed once by the
model's DataConfig, cached on disk, and served to ONNX Runtime and NNCF alike.

The same object also feeds parity checks (with `exclude=` the calibration images, so a model
is never verified on the images it was calibrated on). Every image is identified by its name
in the source and by the sha256 of its uint8 pixels, which the artifact manifest records.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cpu import batch_outgrows_memory
from ..core.errors import VitedgeError
from ..core.io import write_bytes_atomic
from .preprocess import DataConfig, input_pixels, preprocess_image
from .sources import UNREADABLE_NPZ, ImageSet, cache_dir, subset_indices

CACHE_VERSION = 1
DEFAULT_CALIB_SAMPLES = 256  # what a calibration draws when nobody asked for a count, if the source has them
MIN_CALIB_SAMPLES = 32  # below this, int8 activation ranges follow a handful of images' outliers


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """N preprocessed images (float32 N×3×H×W) and where each came from."""

    inputs: np.ndarray
    identities: tuple[str, ...]
    image_sha256: tuple[str, ...]
    source: str
    seed: int
    indices: tuple[int, ...] = ()  # positions in the source, for `exclude=` of a later draw
    defaulted: bool = False  # the count was not asked for: min(default, what the source holds)
    available: int = 0  # images of the source this draw could use (exclusions and hold-out aside)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self.inputs[start : start + batch_size]

    def ort_reader(self, input_name: str, batch_size: int = 1):  # noqa: ANN201 - ORT's CalibrationDataReader
        """An ONNX Runtime `CalibrationDataReader` over these images (rewindable)."""
        from onnxruntime.quantization import CalibrationDataReader

        inputs = self.inputs

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.position = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                if self.position >= len(inputs):
                    return None
                batch = inputs[self.position : self.position + batch_size]
                self.position += batch_size
                return {input_name: np.ascontiguousarray(batch)}

            def rewind(self) -> None:
                self.position = 0

            def __len__(self) -> int:
                return -(-len(inputs) // batch_size)

        return _Reader()

    def nncf_dataset(self, batch_size: int = 1):  # noqa: ANN201 - nncf.Dataset (nncf imports lazily: ~2 s)
        """An `nncf.Dataset` of float32 batches, ready for `nncf.quantize`."""
        import nncf

        return nncf.Dataset(list(self.batches(batch_size)))

    def summary(self) -> str:
        """The line a command prints before using the set: how many images, from where, and why that many."""
        why = ""
        if self.defaulted and len(self) < DEFAULT_CALIB_SAMPLES:
            why = f" (all it can spare; the default is up to {DEFAULT_CALIB_SAMPLES})"
        elif self.defaulted:
            why = " (the default count)"
        return f"calibrating on {len(self)} images of {self.source}{why}"

    def manifest(self) -> dict[str, Any]:
        """What an artifact records about the images it was calibrated on."""
        return {
            "source": self.source,
            "count": len(self),
            "seed": self.seed,
            "identities": list(self.identities),
            "image_sha256": list(self.image_sha256),
        }


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of an image's uint8 H×W×3 pixels (C order), independent of its file encoding."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def _allowed(images: ImageSet, exclude: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(excluded positions, the positions a draw may use)."""
    excluded = np.unique(np.asarray(list(exclude), dtype=np.int64))
    return excluded, np.setdiff1d(np.arange(images.count), excluded)


def resolve_count(
    images: ImageSet,
    count: int | None,
    *,
    exclude: Sequence[int] = (),
    default: int = DEFAULT_CALIB_SAMPLES,
    hold_out: int = 0,
) -> int:
    """The one place a count nobody asked for (None) becomes a number: `default`, or fewer when
    the source holds fewer, less `hold_out` images left undrawn for a later held-out draw. An
    explicit count is returned as asked: `draw_indices` refuses it if the source is too small."""
    if count is not None:
        return count
    usable = len(_allowed(images, exclude)[1])
    spare = usable - hold_out if usable - hold_out >= 1 else usable
    if spare < 1:
        raise VitedgeError(
            f"{images.name} has no usable images left to draw ({images.count} found, {usable} not excluded)",
            "add images to the source",
        )
    return min(default, spare)


def draw_indices(images: ImageSet, count: int, *, seed: int = 0, exclude: Sequence[int] = ()) -> np.ndarray:
    """`count` source positions, reproducible and class-balanced, never one in `exclude`."""
    excluded, allowed = _allowed(images, exclude)
    if count < 1:
        raise VitedgeError(f"asked for {count} images from {images.name}", "ask for at least 1 image")
    if count > len(allowed):
        skipped = f", {len(images.skipped)} file(s) skipped" if images.skipped else ""
        held = f", {len(excluded)} held out for calibration" if len(excluded) else ""
        raise VitedgeError(
            f"asked for {count} images but {images.name} has only {len(allowed)} usable readable images ({images.count} found{skipped}{held})",
            f"add images to the source, ask for at most {len(allowed)}, or leave the count out to use what it has",
        )
    view = ImageSet(
        name=images.name,
        count=len(allowed),
        get=lambda i: images.get(int(allowed[i])),
        labels=None if images.labels is None else np.asarray(images.labels)[allowed],
        class_names=images.class_names,
    )
    return allowed[subset_indices(view, count, seed=seed)]


def indices_of(images: ImageSet, identities: Sequence[str]) -> list[int]:
    """Source positions of the images named `identities` (those not in the source are ignored)."""
    wanted = set(identities)
    return [i for i in range(images.count) if images.identity(i) in wanted]


def _source_fingerprint(images: ImageSet) -> list[Any]:
    """What makes two opens of a source the same: its name, and for files their size and mtime."""
    paths = list(images.identities) or [images.name]
    stats = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        stats.append((path, stat.st_size, stat.st_mtime_ns))
    return [images.name, images.count, stats]


def _cache_key(images: ImageSet, config: DataConfig, count: int, seed: int, exclude: Sequence[int]) -> str:
    key = {
        "version": CACHE_VERSION,
        "source": _source_fingerprint(images),
        "config": {k: v for k, v in config.to_dict().items() if k not in ("labels", "num_classes")},
        "count": count,
        "seed": seed,
        "exclude": sorted(int(i) for i in exclude),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:32]


def _read_cache(path: Path, source: str, seed: int) -> CalibrationSet | None:
    """A cache entry, or None when it is unreadable or damaged (then it is rebuilt, never trusted)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            calib = CalibrationSet(
                inputs=data["inputs"],
                identities=tuple(str(s) for s in data["identities"]),
                image_sha256=tuple(str(s) for s in data["image_sha256"]),
                source=source,
                seed=seed,
                indices=tuple(int(i) for i in data["indices"]),
            )
    except (*UNREADABLE_NPZ, KeyError):
        return None
    count = len(calib.inputs)
    if (
        calib.inputs.dtype != np.float32
        or not np.isfinite(calib.inputs).all()
        or not count == len(calib.identities) == len(calib.image_sha256) == len(calib.indices)
    ):
        return None
    return calib


def _write_cache(path: Path, calib: CalibrationSet) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        inputs=calib.inputs,
        identities=np.array(calib.identities),
        image_sha256=np.array(calib.image_sha256),
        indices=np.array(calib.indices, dtype=np.int64),
    )
    write_bytes_atomic(path, buffer.getvalue())


def _warn_if_few(calib: CalibrationSet, minimum: int) -> None:
    """A defaulted draw that came out small is allowed (the user has what they have) but named."""
    if calib.defaulted and len(calib) < minimum:
        warnings.warn(
            f"calibrating on only {len(calib)} images of {calib.source} (fewer than {minimum}): int8 ranges "
            "from so few images follow their outliers and can cost accuracy; add images to the source",
            stacklevel=3,
        )


def build_calibration_set(
    images: ImageSet,
    config: DataConfig,
    count: int | None = None,
    *,
    seed: int = 0,
    exclude: Sequence[int] = (),
    cache: bool = True,
    default: int = DEFAULT_CALIB_SAMPLES,
    hold_out: int = 0,
    warn_below: int = MIN_CALIB_SAMPLES,
) -> CalibrationSet:
    """Draw `count` images (see `draw_indices`; None: see `resolve_count`), preprocess them by
    `config`, and cache the result under `cache_dir()/calibration` keyed by source,
    preprocessing, count, seed and exclusions (parity sets pass `cache=False`: they are larger
    and used once). A defaulted draw below `warn_below` images warns."""
    resolved = resolve_count(images, count, exclude=exclude, default=default, hold_out=hold_out)
    calib = _build(images, config, resolved, seed=seed, exclude=exclude, cache=cache)
    calib = replace(calib, defaulted=count is None, available=len(_allowed(images, exclude)[1]))
    _warn_if_few(calib, warn_below)
    return calib


def input_array(count: int, config: DataConfig, dtype: str = "float32") -> np.ndarray:
    """Room for `count` preprocessed images (float32 N×3×H×W network inputs, or uint8 N×H×W×3
    pixels at the input size), or one line before any work where they alone outgrow this
    machine's memory (`--samples all` of a 224-pixel model is 6 GB of float32 for CIFAR-10's
    test set; the out-of-memory killer otherwise ends the command minutes in)."""
    height, width = config.image_size
    shape = (count, 3, height, width) if dtype == "float32" else (count, height, width, 3)
    if too_big := batch_outgrows_memory(count, shape[1:], what=f"{count} images", dtype=dtype):
        raise VitedgeError(
            too_big,
            "ask for fewer images: --samples, --verify-samples, --calib-samples or --data-count (in a recipe, samples)",
        )
    return np.empty(shape, dtype=dtype)


def preprocess_images(images: Iterable[np.ndarray], count: int, config: DataConfig) -> np.ndarray:
    """`count` images → float32 N×3×H×W, filled in place (no second copy, as stacking makes)."""
    inputs = input_array(count, config)
    for row, pixels in enumerate(images):
        inputs[row] = preprocess_image(pixels, config)
    return inputs


def images_at_input_size(images: Iterable[np.ndarray], count: int, config: DataConfig) -> np.ndarray:
    """`count` images → uint8 N×H×W×3 at the network's input size, filled in place: what
    `preprocess_images` gives before normalization, for sets held in memory a batch of which
    is normalized at a time (training: CIFAR-10's training set at 224 pixels is 7.5 GB as
    uint8, 30 GB as float32 inputs)."""
    pixels = input_array(count, config, dtype="uint8")
    for row, image in enumerate(images):
        pixels[row] = input_pixels(image, config)
    return pixels


def _build(
    images: ImageSet, config: DataConfig, count: int, *, seed: int, exclude: Sequence[int], cache: bool
) -> CalibrationSet:
    path = cache_dir() / "calibration" / f"{_cache_key(images, config, count, seed, exclude)}.npz"
    if cache and path.is_file():
        cached = _read_cache(path, images.name, seed)
        if cached is not None:
            return cached
    indices = draw_indices(images, count, seed=seed, exclude=exclude)
    inputs = input_array(len(indices), config)
    digests = []
    for row, index in enumerate(indices):
        pixels = images.get(int(index))
        digests.append(pixel_sha256(pixels))
        inputs[row] = preprocess_image(pixels, config)
    calib = CalibrationSet(
        inputs=inputs,
        identities=tuple(images.identity(int(i)) for i in indices),
        image_sha256=tuple(digests),
        source=images.name,
        seed=seed,
        indices=tuple(int(i) for i in indices),
    )
    if cache:
        try:
            _write_cache(path, calib)
        except (OSError, VitedgeError):
            pass  # a read-only or full cache folder costs time next run, not correctness
    return calib
