"""One way to turn a model spec into a torch module and its DataConfig, used by every command:
`types` (what a loaded model is), `families` (which modules are ViTs, of which family),
`preprocessing` (each family's own preprocessing as a DataConfig) and `loading` (specs,
builders, checkpoints). The names below are the package's public face."""

from __future__ import annotations

from .families import FAMILIES, HFImageClassifier, is_vit, model_kind, require_vit, vit_family
from .loading import (
    DEFAULT_MODEL,
    EMBEDDED,
    METADATA_KEY,
    StepReplay,
    build_architecture,
    checkpoint_metadata,
    has_random_weights,
    is_transformers_folder,
    load_checkpoint,
    load_model,
    load_transformers,
    save_checkpoint,
    unknown_model_hint,
)
from .preprocessing import artifact_data_config, data_config_for, hf_data_config
from .types import Architecture, LoadedModel, StepRecord, count_weights

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "FAMILIES",
    "METADATA_KEY",
    "Architecture",
    "HFImageClassifier",
    "LoadedModel",
    "StepRecord",
    "StepReplay",
    "artifact_data_config",
    "build_architecture",
    "checkpoint_metadata",
    "count_weights",
    "data_config_for",
    "has_random_weights",
    "is_transformers_folder",
    "hf_data_config",
    "is_vit",
    "load_checkpoint",
    "load_model",
    "load_transformers",
    "model_kind",
    "require_vit",
    "save_checkpoint",
    "unknown_model_hint",
    "vit_family",
]
