"""The main job: recipe → model → compression steps → artifacts → parity → measurements →
report. `vitedge run` is a thin wrapper around `run_pipeline`.

The whole output folder is staged and renamed into place at the end, so an interrupted run
leaves nothing half-written. Every row is measured in its own process on the same
preprocessed inputs; parity compares each row's logits with the fp32 PyTorch row's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..calibration.calibset import preprocess_images
from ..calibration.preprocess import DataConfig
from ..calibration.sources import (
    LOOSE_IMAGES_HINT,
    ImageSet,
    in_model_numbering,
    open_source,
    require_labels,
    scores_other_classes,
    subset_indices,
)
from ..compress.registry import load_model
from ..core.errors import VitedgeError
from ..core.io import atomic_folder, check_output_folder, scratch_folder
from ..models import LoadedModel, artifact_data_config, is_transformers_folder, save_checkpoint
from ..targets.measure import (
    Accuracy,
    Measurement,
    MeasureRequest,
    RunnerSpec,
    measure_isolated,
)
from .recipe import ROW_KINDS, Recipe, rows_for
from .report import RESULTS_JSON, Parity, ResultRow, progress_bar, write_reports

REFERENCE_ROW = "torch:fp32"


@dataclass(frozen=True)
class EvalData:
    inputs: np.ndarray  # float32 N×3×H×W
    labels: np.ndarray | None
    identities: tuple[str, ...]
    indices: np.ndarray


def prepare_eval_data(images: ImageSet, config: DataConfig, samples: int | None, *, seed: int = 0) -> EvalData:
    images = in_model_numbering(images, config)
    if images.labels is not None:
        if scores_other_classes(images.class_names, config.labels):
            warnings.warn(
                f"{images.name} has CIFAR-10's labels and the model has its own {len(config.labels)} classes "
                f"({config.labels[0]}, …): its top-1 here is not an accuracy (parity and speed still hold)",
                stacklevel=2,
            )
    elif images.unlabelled_because:  # a folder of class folders: its user expects a top-1
        warnings.warn(
            f"{images.name} has no labels ({images.unlabelled_because}): no top-1 is measured ({LOOSE_IMAGES_HINT})",
            stacklevel=2,
        )
    indices = subset_indices(images, samples, seed=seed)
    inputs = preprocess_images((images.get(int(i)) for i in indices), len(indices), config)
    labels = np.asarray(images.labels)[indices] if images.labels is not None else None
    return EvalData(inputs, labels, tuple(images.identity(int(i)) for i in indices), indices)


def _apply_steps(loaded: LoadedModel, steps: Sequence[tuple[str, dict[str, Any]]]) -> LoadedModel:
    from ..compress.registry import apply_steps

    return apply_steps(loaded, list(steps))


def runner_spec(
    loaded: LoadedModel,
    kind: str,
    folder: Path,
    *,
    threads: int,
    target: str,
    calibration_method: str = "minmax",
    calibration: Any = None,
) -> RunnerSpec:
    """`loaded` made into the row `kind` (a ROW_KINDS key) under `folder`: a checkpoint for a
    PyTorch row, the exported artifact otherwise; `run` and `study` build every row through here."""
    from ..exporter.export import ExportOptions, export_artifact

    fmt, precision = kind.split(":")
    if fmt == "torch":
        model = _apply_steps(loaded, [("quantize-dynamic", {})]) if precision == "int8-dynamic" else loaded
        path = save_checkpoint(model, folder / f"{kind.replace(':', '-')}.safetensors")
        return RunnerSpec(ROW_KINDS[kind], "torch", str(path), precision=precision, target=target, threads=threads)
    path = export_artifact(
        loaded,
        to=fmt,
        precision=precision,
        out=folder / kind.replace(":", "-"),
        calibration=calibration if needs_calibration(kind) else None,
        options=ExportOptions(calib_method=calibration_method),
    )
    return RunnerSpec(ROW_KINDS[kind], "artifact", str(path), precision=precision, target=target, threads=threads)


def check_rows(kinds: Sequence[str], target: str) -> None:
    """Refuse, before any work, a row this machine cannot build or run: a bf16 row on a CPU
    without native bf16, an ExecuTorch row without executorch, PyTorch dynamic int8 off the CPU
    (what `vitedge export` refuses for one artifact, and `targets.torch` for one module),
    rather than after the rows before it were measured."""
    from ..core.precision import NATIVE_BF16, require_bf16
    from ..exporter.export import FORMATS, check_request
    from ..targets.torch import refuse_int8_off_cpu

    for kind in kinds:
        to, precision = kind.split(":", 1)
        if to in FORMATS:
            check_request(to, precision, has_calibration=True)  # the run draws its own calibration set
            continue
        refuse_int8_off_cpu(precision, target)
        if precision in NATIVE_BF16 and target == "cpu":
            require_bf16(f"row {kind}")


def needs_calibration(kind: str) -> bool:
    """Whether a row kind ("format:precision") is an artifact its exporter calibrates."""
    from ..exporter.export import NEEDS_CALIBRATION

    return tuple(kind.split(":", 1)) in NEEDS_CALIBRATION


def _calibration_images(recipe: Recipe, evaluated: ImageSet) -> ImageSet:
    """The recipe's calibration source, opened before the model loads (a typo named in a second)."""
    return evaluated if recipe.calibration == recipe.data else open_source(recipe.calibration)


def _calibration_set(recipe: Recipe, loaded: LoadedModel, eval_data: EvalData, images: ImageSet) -> Any:
    from ..calibration.calibset import build_calibration_set

    exclude = eval_data.indices if recipe.calibration == recipe.data else ()
    return build_calibration_set(
        images, loaded.data_config, recipe.calibration_samples, seed=recipe.seed, exclude=exclude
    )


def _parity(
    reference: np.ndarray,
    logits: np.ndarray,
    precision: str,
    identities: Sequence[str],
    margins: np.ndarray | None,
    random_weights: bool,
) -> Parity:
    from .parity import compare_logits

    report = compare_logits(
        reference,
        logits,
        precision=precision,
        identities=identities,
        margins=margins,
        random_weights=random_weights,
    )
    return Parity(report.cosine_mean, report.cosine_min, report.top1_agreement, report.max_abs, report.passed)


def run_pipeline(
    recipe: Recipe,
    out: Path,
    *,
    console: Console | None = None,
    force: bool = False,
    measure: Callable[[MeasureRequest], Measurement] = measure_isolated,
) -> list[ResultRow]:
    """Run the whole recipe; write results.json, report.md, pareto.png (and the artifacts)
    into `out`; return the rows in the order of `rows_for(recipe).kinds`: the recipe's own
    rows, or the defaults for this machine (openvino:int8-bf16 too on a CPU with native bf16,
    which results.json's recipe.rows_chosen and report.md then say)."""
    chosen = rows_for(recipe)
    kinds = chosen.kinds
    if REFERENCE_ROW not in kinds:
        raise VitedgeError(
            "a run needs the torch:fp32 row: it is the reference for parity, Δ top-1 and speedup",
            'add "torch:fp32" to [export] rows',
        )
    check_rows(kinds, recipe.target)
    console = console or Console(stderr=True)
    if chosen.added:
        console.print(f"rows: {chosen.why}")
    check_output_folder(out, marker=RESULTS_JSON, force=force)  # what needs no model, before it loads
    images = open_source(recipe.data)
    calibrated = any(needs_calibration(kind) for kind in kinds)
    calibration_images = _calibration_images(recipe, images) if calibrated else None
    loaded = load_model(recipe.model, pretrained=recipe.pretrained, arch=recipe.arch)
    if recipe.steps:
        loaded = _apply_steps(loaded, recipe.steps)
    eval_data = prepare_eval_data(images, loaded.data_config, recipe.samples, seed=recipe.seed)
    rows: list[ResultRow] = []
    with (
        atomic_folder(out, marker=RESULTS_JSON, force=force) as staging,
        progress_bar(console) as progress,
    ):
        calibration = _calibration_set(recipe, loaded, eval_data, calibration_images) if calibrated else None
        np.save(staging / "inputs.npy", eval_data.inputs)
        labels_path = None
        if eval_data.labels is not None:
            np.save(staging / "labels.npy", eval_data.labels)
            labels_path = str(staging / "labels.npy")
        build = progress.add_task("export", total=len(kinds), item="")
        specs: dict[str, RunnerSpec] = {}
        for kind in kinds:
            progress.update(build, item=ROW_KINDS[kind])
            specs[kind] = runner_spec(
                loaded,
                kind,
                staging / ("models" if kind.startswith("torch:") else "artifacts"),
                threads=recipe.threads,
                target=recipe.target,
                calibration_method=recipe.calibration_method,
                calibration=calibration,
            )
            progress.advance(build)
        bench = progress.add_task("measure", total=len(kinds), item="")
        logits: dict[str, np.ndarray] = {}
        measurements: dict[str, Measurement] = {}
        for kind in [REFERENCE_ROW] + [k for k in kinds if k != REFERENCE_ROW]:
            progress.update(bench, item=ROW_KINDS[kind])
            logits_path = staging / f".logits-{kind.replace(':', '-')}.npy"
            request = MeasureRequest(
                specs[kind],
                str(staging / "inputs.npy"),
                labels_path,
                recipe.batches,
                recipe.runs,
                logits_path=str(logits_path),
            )
            measurements[kind] = measure(request)
            logits[kind] = np.load(logits_path)
            logits_path.unlink(missing_ok=True)
            progress.advance(bench)
        from ..compress.tokens import decision_margins
        from ..models import has_random_weights
        from ..targets.stats import paired_delta

        margins = decision_margins(loaded.module, eval_data.inputs)
        random_weights = has_random_weights(recipe.model, pretrained=recipe.pretrained)
        reference_hits = measurements[REFERENCE_ROW].accuracy.hits() if measurements[REFERENCE_ROW].accuracy else None
        for kind in kinds:
            parity = (
                None
                if kind == REFERENCE_ROW
                else _parity(
                    logits[REFERENCE_ROW],
                    logits[kind],
                    measurements[kind].precision,
                    eval_data.identities,
                    margins,
                    random_weights,
                )
            )
            delta = (
                paired_delta(reference_hits, measurements[kind].accuracy.hits())
                if reference_hits is not None and kind != REFERENCE_ROW
                else None
            )
            rows.append(
                ResultRow(
                    measurements[kind],
                    parity,
                    baseline=kind == REFERENCE_ROW,
                    scale=f"{loaded.spec} on {recipe.data}",
                    delta=delta,
                )
            )
        extra = {
            "recipe": recipe.__dict__
            | {"rows": list(kinds), "rows_chosen": chosen.why, "steps": [list(s) for s in recipe.steps]},
            "model": loaded.spec,
            "samples": int(len(eval_data.inputs)),
        }
        if calibration is not None:
            extra["calibration"] = {
                "source": recipe.calibration,
                "count": len(calibration.inputs),
                "seed": recipe.seed,
                "disjoint_from_eval": True,
            }
        notes = [f"rows: {chosen.why}"] if chosen.added else []
        write_reports(rows, staging, title=recipe.title, extra=extra, notes=notes)
        (staging / "inputs.npy").unlink()
        if labels_path:
            Path(labels_path).unlink()
    return rows


def evaluate(
    spec: str,
    source: str,
    samples: int | None,
    *,
    arch: str | None = None,
    pretrained: bool = False,
    threads: int | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> Accuracy:
    """Top-1/top-5 of a PyTorch model (`vitedge eval`)."""
    from ..targets.measure import top_k_accuracy
    from ..targets.torch import open_torch

    images = open_source(source)  # what needs no model is refused before it loads
    require_labels(
        images, "so accuracy cannot be measured", "use cifar10, a .npz with y, or a folder with one subfolder per class"
    )
    loaded = load_model(spec, pretrained=pretrained, arch=arch)
    data = prepare_eval_data(images, loaded.data_config, samples, seed=seed)
    runner = open_torch(loaded.module, threads=threads)
    chunks = []
    with progress_bar(console or Console(stderr=True)) as progress:
        task = progress.add_task("eval", total=len(data.inputs), item=source)
        for start in range(0, len(data.inputs), 100):
            chunks.append(runner(data.inputs[start : start + 100]))
            progress.advance(task, len(chunks[-1]))
    return top_k_accuracy(np.concatenate(chunks), data.labels)


def _bench_spec(item: str, target: str, threads: int) -> tuple[RunnerSpec, DataConfig]:
    from ..core.manifest import read_manifest

    path = Path(item)
    if path.is_dir() and not is_transformers_folder(path):
        manifest = read_manifest(path)
        return RunnerSpec(
            path.name, "artifact", str(path), precision=manifest["precision"], target=target, threads=threads
        ), artifact_data_config(path, manifest)
    from ..compress.quantize import stored_precision

    loaded = load_model(item)
    precision = stored_precision(loaded.module)  # a compressed checkpoint's int8 or fp16/bf16 weights
    return RunnerSpec(
        f"{item} (PyTorch)", "torch", item, precision=precision, target=target, threads=threads
    ), loaded.data_config


def bench(
    items: Sequence[str],
    *,
    target: str = "cpu",
    data: str | None = "cifar10",
    samples: int | None = 1000,
    batches: tuple[int, ...] = (1, 8),
    threads: int = 2,
    runs: int = 20,
    identity: Path | None = None,
    accept_new_host_key: bool = False,
    known_hosts: Path | None = None,
    seconds: float = 10.0,
    python: str = "python3",
    board_timeout: float | None = None,
    console: Console | None = None,
    measure: Callable[[MeasureRequest], Measurement] = measure_isolated,
) -> list[ResultRow]:
    """Measure each artifact or model on `target`, each in its own process (`vitedge bench`);
    on an ssh:// board all of them in one session (workflows.board), `seconds` of timed
    calls per batch size there, run by the board's `python`, the whole session stopped after
    `board_timeout` seconds (targets.remote's default when None)."""

    if target.startswith("ssh://"):
        from .board import bench_board_rows

        return bench_board_rows(
            items,
            target,
            folder_for=_image_folder,
            identity=identity,
            accept_new_host_key=accept_new_host_key,
            known_hosts=known_hosts,
            batches=batches,
            threads=threads,
            seconds=seconds,
            data=data,
            samples=samples,
            python=python,
            run_timeout=board_timeout,
            console=console,
        )
    images = open_source(data) if data else None
    rows = []
    with scratch_folder("vitedge-bench-") as scratch:
        for number, item in enumerate(items):
            spec, config = _bench_spec(item, target, threads)
            if images is not None:
                eval_data = prepare_eval_data(images, config, samples)
            else:
                height, width = config.image_size
                eval_data = EvalData(
                    np.random.default_rng(0).standard_normal((8, 3, height, width)).astype(np.float32),
                    None,
                    (),
                    np.arange(8),
                )
            inputs_path = Path(scratch) / f"inputs-{number}.npy"
            np.save(inputs_path, eval_data.inputs)
            labels_path = None
            if eval_data.labels is not None:
                labels_path = Path(scratch) / f"labels-{number}.npy"
                np.save(labels_path, eval_data.labels)
            rows.append(
                ResultRow(
                    measure(
                        MeasureRequest(spec, str(inputs_path), str(labels_path) if labels_path else None, batches, runs)
                    )
                )
            )
    from .board import record_local

    record_local(rows, items)  # on an ARM machine: what `vitedge targets` recommends from
    return _with_torch_yardstick(rows)


def _with_torch_yardstick(rows: list[ResultRow]) -> list[ResultRow]:
    """The first PyTorch fp32 item benched is the "× PyTorch" reference, as in `vitedge run`."""
    first = next((r for r in rows if r.measurement.runtime == "torch" and r.measurement.precision == "fp32"), None)
    return [replace(r, baseline=True) if r is first else r for r in rows]


def _image_folder(source: str, samples: int | None, folder: Path) -> Path:
    """A labelled source as a PNG ImageFolder (one subfolder per class), the form a board's
    torch-free runner reads. A folder is that form already: sent whole, or, where `samples`
    asks for fewer, as a class-balanced draw of its files, copied as they are."""
    import shutil

    from PIL import Image

    images = open_source(source)
    if Path(source).is_dir():
        if samples is None or samples >= images.count:
            return Path(source)
        for index in subset_indices(images, samples):
            original = Path(images.identity(int(index)))
            copy = folder / original.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, copy)
        return folder
    require_labels(images, "which a board's eval needs", "pass a folder with one subfolder per class, or cifar10")
    names = images.class_names or tuple(str(i) for i in range(int(images.labels.max()) + 1))
    for index in subset_indices(images, samples):
        target = folder / names[int(images.labels[index])]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images.get(int(index))).save(target / f"{int(index):06d}.png")
    return folder
