"""One way to turn a model spec into a torch module and its DataConfig, used by every command.

Specs: the embedded default `vitedge-cifar10`; a timm name (`vit_base_patch16_224`, with
`pretrained=True` going through timm's normal hub/cache loading); `hf-hub:org/name`; a Hugging
Face transformers folder written by `save_pretrained` (weights from safetensors only) or
`transformers:org/name` from the hub; `torchvision:vit_b_16` (any torchvision builder); a local
`.safetensors` (our own checkpoints carry architecture, DataConfig and compression records in
the header) or `.pth`/`.pt` (loaded with `weights_only=True`, never as arbitrary pickles).
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import VitedgeError, first_line
from ..core.io import shadowed_by_a_path, write_bytes_atomic
from ..core.manifest import is_artifact, sha256_file
from .families import HF_PREFIX, TORCHVISION_PREFIX, HFImageClassifier
from .hub import hub_or_cache
from .preprocessing import data_config_for, hf_data_config, recorded_data_config
from .types import Architecture, LoadedModel, StepRecord

DEFAULT_MODEL = "vitedge-cifar10"
EMBEDDED = {DEFAULT_MODEL: Path(__file__).resolve().parent.parent / "weights" / "vitedge-cifar10.safetensors"}
METADATA_KEY = "vitedge"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def unknown_model_hint(name: str) -> str:
    """The nearest timm names by spelling, so a typo ("vit_bsae_patch16_224") is one edit
    away from working; a substring search would miss a swapped letter."""
    import timm

    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3, cutoff=0.75)
    if not close:
        return "see timm.list_models('vit*') for names, or pass a .safetensors file"
    others = f" (also close: {', '.join(close[1:])})" if len(close) > 1 else ""
    return f"did you mean {close[0]}?{others}"


def _build_timm(arch: Architecture, pretrained: bool) -> nn.Module:
    import timm

    if not arch.name.startswith("hf-hub:") and not timm.is_model(arch.name):
        raise VitedgeError(f"unknown model {arch.name!r}", unknown_model_hint(arch.name))
    reaches_hub = pretrained or arch.name.startswith("hf-hub:")  # an hf-hub: name fetches its config too
    with hub_or_cache(arch.name) if reaches_hub else contextlib.nullcontext():
        return timm.create_model(arch.name, pretrained=pretrained, **arch.kwargs)


def _build_torchvision(arch: Architecture, pretrained: bool) -> nn.Module:
    """`torchvision:<builder>` through torchvision's own registry; `torchvision:VisionTransformer`
    is the class itself, for sizes no builder offers (the builders fix depth and width)."""
    import torchvision

    name = arch.name.removeprefix(TORCHVISION_PREFIX)
    if name == "VisionTransformer":
        return torchvision.models.VisionTransformer(**arch.kwargs)
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        raise VitedgeError(
            f"unknown torchvision model {name!r}",
            f"did you mean torchvision:{close[0]}?" if close else "see torchvision.models.list_models()",
        )
    return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **arch.kwargs)


def _build_transformers(arch: Architecture) -> nn.Module:
    """An empty transformers classifier from the config a checkpoint recorded (weights load after)."""
    import transformers

    config = transformers.AutoConfig.for_model(**arch.kwargs["config"])
    return HFImageClassifier(getattr(transformers, arch.name.removeprefix(HF_PREFIX))(config).float().eval())


def build_architecture(arch: Architecture, *, pretrained: bool = False) -> nn.Module:
    try:
        if arch.name.startswith(HF_PREFIX):
            return _build_transformers(arch)
        if arch.name.startswith(TORCHVISION_PREFIX):
            return _build_torchvision(arch, pretrained)
        return _build_timm(arch, pretrained)
    except (TypeError, ValueError, AssertionError, AttributeError, KeyError) as exc:
        raise VitedgeError(
            f"cannot build {arch.name} with {arch.kwargs}: {exc}", "check the architecture options"
        ) from None
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise VitedgeError(
            f"could not fetch pretrained weights for {arch.name} (offline and not in the cache?): {first_line(exc)}",
            f"pass a local file instead: --model weights.safetensors --arch {arch.name}",
        ) from None


def _classifier_class(config: Any, source: str) -> type:
    """The transformers class a folder's config names, if it is an image classifier (a bare
    encoder such as ViTModel has no logits to export or compare)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(str(config.model_type), ())
    names = (names,) if isinstance(names, str) else tuple(names)
    declared = (getattr(config, "architectures", None) or [None])[0]
    if not names or (declared is not None and declared not in names):
        raise VitedgeError(
            f"{source} holds a {declared or config.model_type} model, not an image classifier",
            "save a *ForImageClassification model (with its classification head) with save_pretrained",
        )
    return getattr(transformers, declared or names[0])


def load_transformers(source: str, *, spec: str, pretrained: bool = True) -> LoadedModel:
    """A transformers image classifier from a save_pretrained folder or a hub id: weights from
    safetensors only (`use_safetensors=True`, never a pickle), or random weights from the config
    when `pretrained` is false; preprocessing from its image processor config."""
    import transformers
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stdout/stderr stay the tool's (export --json prints JSON only)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        model_class = _classifier_class(config, spec)
        model = model_class.from_pretrained(source, use_safetensors=True) if pretrained else model_class(config)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a cut or damaged weights file
        raise VitedgeError(
            f"cannot load the transformers model {spec}: {first_line(exc, 200)}",
            "a folder needs config.json and model.safetensors (save_pretrained's default); a hub id needs the network or the HF cache",
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    module = HFImageClassifier(model.float().eval())
    _refuse_non_finite(module.state_dict(), Path(spec))
    arch = Architecture(
        HF_PREFIX + model_class.__name__, {"config": json.loads(model.config.to_json_string(use_diff=False))}
    )
    weights = Path(source) / "model.safetensors"
    digest = sha256_file(weights) if weights.is_file() else ""
    return LoadedModel(module, hf_data_config(source, model.config), spec, arch, (), digest)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VitedgeError(
            f"{path} is not a readable .safetensors file: {exc}",
            "the file is corrupt or truncated; save or download it again",
        ) from None
    return tensors, metadata


def _read_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types; all mean "refused"
        reason = first_line(exc, 200)
        raise VitedgeError(
            f"refused to load {path}: not a plain weights file ({reason})",
            "vitedge loads .pth files with weights_only=True; re-save the state_dict, or convert to .safetensors",
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VitedgeError(f"{path} does not hold a state_dict of tensors", "save model.state_dict() with torch.save")
    return state


def _refuse_non_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """A diverged training run saves NaN/inf weights; every number the tool would print for
    such a model is garbage, so refuse it at load time and name the first broken tensor."""
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise VitedgeError(
            f"the weights in {path} contain NaN or inf ({broken[0]}{more})",
            "the checkpoint is broken (a diverged training run?); use an earlier checkpoint or retrain",
        )


RECORD_HINT = "re-save the checkpoint with vitedge (compress, train), or restore the metadata it was saved with"


def _sidecar_metadata(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    return _parsed_metadata(sidecar.read_bytes(), sidecar, "fix or delete the metadata file beside the weights")


def _parsed_metadata(text: str | bytes, where: Path, hint: str = RECORD_HINT) -> Any:
    """A checkpoint's recorded metadata (its safetensors header entry, or a .json beside a .pth)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VitedgeError(f"the metadata recorded in {where.name} is not valid JSON: {exc}", hint) from None


def _record_problem(metadata: object) -> str | None:
    """What is wrong with a record the loader reads, in the shape it reads it; None if nothing."""
    if not isinstance(metadata, dict):
        return f"a JSON {type(metadata).__name__}, not an object"
    architecture, steps = metadata.get("architecture"), metadata.get("steps", [])
    if architecture is not None and not (
        isinstance(architecture, dict)
        and isinstance(architecture.get("name"), str)
        and isinstance(architecture.get("kwargs", {}), dict)
    ):
        return "'architecture' must be {name, kwargs}"
    if not isinstance(steps, list) or not all(
        isinstance(step, dict) and isinstance(step.get("name"), str) and isinstance(step.get("options"), dict)
        for step in steps
    ):
        return "'steps' must be a list of {name, options, structure} records"
    return None


def _check_recorded(metadata: object, path: Path) -> None:
    """What a checkpoint says about itself: a damaged or hand-edited record is one line naming
    the file, before the weights are built on it."""
    if problem := _record_problem(metadata):
        raise VitedgeError(f"the metadata recorded in {path.name} is invalid: {problem}", RECORD_HINT)


@contextlib.contextmanager
def _replaying(path: Path) -> Iterator[None]:
    """Building the recorded architecture and replaying the recorded steps read values a
    hand-edited record can break (a head index past the width, a text depth): one line naming
    the file; `--debug` shows the cause."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise VitedgeError(
            f"the architecture or compression steps recorded in {path.name} cannot be rebuilt: {first_line(exc, 200)}",
            RECORD_HINT,
        ) from exc


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: Architecture) -> None:
    try:
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next(
            (
                line.strip()
                for line in str(exc).splitlines()
                if "size mismatch" in line or "Missing" in line or "Unexpected" in line
            ),
            first_line(exc, 200),
        )
        raise VitedgeError(
            f"the weights in {path.name} do not fit {arch.name}: {first}",
            "pass the architecture the weights were trained with (--arch NAME)",
        ) from None
    del result


@dataclass(frozen=True)
class StepReplay:
    """How a checkpoint's recorded compression steps are rebuilt around its weights: the
    module reshaped before they load (pruned widths, swapped blocks), finished after. The
    compress layer supplies it (`compress.registry.load_model`), so loading does not import
    the steps it replays."""

    before_load: Callable[[nn.Module, list[StepRecord]], nn.Module]
    after_load: Callable[[nn.Module, list[StepRecord]], nn.Module]


def load_checkpoint(
    path: Path, *, arch_name: str | None = None, spec: str | None = None, replay: StepReplay | None = None
) -> LoadedModel:
    """A local checkpoint: our own metadata wins; otherwise `arch_name` is required."""
    path = Path(path)
    if is_artifact(path):
        raise VitedgeError(
            f"{path} is an artifact folder written by vitedge export, not a PyTorch model",
            "pass the model it was exported from (its manifest.json names it under source)",
        )
    if path.is_dir():
        raise VitedgeError(
            f"{path} is a folder but not a model: no config.json (transformers) and no manifest.json (vitedge artifact)",
            "pass a .safetensors or .pth file, or a folder written by save_pretrained",
        )
    if not path.is_file():
        raise VitedgeError(f"model file {path} does not exist", "check the path")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise VitedgeError(
            f"{path} is not a PyTorch checkpoint (vitedge reads {', '.join(CHECKPOINT_SUFFIXES)})",
            "an exported model (.onnx, .xml, .pte) is measured and verified through its artifact folder; "
            "pass that folder, or the PyTorch checkpoint",
        )
    if path.suffix == ".safetensors":
        state, header = _read_safetensors(path)
        metadata = _parsed_metadata(header[METADATA_KEY], path) if METADATA_KEY in header else _sidecar_metadata(path)
    else:
        state = _read_torch_checkpoint(path)
        metadata = _sidecar_metadata(path)
    _check_recorded(metadata, path)
    _refuse_non_finite(state, path)
    if "architecture" in metadata:
        arch = Architecture.from_dict(metadata["architecture"])
    elif arch_name:
        arch = Architecture(arch_name, {})
    else:
        raise VitedgeError(
            f"{path.name} does not say which architecture it holds",
            "pass --arch with the timm model name, e.g. --arch vit_small_patch16_224",
        )
    if arch_name and arch_name != arch.name:
        arch = Architecture(arch_name, {})
    head = next((key for key in ("head.weight", "heads.head.weight") if key in state), None)  # timm, torchvision
    if not arch.name.startswith(HF_PREFIX) and "num_classes" not in arch.kwargs and head is not None:
        arch = Architecture(arch.name, {**arch.kwargs, "num_classes": int(state[head].shape[0])})
    records = list(metadata.get("steps", []))
    if records and replay is None:
        raise ValueError(
            f"{path.name} records compression steps: load it with compress.registry.load_model, which replays them"
        )
    with _replaying(path):
        module = replay.before_load(build_architecture(arch), records) if records else build_architecture(arch)
    _load_weights(module, state, path, arch)
    with _replaying(path):
        module = (replay.after_load(module, records) if records else module).eval()
    config = (
        recorded_data_config(
            metadata["data_config"], str(path), "fix the checkpoint's metadata (mean, std, crop_pct, interpolation)"
        )
        if "data_config" in metadata
        else data_config_for(module, arch=arch)
    )
    return LoadedModel(module, config, spec or str(path), arch, tuple(records), sha256_file(path))


def is_transformers_folder(path: Path) -> bool:
    """A transformers `save_pretrained` folder (config.json beside the weights): a model, where
    any other folder a command takes is an artifact."""
    return path.is_dir() and (path / "config.json").is_file()


def has_random_weights(spec: str, *, pretrained: bool) -> bool:
    """Whether `load_model(spec, pretrained=...)` builds an architecture with random weights (a
    timm, torchvision or transformers hub name without `pretrained`): fine for parity and
    speed, meaningless for accuracy, and easy to miss."""
    if pretrained or spec in EMBEDDED or spec.startswith("hf-hub:") or Path(spec).expanduser().exists():
        return False
    return Path(spec).suffix not in CHECKPOINT_SUFFIXES


def load_model(
    spec: str, *, pretrained: bool = False, arch: str | None = None, replay: StepReplay | None = None
) -> LoadedModel:
    """Resolve any model spec the CLI accepts (`replay`: see StepReplay). `arch` names the
    architecture of a checkpoint file that does not record it; for any other spec it would
    change nothing, so it is refused rather than ignored."""
    if spec in EMBEDDED:
        _refuse_arch(arch, spec, "vitedge's embedded model")
        shadowed_by_a_path(spec, "vitedge's embedded model")
        if not EMBEDDED[spec].is_file():
            raise VitedgeError(
                f"the embedded weights of {spec} are missing ({EMBEDDED[spec]})",
                "reinstall vitedge, or train them with `vitedge train`",
            )
        return load_checkpoint(EMBEDDED[spec], spec=spec, replay=replay)
    path = Path(spec).expanduser()
    if is_transformers_folder(path):
        _refuse_arch(arch, spec, "a transformers folder")
        return load_transformers(str(path), spec=spec)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        return load_checkpoint(path, arch_name=arch, replay=replay)
    _refuse_arch(arch, spec, "a name")
    if spec.startswith(HF_PREFIX) and "/" in spec:  # a hub id: weights with pretrained, else the config only
        with hub_or_cache(spec):
            return load_transformers(spec.removeprefix(HF_PREFIX), spec=spec, pretrained=pretrained)
    architecture = Architecture(spec, {})
    module = build_architecture(architecture, pretrained=pretrained or spec.startswith("hf-hub:")).eval()
    return LoadedModel(module, data_config_for(module, arch=architecture), spec, architecture)


def _refuse_arch(arch: str | None, spec: str, what: str) -> None:
    if arch:
        raise VitedgeError(
            f"architecture {arch!r} is given for {spec}, which is {what}: only a checkpoint file takes one",
            "drop --arch (in a recipe, [model] arch); a name builds its own architecture",
        )


def checkpoint_metadata(loaded: LoadedModel, **extra: Any) -> dict[str, Any]:
    return {
        "architecture": loaded.architecture.to_dict(),
        "data_config": loaded.data_config.to_dict(),
        "steps": list(loaded.steps),
        "source": loaded.spec,
        **extra,
    }


def save_checkpoint(loaded: LoadedModel, path: Path, *, replace: bool = True, **extra: Any) -> Path:
    """Write weights + our metadata as .safetensors, atomically (temp file, then rename).
    Serialized in memory first (one extra copy of the weights) so that a write error is
    Python's OSError with its errno, not safetensors' opaque serializing error. `replace`:
    see `write_bytes_atomic` (a command's --out replaces a file only with --force)."""
    from safetensors.torch import save

    path = Path(path)
    state = {
        key: value.detach().contiguous()
        for key, value in loaded.module.state_dict().items()
        if isinstance(value, torch.Tensor)
    }
    metadata = {METADATA_KEY: json.dumps(checkpoint_metadata(loaded, **extra), sort_keys=True)}
    write_bytes_atomic(path, save(state, metadata=metadata), replace=replace)
    return path
