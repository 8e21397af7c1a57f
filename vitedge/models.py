"""One way to turn a model spec into a torch module and its DataConfig, used by every command.

Specs: the embedded default `vitedge-cifar10`; a timm name (`vit_base_patch16_224`, with
`pretrained=True` going through timm's normal hub/cache loading); `hf-hub:org/name`; a Hugging
Face transformers folder written by `save_pretrained` (weights from safetensors only) or
`transformers:org/name` from the hub; `torchvision:vit_b_16` (any torchvision builder); a local
`.safetensors` (our own checkpoints carry architecture, DataConfig and compression records in
the header) or `.pth`/`.pt` (loaded with `weights_only=True`, never as arbitrary pickles).

Which modules count as Vision Transformers is `vit_family`: the compression steps declare the
families they support by these names, and export refuses anything else.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .calibration.preprocess import DataConfig
from .core.errors import VitedgeError
from .core.io import write_bytes_atomic
from .core.manifest import sha256_file

StepRecord = dict[str, Any]  # a compression step as a checkpoint records it: {"name", "options", "structure"}

DEFAULT_MODEL = "vitedge-cifar10"
EMBEDDED = {DEFAULT_MODEL: Path(__file__).with_name("weights") / "vitedge-cifar10.safetensors"}
METADATA_KEY = "vitedge"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class Architecture:
    """How to build the empty module: a timm model name, `torchvision:<builder>`, or
    `transformers:<class>` (kwargs `{"config": <the model's config as a dict>}`), plus keyword
    overrides. A transformers config is plain JSON data, so a checkpoint can carry it."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(str(data["name"]), dict(data.get("kwargs", {})))


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    data_config: DataConfig
    spec: str
    architecture: Architecture
    steps: tuple[StepRecord, ...] = ()
    source_sha256: str = ""

    def with_module(self, module: nn.Module, record: StepRecord | None = None) -> LoadedModel:
        steps = self.steps + ((record,) if record is not None else ())
        return LoadedModel(module, self.data_config, self.spec, self.architecture, steps, self.source_sha256)


def count_weights(module: nn.Module) -> int:
    """Weights the module stores: its state dict's tensor elements, int8 weights included and
    their quantization scales and zero points left out, so a pruned, distilled or quantized
    module is counted the same way as the model it came from."""
    return int(
        sum(
            value.numel()
            for key, value in module.state_dict().items()
            if isinstance(value, torch.Tensor) and not key.endswith(("scale", "zero_point"))
        )
    )


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
            f"could not fetch pretrained weights for {arch.name} (offline and not in the cache?): {str(exc).splitlines()[0]}",
            f"pass a local file instead: --model weights.safetensors --arch {arch.name}",
        ) from None


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
    from PIL import Image

    try:
        settings = transformers.AutoImageProcessor.from_pretrained(source).to_dict()
    except (OSError, ValueError, KeyError) as exc:
        raise VitedgeError(
            f"{source} has no usable image processor config ({str(exc).splitlines()[0][:160]})",
            "save the model's processor beside it: AutoImageProcessor.from_pretrained(...).save_pretrained(folder)",
        ) from None
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
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stdout/stderr stay the tool's (export --json prints JSON only)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        model_class = _classifier_class(config, spec)
        model = model_class.from_pretrained(source, use_safetensors=True) if pretrained else model_class(config)
    except (OSError, ValueError) as exc:
        raise VitedgeError(
            f"cannot load the transformers model {spec}: {str(exc).splitlines()[0][:200]}",
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
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
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


def _recorded_data_config(metadata: dict[str, Any], path: Path) -> DataConfig:
    """The DataConfig saved with the weights; a hand-edited one (std 0, crop_pct 2, ...) is
    a user error that names the file, not a traceback."""
    try:
        return DataConfig.from_dict(metadata["data_config"])
    except (TypeError, ValueError) as exc:
        raise VitedgeError(
            f"the data_config recorded with {path} is invalid: {exc}",
            "fix the checkpoint's metadata (mean, std, crop_pct, interpolation)",
        ) from None


def _sidecar_metadata(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise VitedgeError(
            f"{sidecar} is not valid JSON: {exc}", "fix or delete the metadata file beside the weights"
        ) from None


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
            str(exc)[:200],
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
    if not path.is_file():
        raise VitedgeError(f"model file {path} does not exist", "check the path")
    if path.suffix == ".safetensors":
        state, header = _read_safetensors(path)
        metadata = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else _sidecar_metadata(path)
    else:
        state = _read_torch_checkpoint(path)
        metadata = _sidecar_metadata(path)
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
    module = replay.before_load(build_architecture(arch), records) if records else build_architecture(arch)
    _load_weights(module, state, path, arch)
    module = (replay.after_load(module, records) if records else module).eval()
    config = _recorded_data_config(metadata, path) if "data_config" in metadata else data_config_for(module, arch=arch)
    return LoadedModel(module, config, spec or str(path), arch, tuple(records), sha256_file(path))


def load_model(
    spec: str, *, pretrained: bool = False, arch: str | None = None, replay: StepReplay | None = None
) -> LoadedModel:
    """Resolve any model spec the CLI accepts (`replay`: see StepReplay)."""
    if spec in EMBEDDED:
        if not EMBEDDED[spec].is_file():
            raise VitedgeError(
                f"the embedded weights of {spec} are missing ({EMBEDDED[spec]})",
                "reinstall vitedge, or train them with `vitedge train`",
            )
        return load_checkpoint(EMBEDDED[spec], spec=spec, replay=replay)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():  # a transformers save_pretrained folder
        return load_transformers(str(path), spec=spec)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        return load_checkpoint(path, arch_name=arch, replay=replay)
    if spec.startswith(HF_PREFIX) and "/" in spec:  # a hub id: weights with pretrained, else the config only
        return load_transformers(spec.removeprefix(HF_PREFIX), spec=spec, pretrained=pretrained)
    architecture = Architecture(spec, {})
    module = build_architecture(architecture, pretrained=pretrained or spec.startswith("hf-hub:")).eval()
    return LoadedModel(module, data_config_for(module, arch=architecture), spec, architecture)


def checkpoint_metadata(loaded: LoadedModel, **extra: Any) -> dict[str, Any]:
    return {
        "architecture": loaded.architecture.to_dict(),
        "data_config": loaded.data_config.to_dict(),
        "steps": list(loaded.steps),
        "source": loaded.spec,
        **extra,
    }


def save_checkpoint(loaded: LoadedModel, path: Path, **extra: Any) -> Path:
    """Write weights + our metadata as .safetensors, atomically (temp file, then rename).
    Serialized in memory first (one extra copy of the weights) so that a write error is
    Python's OSError with its errno, not safetensors' opaque serializing error."""
    from safetensors.torch import save

    path = Path(path)
    state = {
        key: value.detach().contiguous()
        for key, value in loaded.module.state_dict().items()
        if isinstance(value, torch.Tensor)
    }
    metadata = {METADATA_KEY: json.dumps(checkpoint_metadata(loaded, **extra), sort_keys=True)}
    write_bytes_atomic(path, save(state, metadata=metadata))
    return path
