"""A whole `vitedge compress`: load a model, read the images its steps use, apply the steps
(`compress.registry.apply_steps`), save the result with its records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..calibration.preprocess import DataConfig
from ..calibration.sources import ImageSet, open_source
from ..core.errors import VitedgeError
from ..models import LoadedModel, save_checkpoint
from .registry import apply_steps, get_step, load_model, parse_step_spec
from .step import StepData


def step_data(images: ImageSet, config: DataConfig, count: int | None = None, *, seed: int = 0) -> StepData:
    """Labelled images of an opened source (opened once per command, before the model loads),
    preprocessed for the model: (inputs, labels)."""
    from .train import images_to_tensors

    return images_to_tensors(images, config, count or None, seed=seed, needed_by="which steps that use data need")


def compress_to_file(
    model: str,
    steps: list[str],
    out: Path,
    *,
    data: str | None = None,
    data_count: int | None = None,
    arch: str | None = None,
    replace: bool = True,
    **extra: Any,
) -> LoadedModel:
    """`vitedge compress`: load `model`, apply `steps` (spec strings), save to `out`."""
    from .train import check_training_images

    out = Path(out)
    if out.suffix != ".safetensors":
        raise VitedgeError(
            f"--out {out} must end in .safetensors",
            "compressed models are saved as .safetensors with their step records",
        )
    specs = [parse_step_spec(spec) for spec in steps]
    if not specs:
        raise VitedgeError("no --step given", "e.g. --step prune-structured:ratio=0.25 --step tokens:r=4")
    if data_count and not data:
        raise VitedgeError("--data-count is for the images of --data, and no --data is given", "add --data SOURCE")
    if data and not any("data" in get_step(name).uses for name, _ in specs):
        raise VitedgeError(  # else the file would record images that no step looked at
            f"--data {data} is for steps that use images, and no step of {', '.join(name for name, _ in specs)} does",
            "drop --data, or add a step that uses it (prune-taylor, prune-* importance=taylor, distill, finetune)",
        )
    images = open_source(data) if data else None  # a mistyped --data is named before the model loads
    if images is not None:
        check_training_images(images, data_count, None, needed_by="which steps that use data need")
    loaded = load_model(model, arch=arch)
    inputs = step_data(images, loaded.data_config, data_count) if images is not None else None
    compressed = apply_steps(loaded, specs, data=inputs)
    save_checkpoint(compressed, out, replace=replace, made_by="vitedge compress", compress_data=data, **extra)
    return compressed
