"""The study's recipe: a recipe file like `vitedge run`'s, checked by the same validator
(`recipe.check_tables`), with one [[row]] per line of the study's table and the study's
published figures as [[published]] data beside them, so no figure lives in code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import VitedgeError
from .recipe import (
    RECIPES_DIR,
    ROW_KINDS,
    _line_of,
    _unknown,
    check_keys,
    check_tables,
    count_or_all,
    read_recipe_text,
    read_toml,
    readers_beside,
    require_at_least,
    teachers_beside,
)

STUDY_RECIPE = RECIPES_DIR / "study.toml"
QUICK_RECIPE = RECIPES_DIR / "study-quick.toml"
NO_GPU_PATH = ("torch:int8-dynamic", "openvino:fp32", "openvino:fp16", "openvino:int8")
PUBLISHED_ROLES = ("baseline", "dq", "best")  # what comparison() sets our rows against


@dataclass(frozen=True)
class StudyRow:
    """One line of the table: compression steps, then the runtime that runs the result."""

    label: str
    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    runtime: str = "torch:fp32"  # a recipe.ROW_KINDS key
    gpu_runtime: str | None = None  # what runs on CUDA when there is one (None: no GPU path)
    student: bool = False  # built on the distilled student instead of the model
    candidate: bool = False  # a combination that competes for "best combination"

    @property
    def is_baseline(self) -> bool:
        return not self.steps and self.runtime == "torch:fp32" and not self.student


@dataclass(frozen=True)
class PublishedFigure:
    """A figure the study published (its model, its hardware): shown beside ours, never mixed in."""

    label: str
    role: str  # one of PUBLISHED_ROLES
    it_per_s_cpu: float
    mb: float
    top1: float | None = None
    source: str = ""

    def point(self) -> tuple[str, float, float | None, float]:
        """The (label, it/s, top-1, MB) point `report.pareto_plot` draws."""
        return (self.label, self.it_per_s_cpu, self.top1, self.mb)


@dataclass(frozen=True)
class DistillSpec:
    student: str = ""  # a student checkpoint to use instead of training one
    width: float = 0.5
    epochs: int = 6
    samples: int | None = None  # training images (None: all of train_data)
    lr: float = 1e-3
    batch_size: int = 128
    kind: str = "soft"
    alpha: float = 0.5
    temperature: float = 2.0


@dataclass(frozen=True)
class StudyRecipe:
    rows: tuple[StudyRow, ...]
    name: str = "vitedge compression study"
    model: str = "vitedge-cifar10"
    speed_model: str = "vit_base_patch16_224"
    student_speed_model: str = "deit_small_patch16_224"
    pretrained: bool = False
    data: str = "cifar10"
    samples: int | None = None  # test images for top-1 (None: all)
    speed_samples: int = 200  # with --pretrained: test images for top-1 at the speed scale
    train_data: str = "cifar10:train"
    train_samples: int = 2048  # images for steps that use data (taylor importance, recovery)
    calibration_samples: int = 256
    speed_calibration_samples: int = 16
    calibration_method: str = "minmax"
    seed: int = 0
    distill: DistillSpec = DistillSpec()
    threads: int = 2
    batches: tuple[int, ...] = (1, 8)
    runs: int = 10
    gpu: bool = True
    max_drop: float = 2.0  # best combination: fastest candidate within this many top-1 points
    published: tuple[PublishedFigure, ...] = ()

    def published_as(self, role: str) -> PublishedFigure | None:
        return next((p for p in self.published if p.role == role), None)


SCHEMA = {
    "study": {
        "name": str,
        "model": str,
        "speed_model": str,
        "student_speed_model": str,
        "pretrained": bool,
        "data": str,
        "samples": (int, str),
        "speed_samples": int,
        "train_data": str,
        "train_samples": int,
        "seed": int,
    },
    "calibration": {"samples": int, "speed_samples": int, "method": str},
    "distill": {
        "student": str,
        "width": (float, int),
        "epochs": int,
        "samples": (int, str),
        "lr": (float, int),
        "batch_size": int,
        "kind": str,
        "alpha": (float, int),
        "temperature": (float, int),
    },
    "bench": {"threads": int, "batches": list, "runs": int, "gpu": bool},
    "best": {"max_drop": (float, int)},
}
ROW_KEYS = {"label": str, "steps": list, "runtime": str, "gpu_runtime": str, "student": bool, "candidate": bool}
PUBLISHED_KEYS = {
    "label": str,
    "role": str,
    "it_per_s_cpu": (float, int),
    "mb": (float, int),
    "top1": (float, int),
    "source": str,
}
ARRAYS = frozenset({"row", "published"})


def _entries(data: dict[str, Any], name: str, source: str, text: str) -> list[dict[str, Any]]:
    entries = data.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise VitedgeError(
            f"{source}:{_line_of(text, name) or '?'}: {name} must be an array of tables",
            f"write each entry as [[{name}]] followed by key = value lines",
        )
    return entries


def _parse_row(entry: dict[str, Any], index: int, source: str, text: str) -> StudyRow:
    from ..compress.registry import parse_step_spec

    if "label" not in entry:
        raise VitedgeError(f"{source}: [[row]] {index + 1} has no label", 'every row starts with label = "…"')
    check_keys(entry, ROW_KEYS, f"[[row]] {entry['label']!r}", source, text)
    for key in ("runtime", "gpu_runtime"):
        if entry.get(key) and entry[key] not in ROW_KINDS:
            raise _unknown(key, entry[key], list(ROW_KINDS), source, text, key)
    runtime = entry.get("runtime", "torch:fp32")
    if "gpu_runtime" in entry:
        gpu_runtime = entry["gpu_runtime"] or None
    else:
        gpu_runtime = None if runtime in NO_GPU_PATH else runtime
    try:
        steps = tuple(parse_step_spec(str(spec)) for spec in entry.get("steps", []))
    except VitedgeError as exc:
        raise VitedgeError(f"{source}: [[row]] {entry['label']!r}: {exc.message}", exc.hint) from None
    return StudyRow(
        entry["label"], steps, runtime, gpu_runtime, entry.get("student", False), entry.get("candidate", False)
    )


def _parse_published(entry: dict[str, Any], source: str, text: str) -> PublishedFigure:
    check_keys(entry, PUBLISHED_KEYS, "[[published]]", source, text)
    missing = [key for key in ("label", "role", "it_per_s_cpu", "mb") if key not in entry]
    if missing:
        raise VitedgeError(
            f"{source}:{_line_of(text, '[[published]]') or '?'}: a [[published]] figure has no {', '.join(missing)}",
            "each needs label, role, it_per_s_cpu and mb (top1 and source are optional)",
        )
    if entry["role"] not in PUBLISHED_ROLES:
        raise _unknown("published role", entry["role"], list(PUBLISHED_ROLES), source, text, "role")
    top1 = entry.get("top1")
    return PublishedFigure(
        entry["label"],
        entry["role"],
        float(entry["it_per_s_cpu"]),
        float(entry["mb"]),
        None if top1 is None else float(top1),
        entry.get("source", ""),
    )


def _rows(data: dict[str, Any], source: str, text: str) -> tuple[StudyRow, ...]:
    rows = tuple(_parse_row(entry, i, source, text) for i, entry in enumerate(_entries(data, "row", source, text)))
    if not rows or not rows[0].is_baseline:
        raise VitedgeError(
            f"{source}: the first [[row]] must be the plain fp32 PyTorch model",
            'start with [[row]] label = "Vanilla fp32" (no steps, runtime torch:fp32): Δ and speedup refer to it',
        )
    labels = [row.label for row in rows]
    if len(set(labels)) != len(labels):
        raise VitedgeError(
            f"{source}: two [[row]]s share the label {next(label for label in labels if labels.count(label) > 1)!r}",
            "give every row its own label",
        )
    return rows


def _distill(table: dict[str, Any], source: str, text: str) -> DistillSpec:
    return DistillSpec(
        student=table.get("student", ""),
        width=float(table.get("width", DistillSpec.width)),
        epochs=table.get("epochs", DistillSpec.epochs),
        samples=count_or_all(table.get("samples", "all"), "samples", source, text),
        lr=float(table.get("lr", DistillSpec.lr)),
        batch_size=table.get("batch_size", DistillSpec.batch_size),
        kind=table.get("kind", DistillSpec.kind),
        alpha=float(table.get("alpha", DistillSpec.alpha)),
        temperature=float(table.get("temperature", DistillSpec.temperature)),
    )


def parse_study_recipe(text: str, source: str = "<study recipe>") -> StudyRecipe:
    """A study recipe (TOML): [study], [calibration], [distill], [bench], [best], [[row]]…, [[published]]…"""
    data = read_toml(text, source)
    check_tables(data, SCHEMA, ARRAYS, source, text)
    rows = _rows(data, source, text)
    study, calibration, bench = data.get("study", {}), data.get("calibration", {}), data.get("bench", {})
    defaults = StudyRecipe(rows)
    batches = tuple(int(b) for b in bench.get("batches", defaults.batches))
    if not batches or min(batches) < 1:
        raise VitedgeError(
            f"{source}:{_line_of(text, 'batches') or '?'}: [bench] batches must be positive sizes",
            "e.g. batches = [1, 8]",
        )
    counts = {
        "study": (study, ("speed_samples", "train_samples")),
        "calibration": (calibration, ("samples", "speed_samples")),
        "distill": (data.get("distill", {}), ("epochs", "batch_size")),
        "bench": (bench, ("threads", "runs")),
    }
    require_at_least(
        1,
        [(table, key, body[key]) for table, (body, keys) in counts.items() for key in keys if key in body],
        source,
        text,
    )
    require_at_least(0, [("study", "seed", study["seed"])] if "seed" in study else [], source, text)
    study_keys = ("name", "model", "speed_model", "student_speed_model", "pretrained", "data", "speed_samples")
    return dataclasses.replace(
        defaults,
        **{key: study[key] for key in study_keys if key in study},
        samples=count_or_all(study.get("samples", "all"), "samples", source, text),
        train_data=study.get("train_data", defaults.train_data),
        train_samples=study.get("train_samples", defaults.train_samples),
        seed=study.get("seed", defaults.seed),
        calibration_samples=calibration.get("samples", defaults.calibration_samples),
        speed_calibration_samples=calibration.get("speed_samples", defaults.speed_calibration_samples),
        calibration_method=calibration.get("method", defaults.calibration_method),
        distill=_distill(data.get("distill", {}), source, text),
        threads=bench.get("threads", defaults.threads),
        batches=batches,
        runs=bench.get("runs", defaults.runs),
        gpu=bench.get("gpu", defaults.gpu),
        max_drop=float(data.get("best", {}).get("max_drop", defaults.max_drop)),
        published=tuple(_parse_published(e, source, text) for e in _entries(data, "published", source, text)),
    )


def load_study_recipe(path: Path | None = None, *, quick: bool = False) -> StudyRecipe:
    """The committed study (`vitedge/recipes/study.toml`), its quick variant, or any recipe file."""
    path = Path(path) if path is not None else (QUICK_RECIPE if quick else STUDY_RECIPE)
    hint = f"pass a TOML file; the committed ones are {STUDY_RECIPE} and {QUICK_RECIPE}"
    text = read_recipe_text(path, "study recipe", hint)
    recipe = parse_study_recipe(text, str(path))
    model, data = readers_beside(path, text)
    return dataclasses.replace(
        recipe,
        **{key: model(getattr(recipe, key), key) for key in ("model", "speed_model", "student_speed_model")},
        data=data(recipe.data, "data"),
        train_data=data(recipe.train_data, "train_data"),
        distill=dataclasses.replace(recipe.distill, student=model(recipe.distill.student, "student")),
        rows=tuple(dataclasses.replace(row, steps=teachers_beside(row.steps, model)) for row in recipe.rows),
    )


def with_overrides(recipe: StudyRecipe, **overrides: Any) -> StudyRecipe:
    """The recipe with the CLI's --model/--speed-model/--data/… applied (None: keep)."""
    return dataclasses.replace(recipe, **{key: value for key, value in overrides.items() if value is not None})
