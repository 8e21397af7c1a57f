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
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ..calibration.sources import ImageSet, cache_dir, open_source, require_labels
from ..compress.registry import load_model
from ..core.errors import VitedgeError
from ..core.io import atomic_folder, check_output_folder, scratch_folder
from ..models import LoadedModel, count_weights, save_checkpoint
from ..targets.measure import Measurement, MeasureRequest, RunnerSpec, measure_isolated
from .pipeline import needs_calibration, runner_spec
from .recipe import ROW_KINDS
from .report import DASH, progress_bar
from .study_recipe import NO_GPU_PATH, StudyRecipe, StudyRow
from .study_report import STUDY_JSON, Study, StudyResult, cpu_b1_of, top1_of, write_study

TRAINING_STEPS = ("distill", "finetune")  # change weights only: skipped at the speed scale


def _steps_for(row: StudyRow, *, speed_scale: bool) -> list[tuple[str, dict[str, Any]]]:
    return [(name, dict(options)) for name, options in row.steps if not (speed_scale and name in TRAINING_STEPS)]


def _needs_data(steps: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    from ..compress.registry import STEPS

    return any("data" in STEPS[name].uses for name, _ in steps)


def _check_train_data(recipe: StudyRecipe, train_images: ImageSet, *, distills: bool) -> None:
    """Unlabelled train_data, or fewer images than one distillation batch, refused before three
    models load (the student is distilled and the data-using steps run minutes in)."""
    from ..compress.train import check_training_images

    needed_by = "which the study's distilled student and data-using steps need"
    if distills:
        spec = recipe.distill
        check_training_images(train_images, spec.samples, spec.batch_size, needed_by=needed_by)
    elif any(_needs_data(row.steps) for row in recipe.rows):
        check_training_images(train_images, None, None, needed_by=needed_by)


def _student_key(recipe: StudyRecipe, teacher: LoadedModel) -> str:
    spec = {
        "teacher": teacher.source_sha256 or teacher.spec,
        "distill": dataclasses.asdict(recipe.distill),
        "data": recipe.train_data,
        "seed": recipe.seed,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def distilled_student(
    recipe: StudyRecipe, teacher: LoadedModel, train_images: ImageSet, console: Console
) -> tuple[LoadedModel, dict[str, Any]]:
    """The accuracy-scale student: a given checkpoint, or the teacher's architecture at
    `width`× distilled from the teacher (DeiT soft distillation) on `train_images` (the
    recipe's train_data, opened), cached by its settings so a rerun does not train it again."""
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
    inputs, labels = step_data(train_images, teacher.data_config, spec.samples, seed=recipe.seed)
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
    images: ImageSet  # the recipe's data
    train_images: ImageSet  # the recipe's train_data: the same set when it names the same source
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
            lambda: step_data(self.train_images, loaded.data_config, self.step_data_count, seed=self.recipe.seed),
        )

    def calibration_for(self, loaded: LoadedModel) -> Any:
        from ..calibration.calibset import build_calibration_set

        return self._once(
            "calibration",
            loaded.data_config,
            lambda: build_calibration_set(
                self.train_images, loaded.data_config, self.calibration_count, seed=self.recipe.seed
            ),
        )


def _spec(scale: _Scale, loaded: LoadedModel, kind: str, folder: Path, target: str) -> RunnerSpec:
    calibration = scale.calibration_for(loaded) if needs_calibration(kind) else None
    recipe = scale.recipe
    return runner_spec(
        loaded,
        kind,
        folder,
        threads=recipe.threads,
        target=target,
        calibration_method=recipe.calibration_method,
        calibration=calibration,
    )


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
    check_output_folder(Path(out), marker=STUDY_JSON, force=force)  # before three models load
    images = open_source(recipe.data)
    require_labels(
        images,
        "so the study cannot measure top-1",
        "use cifar10, a .npz with y, or a folder with one subfolder per class",
    )
    # opened once (a typo named now, not after three models load) for the student, steps and calibration
    train_images = open_source(recipe.train_data, opened=(images,))
    uses_student = any(row.student for row in recipe.rows)
    _check_train_data(recipe, train_images, distills=uses_student and not recipe.distill.student)
    accuracy_model = load_model(recipe.model)
    speed_model = load_model(recipe.speed_model, pretrained=recipe.pretrained)
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
        atomic_folder(Path(out), marker=STUDY_JSON, force=force) as staging,
        scratch_folder("vitedge-study-") as scratch,
    ):
        student, student_info = (
            distilled_student(recipe, accuracy_model, train_images, console) if uses_student else (None, {})
        )
        work = Path(scratch)
        (work / "accuracy").mkdir()
        (work / "speed").mkdir()
        accuracy = _Scale(
            "accuracy",
            accuracy_model,
            student,
            recipe,
            images,
            train_images,
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
            train_images,
            work / "speed",
            speed_count,
            recipe.pretrained,
            recipe.speed_calibration_samples,
            min(recipe.train_samples, 64),
        )
        results: list[StudyResult] = []
        with progress_bar(console) as progress:
            task = progress.add_task("study", total=len(recipe.rows), item="")
            for number, row in enumerate(recipe.rows):
                progress.update(task, item=row.label)
                results.append(_measure_row(row, number, accuracy, speed, recipe, measure, use_gpu))
                progress.advance(task)
        results = _mark_best(results, recipe.max_drop)
        size = accuracy_model.data_config.input_size
        evaluated = results[0].accuracy.accuracy.samples if results[0].accuracy.accuracy else 0
        scales = {
            "accuracy": f"top-1 and Δ: {accuracy_model.spec} ({count_weights(accuracy_model.module) / 1e6:.2f}M params, {size[1]}×{size[2]} input) on {recipe.data}, {evaluated} images",
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
        count_weights(large.module),
        count_weights(small.module),
        speed_spec,
        gpu_note,
    )
    shutil.rmtree(small_folder, ignore_errors=True)
    shutil.rmtree(large_folder, ignore_errors=True)  # vit_base checkpoints are 330 MB each
    return result


def _mark_best(results: list[StudyResult], max_drop: float) -> list[StudyResult]:
    """The best combination: the fastest candidate (CPU, batch 1) that loses at most
    `max_drop` top-1 points; if none does, the most accurate candidate."""
    candidates = [r for r in results if r.row.candidate]
    if not candidates:
        return results
    floor = top1_of(results[0]) - max_drop
    within = [r for r in candidates if top1_of(r) >= floor]
    best = max(within, key=cpu_b1_of) if within else max(candidates, key=top1_of)
    return [dataclasses.replace(r, best=True) if r is best else r for r in results]
