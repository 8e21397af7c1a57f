"""int8 to an accuracy budget: keep the most sensitive nodes in float, one at a time, until the
int8 model is within `max_drop` points of fp32 top-1 on labelled held-out images (or above a
cosine floor when the images have no labels), then give back every kept node the budget does
not need. Works for ONNX Runtime static QDQ (`nodes_to_exclude`) and OpenVINO/NNCF
(`ignored_scope`) alike, because the search only sees an `evaluate(excluded) -> drop` callable.

Why our own greedy loop and not `nncf.quantize_with_accuracy_control`: NNCF's covers OpenVINO
and ONNX-for-OpenVINO models but not ONNX Runtime's QDQ graphs; one loop for both runtimes
ranks, records and prices exclusions the same way, and its core is a pure function that tests
check exactly.

The ranking comes from workflows/sensitivity.py (`float-one` mode on a seeded random
`rank_samples` evaluation images); the budget is judged on all evaluation images, which never
include a calibration image (the manifest's `accuracy_budget.evaluation` says how).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibration.calibset import CalibrationSet
from ..calibration.sources import LOOSE_IMAGES_HINT, ImageSet
from ..core.errors import VitedgeError
from ..core.io import check_output_folder, scratch_folder
from ..core.manifest import MANIFEST
from ..exporter.export import ExportOptions
from ..models import LoadedModel
from .int8_eval import Backend, EvalSet, Progress, Score, open_backend, score_runner
from .sensitivity import SensitivityReport, analyse

PRECISION = {"onnx": "int8-static", "openvino": "int8"}
DEFAULT_RANK_SAMPLES = 1000


# ---------------------------------------------------------------- the greedy core (pure)


@dataclass(frozen=True)
class Trial:
    action: str  # start | keep | release | release refused
    unit: Hashable | None
    excluded: tuple
    drop: float
    met: bool


@dataclass(frozen=True)
class GreedyResult:
    excluded: tuple  # kept in float, in the order they were added
    drop: float
    met: bool
    budget: float
    trials: tuple[Trial, ...]

    @property
    def evaluations(self) -> int:
        return len({frozenset(t.excluded) for t in self.trials})


def greedy_exclusions(
    ranking: Sequence[Hashable], evaluate: Callable[[frozenset], float], budget: float
) -> GreedyResult:
    """Keep units of `ranking` (most sensitive first) in float until `evaluate(kept) <= budget`,
    then try to release each kept unit, last added first, keeping the release whenever the budget
    still holds. The result is 1-minimal: no single kept unit can be given back. At most
    2·len(ranking)+1 evaluations; each distinct set is evaluated once. If even keeping every
    unit misses the budget, the result says `met=False` with all of them kept."""
    if budget < 0:
        raise VitedgeError(f"the accuracy budget must be >= 0, not {budget:g}", "e.g. --max-drop 0.5")
    seen: dict[frozenset, float] = {}

    def measure(units: Iterable[Hashable]) -> float:
        key = frozenset(units)
        if key not in seen:
            seen[key] = float(evaluate(key))
        return seen[key]

    order = list(dict.fromkeys(ranking))
    kept: list[Hashable] = []
    drop = measure(kept)
    trials = [Trial("start", None, (), drop, drop <= budget)]
    for unit in order:
        if drop <= budget:
            break
        kept.append(unit)
        drop = measure(kept)
        trials.append(Trial("keep", unit, tuple(kept), drop, drop <= budget))
    if drop > budget:
        return GreedyResult(tuple(kept), drop, False, budget, tuple(trials))
    for unit in reversed(list(kept)):
        fewer = [k for k in kept if k != unit]
        trial_drop = measure(fewer)
        if trial_drop <= budget:
            kept, drop = fewer, trial_drop
            trials.append(Trial("release", unit, tuple(kept), trial_drop, True))
        else:
            trials.append(Trial("release refused", unit, tuple(fewer), trial_drop, False))
    return GreedyResult(tuple(kept), drop, True, budget, tuple(trials))


# ---------------------------------------------------------------- budgets on real models


@dataclass(frozen=True)
class Budget:
    """`max_drop`: top-1 points below fp32 (labelled images); `cosine_floor`: the mean
    cosine to the fp32 logits must stay at or above it (any images). Exactly one is set."""

    max_drop: float | None = None
    cosine_floor: float | None = None

    def __post_init__(self) -> None:
        if (self.max_drop is None) == (self.cosine_floor is None):
            raise VitedgeError(
                "give exactly one accuracy budget", "--max-drop POINTS (labelled images) or --min-cosine C (any images)"
            )
        if self.max_drop is not None and self.max_drop < 0:
            raise VitedgeError(f"--max-drop must be >= 0, not {self.max_drop:g}", "e.g. --max-drop 0.5 (top-1 points)")
        if self.cosine_floor is not None and not 0 < self.cosine_floor <= 1:
            raise VitedgeError(f"--min-cosine must be in (0, 1], not {self.cosine_floor:g}", "e.g. --min-cosine 0.999")

    @property
    def metric(self) -> str:
        return "top1" if self.max_drop is not None else "cosine"

    @property
    def limit(self) -> float:
        """The bound on `drop` (top-1 points, or 1 − cosine)."""
        return float(self.max_drop) if self.max_drop is not None else 1.0 - float(self.cosine_floor)

    def drop(self, score: Score, reference_top1: float | None) -> float:
        if self.metric == "top1":
            assert score.top1 is not None and reference_top1 is not None
            return round(reference_top1 - score.top1, 9)  # points are k/N·100: no float dust at the bound
        return 1.0 - score.cosine_mean

    def check(self, evalset: EvalSet) -> None:
        self._refuse_unlabelled(evalset.record["source"], evalset.labels, evalset.record.get("unlabelled_because"))

    def check_source(self, images: ImageSet) -> None:
        """`check` on the opened source, before a model loads (a ViT-B's load and calibration
        took 19.6 s before --max-drop on unlabelled --data was refused)."""
        self._refuse_unlabelled(images.name, images.labels, images.unlabelled_because)

    def _refuse_unlabelled(self, source: str, labels: Any, because: str | None) -> None:
        if self.metric == "top1" and labels is None:
            raise VitedgeError(
                f"--max-drop needs labelled images, but {source} has no labels" + (f" ({because})" if because else ""),
                LOOSE_IMAGES_HINT if because else "pass --min-cosine 0.999 instead, or labelled --data",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_drop_points": self.max_drop, "cosine_floor": self.cosine_floor}


@dataclass(frozen=True)
class SpeedRow:
    kept: tuple[str, ...]  # units kept in float so far (cumulative, in order of addition)
    it_per_s: float  # batch 1, this machine
    cost_pct: float  # slowdown against the all-int8 model, percent


@dataclass(frozen=True)
class BudgetOutcome:
    format: str
    budget: Budget
    result: GreedyResult  # over units
    units: dict[str, tuple[str, ...]]  # unit → nodes, for every kept unit
    reference_top1: float | None
    int8: Score  # all int8
    final: Score  # with the kept units in float
    scores: dict[tuple[str, ...], Score]  # every evaluated set (sorted units) → its score
    sensitivity: SensitivityReport
    speed: tuple[SpeedRow, ...]
    threads: int | None
    evaluation: dict[str, Any]  # the images the budget was judged on (disjoint from calibration)

    @property
    def kept_nodes(self) -> tuple[str, ...]:
        return tuple(node for unit in self.result.excluded for node in self.units[unit])

    def record(self) -> dict[str, Any]:
        """`manifest["accuracy_budget"]`: what was kept in float and what it measured."""
        return {
            **self.budget.to_dict(),
            "met": self.result.met,
            "measured_drop": self.result.drop,
            "reference_top1": self.reference_top1,
            "int8_all": self.int8.to_dict(),
            "final": self.final.to_dict(),
            "kept_in_float": list(self.result.excluded),
            "kept_in_float_nodes": list(self.kept_nodes),
            "ranking": [row.unit for row in self.sensitivity.rows],
            "ranking_on": self.sensitivity.evaluation,
            "group": self.sensitivity.group,
            "trials": [
                {"action": t.action, "unit": t.unit, "kept": list(t.excluded), "drop": t.drop, "met": t.met}
                for t in self.result.trials
            ],
            "speed": [{"kept": list(s.kept), "it_per_s_b1": s.it_per_s, "cost_pct": s.cost_pct} for s in self.speed],
            "speed_threads": self.threads,
            "evaluation": self.evaluation,
        }


def time_variants(
    backend: Backend,
    sequence: Sequence[tuple[str, ...]],
    units: dict[str, tuple[str, ...]],
    sample,
    *,
    threads: int | None,
    runs: int,
) -> tuple[SpeedRow, ...]:  # noqa: ANN001 - sample: 1×3×H×W
    """Batch-1 it/s of the all-int8 model and of each cumulative exclusion (median of `runs`)."""
    from ..targets.measure import time_runner

    rows: list[SpeedRow] = []
    for kept in sequence:
        runner = backend.open([n for u in kept for n in units[u]], threads=threads)
        rate = time_runner(runner, sample, warmup=max(1, runs // 4), runs=runs, min_seconds=0.0).it_per_s
        base = rows[0].it_per_s if rows else rate
        rows.append(SpeedRow(tuple(kept), rate, 100.0 * (base - rate) / base))
    return tuple(rows)


def fit_budget(
    backend: Backend,
    evalset: EvalSet,
    budget: Budget,
    *,
    rank_samples: int = DEFAULT_RANK_SAMPLES,
    group: str = "node",
    threads: int | None = 1,
    timing_runs: int = 20,
    progress: Progress | None = None,
) -> BudgetOutcome:
    """Rank (sensitivity, float-one), search (greedy), then time each kept unit's cost."""
    budget.check(evalset)
    ranking = analyse(
        backend, evalset.subset(rank_samples), mode="float-one", group=group, threads=threads, progress=progress
    )
    units = {row.unit: row.nodes for row in ranking.rows}
    scores: dict[tuple[str, ...], Score] = {}
    reference_top1 = evalset.reference_top1

    def evaluate(kept: frozenset) -> float:
        key = tuple(sorted(kept))
        scores[key] = score_runner(backend.open([n for u in key for n in units[u]], threads=threads), evalset)
        if progress:
            progress(len(scores), 2 * len(units) + 1, f"budget: {len(key)} kept in float")
        return budget.drop(scores[key], reference_top1)

    result = greedy_exclusions([row.unit for row in ranking.rows], evaluate, budget.limit)
    cumulative = [tuple(result.excluded[:i]) for i in range(len(result.excluded) + 1)]
    speed = (
        time_variants(backend, cumulative, units, evalset.inputs[:1], threads=threads, runs=timing_runs)
        if timing_runs > 0
        else ()
    )
    return BudgetOutcome(
        format=backend.format,
        budget=budget,
        result=result,
        units={u: units[u] for u in result.excluded},
        reference_top1=reference_top1,
        int8=scores[()],
        final=scores[tuple(sorted(result.excluded))],
        scores=scores,
        sensitivity=ranking,
        speed=speed,
        threads=threads,
        evaluation=evalset.record,
    )


def write_artifact(
    loaded: LoadedModel,
    backend: Backend,
    outcome: BudgetOutcome,
    calibration: CalibrationSet,
    options: ExportOptions,
    out: Path,
    *,
    force: bool = False,
) -> Path:
    """The artifact folder, as `vitedge export` writes it, with the kept nodes in float and
    `accuracy_budget` in the manifest.

    The manifest comes from `export_artifact` itself (an fp32 export into a temp folder, a
    second or so): precision, quantization and calibration are then set to what was built here.
    Once ExportOptions has `nodes_to_exclude` (see the report of issue 7) this becomes one
    `export_artifact(..., options=replace(options, nodes_to_exclude=kept))` call."""
    import json

    from ..core.io import atomic_folder
    from ..core.manifest import write_manifest
    from ..exporter.export import (
        ONNX_FILE,
        OPENVINO_FILE,
        embedded_metadata,
        export_artifact,
    )
    from ..exporter.onnx import check_onnx

    with scratch_folder("vitedge-budget-") as tmp:
        base = export_artifact(loaded, to=backend.format, precision="fp32", out=Path(tmp) / "fp32", options=options)
        manifest = json.loads((base / MANIFEST).read_text())
    for key in ("files", "created"):
        manifest.pop(key, None)
    with atomic_folder(Path(out), marker=MANIFEST, force=force) as staging:
        if backend.format == "onnx":
            settings = backend.quantize(outcome.kept_nodes, staging / ONNX_FILE)
            check_onnx(staging / ONNX_FILE)
            model_file = ONNX_FILE
        else:
            settings = backend.quantize(outcome.kept_nodes, staging / OPENVINO_FILE, embedded_metadata(loaded))
            model_file = OPENVINO_FILE
        manifest.update(
            precision=PRECISION[backend.format],
            model_file=model_file,
            quantization=settings,
            calibration=calibration.manifest(),
            accuracy_budget=outcome.record(),
        )
        write_manifest(staging, manifest)
    return Path(out)


def quantize_to_budget(
    loaded: LoadedModel,
    *,
    to: str,
    calibration: CalibrationSet,
    evalset: EvalSet,
    budget: Budget,
    out: Path,
    options: ExportOptions = ExportOptions(),
    rank_samples: int = DEFAULT_RANK_SAMPLES,
    group: str = "node",
    threads: int | None = 1,
    timing_runs: int = 20,
    force: bool = False,
    progress: Progress | None = None,
) -> BudgetOutcome:
    """`vitedge quantize --max-drop`: rank, search, price, and write the artifact `out`."""
    from ..models import require_vit

    require_vit(loaded, "int8 quantization")
    budget.check(evalset)
    check_output_folder(Path(out), marker=MANIFEST, force=force)
    with scratch_folder("vitedge-budget-") as tmp:
        backend = open_backend(loaded, to, calibration, options, Path(tmp))
        outcome = fit_budget(
            backend,
            evalset,
            budget,
            rank_samples=rank_samples,
            group=group,
            threads=threads,
            timing_runs=timing_runs,
            progress=progress,
        )
        write_artifact(loaded, backend, outcome, calibration, options, out, force=force)
    return outcome
