"""`vitedge study`: the compression study's table, reproduced from our own measurements.

No fine-tuned ViT-B/16 can be downloaded here, so every row is measured at two scales and
the table says which figure comes from which:

- accuracy: the row's steps applied to the accuracy model (the embedded `vitedge-cifar10`,
  trained by us on CIFAR-10) and top-1 measured on the CIFAR-10 test images;
- speed and size: the same steps applied to the study's own architecture
  (`vit_base_patch16_224`, random weights: weights do not change speed) and it/s, MB and
  parameters measured there; the distilled rows use the student's counterpart
  (`deit_small_patch16_224`, half the width, like our student).

Every figure in `study.md`/`study.json`/`study.png` is a field of a `Measurement` taken in
this run (one process per measurement, `targets.measure.measure_isolated`), or counted from
the module that was measured (parameters). Nothing is typed in, except the published
figures, which are labelled as published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ..calibration.sources import cache_dir, open_source
from ..compress.registry import load_model
from ..core.errors import VitedgeError
from ..core.io import atomic_folder, write_json_atomic
from ..models import LoadedModel, save_checkpoint
from ..targets.measure import Measurement, MeasureRequest, RunnerSpec, measure_isolated
from ..targets.stats import paired_delta
from .recipe import RECIPES_DIR, ROW_KINDS, _unknown
from .report import (
    DASH,
    NOISE_MARK,
    ResultRow,
    fmt,
    fmt_delta,
    machine_line,
    pareto_plot,
)

STUDY_RECIPE = RECIPES_DIR / "study.toml"
QUICK_RECIPE = RECIPES_DIR / "study-quick.toml"
TRAINING_STEPS = ("distill", "finetune")  # change weights only: skipped at the speed scale
NO_GPU_PATH = ("torch:int8-dynamic", "openvino:fp32", "openvino:fp16", "openvino:int8")

# Chen et al. 2024, as the issue quotes them: (label, it/s CPU, top-1 % or None, MB).
PUBLISHED: tuple[tuple[str, float, float | None, float], ...] = (
    ("Vanilla ViT", 0.050, None, 327.0),
    ("Dynamic Quantization", 0.062, 98.73, 84.0),
    ("DeiT-B + DQ", 0.117, 96.75, 84.0),
)


@dataclass(frozen=True)
class StudyRow:
    """One line of the table: compression steps, then the runtime that runs the result."""

    label: str
    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    runtime: str = "torch:fp32"  # a vitedge.recipe.ROW_KINDS key
    gpu_runtime: str | None = None  # what runs on CUDA when there is one (None: no GPU path)
    student: bool = False  # built on the distilled student instead of the model
    candidate: bool = False  # a combination that competes for "best combination"

    @property
    def is_baseline(self) -> bool:
        return not self.steps and self.runtime == "torch:fp32" and not self.student


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


SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
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
ROW_KEYS: dict[str, type | tuple[type, ...]] = {
    "label": str,
    "steps": list,
    "runtime": str,
    "gpu_runtime": str,
    "student": bool,
    "candidate": bool,
}


def _line(text: str, needle: str) -> int | None:
    return next((n for n, line in enumerate(text.splitlines(), start=1) if line.strip().startswith(needle)), None)


def _check_type(source: str, text: str, where: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    if not isinstance(value, expected) or (
        isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,))
    ):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise VitedgeError(
            f"{source}:{_line(text, key) or '?'}: {where} {key} has the wrong type ({type(value).__name__})",
            f"expected {names}",
        )


def _count(value: int | str, source: str, text: str, key: str) -> int | None:
    if value == "all":
        return None
    if isinstance(value, str) or value < 1:
        raise VitedgeError(
            f'{source}:{_line(text, key) or "?"}: {key} must be a positive number or "all"',
            f'e.g. {key} = 1000 or {key} = "all"',
        )
    return int(value)


def _gpu_default(runtime: str) -> str | None:
    return None if runtime in NO_GPU_PATH else runtime


def _parse_row(entry: Any, index: int, source: str, text: str) -> StudyRow:
    from ..compress.registry import parse_step_spec

    if not isinstance(entry, dict) or "label" not in entry:
        raise VitedgeError(f"{source}: [[row]] {index + 1} has no label", 'every row starts with label = "…"')
    for key, value in entry.items():
        if key not in ROW_KEYS:
            raise _unknown("key in [[row]]", key, sorted(ROW_KEYS), source, text, key)
        _check_type(source, text, f"[[row]] {entry['label']!r}", key, value, ROW_KEYS[key])
    for key in ("runtime", "gpu_runtime"):
        if entry.get(key) and entry[key] not in ROW_KINDS:
            raise _unknown(key, entry[key], list(ROW_KINDS), source, text, key)
    runtime = entry.get("runtime", "torch:fp32")
    gpu_runtime = entry["gpu_runtime"] or None if "gpu_runtime" in entry else _gpu_default(runtime)
    try:
        steps = tuple(parse_step_spec(str(spec)) for spec in entry.get("steps", []))
    except VitedgeError as exc:
        raise VitedgeError(f"{source}: [[row]] {entry['label']!r}: {exc.message}", exc.hint) from None
    return StudyRow(
        entry["label"], steps, runtime, gpu_runtime, entry.get("student", False), entry.get("candidate", False)
    )


def parse_study_recipe(text: str, source: str = "<study recipe>") -> StudyRecipe:
    """A study recipe (TOML): [study], [calibration], [distill], [bench], [best], [[row]]…"""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VitedgeError(f"{source}: not valid TOML: {exc}", "check the quoting and brackets on that line") from None
    for table, body in data.items():
        if table == "row":
            continue
        if table not in SCHEMA:
            raise _unknown("table", table, sorted(SCHEMA) + ["row"], source, text, f"[{table}")
        if not isinstance(body, dict):
            raise VitedgeError(
                f"{source}: [{table}] must be a table", f"write it as [{table}] followed by key = value lines"
            )
        for key, value in body.items():
            if key not in SCHEMA[table]:
                raise _unknown(f"key in [{table}]", key, sorted(SCHEMA[table]), source, text, key)
            _check_type(source, text, f"[{table}]", key, value, SCHEMA[table][key])
    rows = tuple(_parse_row(entry, i, source, text) for i, entry in enumerate(data.get("row", [])))
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
    study, calibration, distill = data.get("study", {}), data.get("calibration", {}), data.get("distill", {})
    bench, best = data.get("bench", {}), data.get("best", {})
    defaults = StudyRecipe(rows)
    batches = tuple(int(b) for b in bench.get("batches", defaults.batches))
    if not batches or min(batches) < 1:
        raise VitedgeError(
            f"{source}:{_line(text, 'batches') or '?'}: [bench] batches must be positive sizes", "e.g. batches = [1, 8]"
        )
    spec = DistillSpec(
        student=distill.get("student", ""),
        width=float(distill.get("width", DistillSpec.width)),
        epochs=distill.get("epochs", DistillSpec.epochs),
        samples=_count(distill.get("samples", "all"), source, text, "samples"),
        lr=float(distill.get("lr", DistillSpec.lr)),
        batch_size=distill.get("batch_size", DistillSpec.batch_size),
        kind=distill.get("kind", DistillSpec.kind),
        alpha=float(distill.get("alpha", DistillSpec.alpha)),
        temperature=float(distill.get("temperature", DistillSpec.temperature)),
    )
    return dataclasses.replace(
        defaults,
        name=study.get("name", defaults.name),
        model=study.get("model", defaults.model),
        speed_model=study.get("speed_model", defaults.speed_model),
        student_speed_model=study.get("student_speed_model", defaults.student_speed_model),
        pretrained=study.get("pretrained", defaults.pretrained),
        data=study.get("data", defaults.data),
        samples=_count(study.get("samples", "all"), source, text, "samples"),
        speed_samples=study.get("speed_samples", defaults.speed_samples),
        train_data=study.get("train_data", defaults.train_data),
        train_samples=study.get("train_samples", defaults.train_samples),
        seed=study.get("seed", defaults.seed),
        calibration_samples=calibration.get("samples", defaults.calibration_samples),
        speed_calibration_samples=calibration.get("speed_samples", defaults.speed_calibration_samples),
        calibration_method=calibration.get("method", defaults.calibration_method),
        distill=spec,
        threads=bench.get("threads", defaults.threads),
        batches=batches,
        runs=bench.get("runs", defaults.runs),
        gpu=bench.get("gpu", defaults.gpu),
        max_drop=float(best.get("max_drop", defaults.max_drop)),
    )


def load_study_recipe(path: Path | None = None, *, quick: bool = False) -> StudyRecipe:
    """The committed study (`vitedge/recipes/study.toml`), its quick variant, or any recipe file."""
    path = Path(path) if path is not None else (QUICK_RECIPE if quick else STUDY_RECIPE)
    if not path.is_file():
        raise VitedgeError(
            f"study recipe {path} does not exist",
            f"pass a TOML file; the committed ones are {STUDY_RECIPE} and {QUICK_RECIPE}",
        )
    return parse_study_recipe(path.read_text(), str(path))


# ---------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class StudyResult:
    """One row's measurements: top-1 at the accuracy scale, speed/size at the speed scale."""

    row: StudyRow
    accuracy: Measurement  # the accuracy model (top-1 on the test images)
    speed: Measurement  # the speed model on CPU (it/s batch 1 and 8, MB)
    gpu: Measurement | None  # the speed model on CUDA; None: no CUDA device or no GPU path
    params: int  # weights stored by the measured speed-scale module
    accuracy_params: int  # the same count for the accuracy-scale module
    speed_model: str
    gpu_note: str = ""
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "label": row.label,
            "steps": [[name, options] for name, options in row.steps],
            "runtime": row.runtime,
            "gpu_runtime": row.gpu_runtime,
            "student": row.student,
            "candidate": row.candidate,
            "best": self.best,
            "params": self.params,
            "accuracy_params": self.accuracy_params,
            "speed_model": self.speed_model,
            "accuracy": self.accuracy.to_dict(),
            "speed": self.speed.to_dict(),
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "gpu_note": self.gpu_note,
        }


@dataclass(frozen=True)
class Study:
    recipe: StudyRecipe
    results: tuple[StudyResult, ...]
    scales: dict[str, str]
    notes: tuple[str, ...]

    @property
    def baseline(self) -> StudyResult:
        return self.results[0]

    def result(self, label: str) -> StudyResult:
        return next(r for r in self.results if r.row.label == label)


def count_params(module: torch.nn.Module) -> int:
    """Weights the module stores (state-dict elements; int8 weights count, their quantization
    scales and zero points do not): what a pruning or distillation row changes."""
    return int(
        sum(
            v.numel()
            for k, v in module.state_dict().items()
            if isinstance(v, torch.Tensor) and not k.endswith(("scale", "zero_point"))
        )
    )


def _steps_for(row: StudyRow, *, speed_scale: bool) -> list[tuple[str, dict[str, Any]]]:
    return [(name, dict(options)) for name, options in row.steps if not (speed_scale and name in TRAINING_STEPS)]


def _needs_data(steps: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    from ..compress.registry import STEPS

    return any("data" in STEPS[name].uses for name, _ in steps)


def _student_key(recipe: StudyRecipe, teacher: LoadedModel) -> str:
    spec = {
        "teacher": teacher.source_sha256 or teacher.spec,
        "distill": dataclasses.asdict(recipe.distill),
        "data": recipe.train_data,
        "seed": recipe.seed,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def distilled_student(
    recipe: StudyRecipe, teacher: LoadedModel, console: Console
) -> tuple[LoadedModel, dict[str, Any]]:
    """The accuracy-scale student: a given checkpoint, or the teacher's architecture at
    `width`× distilled from the teacher (DeiT soft distillation), cached by its settings so a
    rerun does not train it again."""
    from ..compress.distill import DistillConfig, distill, make_student
    from ..compress.pipeline import step_data
    from ..compress.train import TrainConfig

    spec = recipe.distill
    if spec.student:
        return load_model(spec.student), {"student": spec.student, "trained": False}
    path = cache_dir() / "study" / f"student-{_student_key(recipe, teacher)}.safetensors"
    info = {
        "student": str(path),
        "trained": not path.is_file(),
        **dataclasses.asdict(spec),
        "train_data": recipe.train_data,
    }
    if path.is_file():
        console.print(f"[dim]distilled student from cache: {path}[/]")
        return load_model(str(path)), info
    pupil = make_student(teacher, student=None, width=spec.width, distill_token=False, seed=recipe.seed)
    inputs, labels = step_data(recipe.train_data, teacher.data_config, spec.samples, seed=recipe.seed)
    config = TrainConfig(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        warmup_epochs=min(1.0, spec.epochs / 5),
        seed=recipe.seed,
        threads=recipe.threads,
    )
    console.print(
        f"distilling a {spec.width}× student of {teacher.spec}: {spec.epochs} epoch(s) on {len(inputs)} images of {recipe.train_data}"
    )
    module, logs = distill(
        pupil.module, teacher.module, inputs, labels, config, DistillConfig(spec.kind, spec.alpha, spec.temperature)
    )
    student = LoadedModel(module.eval(), pupil.data_config, f"student of {teacher.spec}", pupil.architecture)
    save_checkpoint(
        student,
        path,
        made_by="vitedge study",
        teacher=teacher.spec,
        distill=dataclasses.asdict(spec),
        train_data=recipe.train_data,
        final_loss=logs[-1].loss if logs else None,
    )
    return load_model(str(path)), {
        **info,
        "final_loss": logs[-1].loss if logs else None,
        "train_top1": logs[-1].train_top1 if logs else None,
    }


@dataclass
class _Scale:
    """One scale's models and the images its rows share, each prepared once per DataConfig
    (the student's speed model may normalise differently from the model's)."""

    name: str
    model: LoadedModel
    student: LoadedModel | None
    recipe: StudyRecipe
    images: Any  # the test ImageSet
    folder: Path
    eval_count: int | None
    labelled: bool
    calibration_count: int
    step_data_count: int
    cache: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)

    def _once(self, what: str, config: Any, make: Callable[[], Any]) -> Any:
        key = (what, json.dumps(config.to_dict(), sort_keys=True))
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def inputs_for(self, loaded: LoadedModel) -> tuple[str, str | None]:
        """(.npy inputs, .npy labels or None) of the test images, preprocessed for `loaded`."""
        from .pipeline import prepare_eval_data

        def make() -> tuple[str, str | None]:
            data = prepare_eval_data(self.images, loaded.data_config, self.eval_count, seed=self.recipe.seed)
            return _save_inputs(
                self.folder, f"inputs-{len(self.cache)}", data.inputs, data.labels if self.labelled else None
            )

        return self._once("inputs", loaded.data_config, make)

    def data_for(self, steps: Sequence[tuple[str, dict[str, Any]]], loaded: LoadedModel) -> Any:
        from ..compress.pipeline import step_data

        if not _needs_data(steps):
            return None
        return self._once(
            "steps",
            loaded.data_config,
            lambda: step_data(self.recipe.train_data, loaded.data_config, self.step_data_count, seed=self.recipe.seed),
        )

    def calibration_for(self, loaded: LoadedModel) -> Any:
        from ..calibration.calibset import build_calibration_set

        return self._once(
            "calibration",
            loaded.data_config,
            lambda: build_calibration_set(
                open_source(self.recipe.train_data), loaded.data_config, self.calibration_count, seed=self.recipe.seed
            ),
        )


def _spec(scale: _Scale, loaded: LoadedModel, kind: str, folder: Path, target: str) -> RunnerSpec:
    """A runner for `loaded` as `kind`, reusing the pipeline's own builders."""
    from .pipeline import _artifact_spec, _torch_spec
    from .recipe import Recipe

    if kind.startswith("torch:"):
        return _torch_spec(loaded, kind, folder, scale.recipe.threads, target)
    needs_calibration = kind.endswith(("int8-static", ":int8"))
    settings = Recipe(threads=scale.recipe.threads, target=target, calibration_method=scale.recipe.calibration_method)
    return _artifact_spec(loaded, kind, folder, settings, scale.calibration_for(loaded) if needs_calibration else None)


def _build(scale: _Scale, row: StudyRow, number: int) -> tuple[LoadedModel, Path]:
    from ..compress.registry import apply_steps

    base = scale.student if row.student else scale.model
    assert base is not None
    steps = _steps_for(row, speed_scale=scale.name == "speed")
    loaded = apply_steps(base, steps, data=scale.data_for(steps, base)) if steps else base
    folder = scale.folder / f"{number:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    return loaded, folder


def _save_inputs(folder: Path, name: str, inputs: np.ndarray, labels: np.ndarray | None) -> tuple[str, str | None]:
    inputs_path = folder / f"{name}-inputs.npy"
    np.save(inputs_path, inputs)
    if labels is None:
        return str(inputs_path), None
    np.save(folder / f"{name}-labels.npy", labels)
    return str(inputs_path), str(folder / f"{name}-labels.npy")


def run_study(
    recipe: StudyRecipe,
    out: Path,
    *,
    console: Console | None = None,
    force: bool = False,
    measure: Callable[[MeasureRequest], Measurement] = measure_isolated,
    gpu: bool | None = None,
) -> Study:
    """Build and measure every row at both scales; write study.md, study.json, study.png
    into `out`, whole or not at all. `gpu` None: measure on CUDA when torch sees a device."""
    console = console or Console(stderr=True)
    use_gpu = (recipe.gpu and torch.cuda.is_available()) if gpu is None else gpu
    images = open_source(recipe.data)
    if images.labels is None:
        raise VitedgeError(
            f"{recipe.data} has no labels, so the study cannot measure top-1",
            "use cifar10, a .npz with y, or a folder with one subfolder per class",
        )
    accuracy_model = load_model(recipe.model)
    speed_model = load_model(recipe.speed_model, pretrained=recipe.pretrained)
    uses_student = any(row.student for row in recipe.rows)
    speed_student = load_model(recipe.student_speed_model, pretrained=recipe.pretrained) if uses_student else None
    if speed_student is not None and tuple(speed_student.data_config.input_size) != tuple(
        speed_model.data_config.input_size
    ):
        raise VitedgeError(
            f"{recipe.student_speed_model} takes {speed_student.data_config.input_size}, {recipe.speed_model} {speed_model.data_config.input_size}",
            "pick speed models with the same input size",
        )
    notes: list[str] = []
    with (
        atomic_folder(Path(out), force=force) as staging,
        tempfile.TemporaryDirectory(prefix="vitedge-study-") as scratch,
    ):
        student, student_info = distilled_student(recipe, accuracy_model, console) if uses_student else (None, {})
        work = Path(scratch)
        (work / "accuracy").mkdir()
        (work / "speed").mkdir()
        accuracy = _Scale(
            "accuracy",
            accuracy_model,
            student,
            recipe,
            images,
            work / "accuracy",
            recipe.samples,
            True,
            recipe.calibration_samples,
            recipe.train_samples,
        )
        speed_count = recipe.speed_samples if recipe.pretrained else max(recipe.batches)
        speed = _Scale(
            "speed",
            speed_model,
            speed_student,
            recipe,
            images,
            work / "speed",
            speed_count,
            recipe.pretrained,
            recipe.speed_calibration_samples,
            min(recipe.train_samples, 64),
        )
        results: list[StudyResult] = []
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[item]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("study", total=len(recipe.rows), item="")
            for number, row in enumerate(recipe.rows):
                progress.update(task, item=row.label)
                results.append(_measure_row(row, number, accuracy, speed, recipe, measure, use_gpu))
                progress.advance(task)
        results = _mark_best(results, recipe.max_drop)
        size = accuracy_model.data_config.input_size
        evaluated = results[0].accuracy.accuracy.samples if results[0].accuracy.accuracy else 0
        scales = {
            "accuracy": f"top-1 and Δ: {accuracy_model.spec} ({count_params(accuracy_model.module) / 1e6:.2f}M params, {size[1]}×{size[2]} input) on {recipe.data}, {evaluated} images",
            "speed": f"it/s, MB, params: {recipe.speed_model} ({'pretrained' if recipe.pretrained else 'random weights'}){f'; distilled rows: {recipe.student_speed_model}' if uses_student else ''}",
        }
        if uses_student:
            notes.append(
                f"Distilled student: {recipe.distill.width}× the width of {accuracy_model.spec}, {recipe.distill.epochs} epoch(s) of {recipe.distill.kind} distillation on {recipe.train_data}; its speed and size are measured on {recipe.student_speed_model}."
                if not recipe.distill.student
                else f"Distilled student: {recipe.distill.student}; its speed and size are measured on {recipe.student_speed_model}."
            )
        if any(name in TRAINING_STEPS for row in recipe.rows for name, _ in row.steps):
            notes.append(
                "Training steps (distill, finetune) change weights only, so they run at the accuracy scale and are skipped at the speed scale."
            )
        notes.extend(sorted({r.gpu_note for r in results if r.gpu_note}))
        study = Study(recipe, tuple(results), scales, tuple(notes))
        write_study(study, staging, extra={"student": student_info})
    return study


def _measure_row(
    row: StudyRow,
    number: int,
    accuracy: _Scale,
    speed: _Scale,
    recipe: StudyRecipe,
    measure: Callable[[MeasureRequest], Measurement],
    use_gpu: bool,
) -> StudyResult:
    import shutil

    small, small_folder = _build(accuracy, row, number)
    small_spec = dataclasses.replace(_spec(accuracy, small, row.runtime, small_folder, "cpu"), name=row.label)
    # top-1 is what this scale is for; measure() also times batch 1, so keep that short
    small_measured = measure(
        MeasureRequest(small_spec, *accuracy.inputs_for(small), batches=(1,), runs=3, min_seconds=0.0)
    )
    large, large_folder = _build(speed, row, number)
    large_inputs = speed.inputs_for(large)
    large_spec = dataclasses.replace(_spec(speed, large, row.runtime, large_folder, "cpu"), name=row.label)
    large_measured = measure(MeasureRequest(large_spec, *large_inputs, batches=recipe.batches, runs=recipe.runs))
    gpu_measured, gpu_note = None, ""
    if use_gpu and row.gpu_runtime:
        gpu_spec = (
            large_spec
            if row.gpu_runtime == row.runtime
            else _spec(speed, large, row.gpu_runtime, large_folder / "gpu", "cuda")
        )
        gpu_spec = dataclasses.replace(gpu_spec, name=row.label, target="cuda")
        try:
            gpu_measured = measure(
                MeasureRequest(gpu_spec, large_inputs[0], None, batches=recipe.batches, runs=recipe.runs)
            )
        except VitedgeError as exc:  # e.g. onnxruntime without the CUDA provider: a dash, and why
            gpu_note = f"GPU {DASH} for {ROW_KINDS[row.gpu_runtime]}: {exc.message}"
    elif use_gpu:
        gpu_note = f"GPU {DASH} for {', '.join(ROW_KINDS[k] for k in NO_GPU_PATH)}: that runtime has no CUDA path here"
    speed_spec = speed.student.spec if row.student and speed.student is not None else speed.model.spec
    result = StudyResult(
        row,
        small_measured,
        large_measured,
        gpu_measured,
        count_params(large.module),
        count_params(small.module),
        speed_spec,
        gpu_note,
    )
    shutil.rmtree(small_folder, ignore_errors=True)
    shutil.rmtree(large_folder, ignore_errors=True)  # vit_base checkpoints are 330 MB each
    return result


def _top1(result: StudyResult) -> float:
    assert result.accuracy.accuracy is not None
    return result.accuracy.accuracy.top1


def _cpu_b1(result: StudyResult) -> float:
    timing = result.speed.timing(1) or result.speed.timings[0]
    return timing.it_per_s


def _mark_best(results: list[StudyResult], max_drop: float) -> list[StudyResult]:
    """The best combination: the fastest candidate (CPU, batch 1) that loses at most
    `max_drop` top-1 points; if none does, the most accurate candidate."""
    candidates = [r for r in results if r.row.candidate]
    if not candidates:
        return results
    floor = _top1(results[0]) - max_drop
    within = [r for r in candidates if _top1(r) >= floor]
    best = max(within, key=_cpu_b1) if within else max(candidates, key=_top1)
    return [dataclasses.replace(r, best=True) if r is best else r for r in results]


# ------------------------------------------------------------------------------------ reports

COLUMNS = (
    "row",
    "top-1 %",
    "Δ top-1 [95% CI]",
    "computes",
    "MB",
    "params (M)",
    "it/s CPU b1",
    "img/s CPU b8",
    "speedup b1",
    "it/s GPU b1",
)
PRETRAINED_COLUMN = "top-1 % (speed model)"  # only with --pretrained: the speed model's own top-1


def columns(study: Study) -> tuple[str, ...]:
    return COLUMNS + ((PRETRAINED_COLUMN,) if study.recipe.pretrained else ())


def row_label(result: StudyResult) -> str:
    return f"**Best combination: {result.row.label}**" if result.best else result.row.label


def _delta(result: StudyResult, baseline: StudyResult) -> str:
    """Δ top-1 with its paired interval (the same test images through both rows)."""
    if result is baseline:
        return "reference"
    mine, theirs = result.accuracy.accuracy.hits(), baseline.accuracy.accuracy.hits()
    if mine is None or theirs is None or len(mine) != len(theirs):
        return fmt(_top1(result) - _top1(baseline), "delta")
    return fmt_delta(paired_delta(theirs, mine))


def cells(result: StudyResult, baseline: StudyResult, *, pretrained: bool = False) -> list[str]:
    """One table row; every number is a Measurement field (or the measured module's count)."""
    speed_top1 = [fmt(result.speed.accuracy.top1 if result.speed.accuracy else None, "pct")] if pretrained else []
    speed, b8 = result.speed.timing(1), result.speed.timing(8)
    base = baseline.speed.timing(1)
    gpu = result.gpu.timing(1) if result.gpu else None
    return [
        row_label(result),
        fmt(_top1(result), "pct"),
        _delta(result, baseline),
        result.speed.execution_precision or DASH,
        fmt(result.speed.size_mb, "mb"),
        f"{result.params / 1e6:.1f}",
        fmt(speed.it_per_s if speed else None, "rate"),
        fmt(b8.images_per_s if b8 else None, "rate"),
        fmt(speed.it_per_s / base.it_per_s if speed and base else None, "ratio"),
        fmt(gpu.it_per_s if gpu else None, "rate"),
        *speed_top1,
    ]


def comparison(study: Study) -> list[str]:
    """Our best row and the DQ row next to the study's published figures."""
    base = study.baseline
    lines = []
    published_dq, published_best = PUBLISHED[1], PUBLISHED[2]
    lines.append(
        f"- Published (Chen et al. 2024, their CPU): DeiT-B + DQ {published_best[1]:.3f} vs Vanilla {PUBLISHED[0][1]:.3f} it/s = "
        f"{fmt(published_best[1] / PUBLISHED[0][1], 'ratio')}, {fmt(published_best[3], 'mb')} MB vs {fmt(PUBLISHED[0][3], 'mb')} MB, "
        f"top-1 {fmt(published_best[2], 'pct')}% against {fmt(published_dq[2], 'pct')}% for DQ alone ({fmt(published_best[2] - published_dq[2], 'delta')})."
    )
    dq = next(
        (r for r in study.results if r.row.runtime == "torch:int8-dynamic" and not r.row.steps and not r.row.student),
        None,
    )
    if dq is not None:
        lines.append(
            f"- This run, DQ on {dq.speed_model}: {fmt(_cpu_b1(dq), 'rate')} vs {fmt(_cpu_b1(base), 'rate')} it/s = {fmt(_cpu_b1(dq) / _cpu_b1(base), 'ratio')} "
            f"(published {fmt(published_dq[1] / PUBLISHED[0][1], 'ratio')}), {fmt(dq.speed.size_mb, 'mb')} MB, Δ top-1 {fmt(_top1(dq) - _top1(base), 'delta')}."
        )
    best = next((r for r in study.results if r.best), None)
    if best is not None:
        lines.append(
            f"- This run, best combination ({best.row.label}, speed on {best.speed_model}): {fmt(_cpu_b1(best), 'rate')} it/s = "
            f"{fmt(_cpu_b1(best) / _cpu_b1(base), 'ratio')} Vanilla, {fmt(best.speed.size_mb, 'mb')} MB, top-1 {fmt(_top1(best), 'pct')}% "
            f"(Δ {fmt(_top1(best) - _top1(base), 'delta')} against Vanilla; published DeiT-B + DQ: {fmt(published_best[1] / PUBLISHED[0][1], 'ratio')}, "
            f"{fmt(published_best[2] - published_dq[2], 'delta')} against DQ)."
        )
    return lines


def markdown(study: Study) -> str:
    base = study.baseline
    measured = [r.speed for r in study.results] + [r.gpu for r in study.results if r.gpu]
    machine = machine_line([ResultRow(m) for m in measured[:1]])
    gpu_names = sorted({str(r.gpu.detail.get("device_name", r.gpu.device)) for r in study.results if r.gpu})
    lines = [
        f"# {study.recipe.name}",
        "",
        f"Machine: {machine}; GPU: {', '.join(gpu_names) or 'none (GPU column ' + DASH + ')'}",
        "",
    ]
    lines += [f"- Accuracy scale — {study.scales['accuracy']}", f"- Speed and size scale — {study.scales['speed']}", ""]
    names = columns(study)
    lines += ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in names) + "|"]
    lines += ["| " + " | ".join(cells(r, base, pretrained=study.recipe.pretrained)) + " |" for r in study.results]
    lines += [
        "",
        f"Δ top-1 and speedup are against the Vanilla fp32 row of this run (PyTorch eager, the study's own yardstick); Δ carries a paired 95% interval and {NOISE_MARK} marks one that contains 0 (no difference shown; the plot's Pareto front does not rank on it). computes: the precision the speed row's runtime reported. it/s b1 is batch-1 calls per second (= images/s); img/s b8 is images per second at batch 8; MB is the model as stored (serialized state dict or artifact files); params counts stored weights.",
        "",
    ]
    lines += ["## Against the published study", "", *comparison(study), ""]
    lines += ["Published points in study.png are the study's own figures on its own hardware, not ours.", ""]
    if study.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in study.notes], ""]
    versions: dict[str, str] = {}
    for m in measured:
        versions.update(m.versions)
    lines += ["Runtimes: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    return "\n".join(lines) + "\n"


def plot_rows(study: Study) -> list[ResultRow]:
    """Rows for `report.pareto_plot`: top-1 from the accuracy measurement, speed and MB from
    the speed measurement of the same row."""
    return [
        ResultRow(dataclasses.replace(r.speed, name=r.row.label, accuracy=r.accuracy.accuracy)) for r in study.results
    ]


def write_study(study: Study, folder: Path, *, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    from ..core.io import write_text_atomic

    paths = {"json": folder / "study.json", "markdown": folder / "study.md", "plot": folder / "study.png"}
    recipe = dataclasses.asdict(study.recipe)
    write_json_atomic(
        paths["json"],
        {
            "title": study.recipe.name,
            "scales": study.scales,
            "recipe": recipe,
            "rows": [r.to_dict() for r in study.results],
            "published": [
                {
                    "label": p[0],
                    "it_per_s_cpu": p[1],
                    "top1": p[2],
                    "mb": p[3],
                    "source": "Chen et al. 2024 (published)",
                }
                for p in PUBLISHED
            ],
            "comparison": comparison(study),
            "notes": list(study.notes),
            **(extra or {}),
        },
    )
    write_text_atomic(paths["markdown"], markdown(study))
    pareto_plot(
        plot_rows(study), paths["plot"], title=f"{study.recipe.name}: top-1 vs CPU it/s (batch 1)", published=PUBLISHED
    )
    return paths


def with_overrides(recipe: StudyRecipe, **overrides: Any) -> StudyRecipe:
    """The recipe with the CLI's --model/--speed-model/--data/… applied (None: keep)."""
    return dataclasses.replace(recipe, **{key: value for key, value in overrides.items() if value is not None})
