"""The study's results and the files made of them: study.md (the table, the comparison with
the published study), study.json and study.png. Every number printed is a field of a
`Measurement` taken in the run, or counted from the measured module; published figures come
from the recipe and are labelled as published."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.io import save_figure_atomic, write_json_atomic, write_text_atomic
from ..targets.measure import Measurement
from ..targets.stats import paired_delta
from .report import (
    DASH,
    FIGURE_SIZE,
    NOISE_MARK,
    ResultRow,
    fmt,
    fmt_delta,
    machine_line,
    numbered_key,
    place_labels,
    runtime_color,
)
from .study_recipe import StudyRecipe, StudyRow


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


def top1_of(result: StudyResult) -> float:
    assert result.accuracy.accuracy is not None
    return result.accuracy.accuracy.top1


def cpu_b1_of(result: StudyResult) -> float:
    timing = result.speed.timing(1) or result.speed.timings[0]
    return timing.it_per_s


STUDY_JSON = "study.json"  # every `vitedge study` folder holds it
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
    paired = _paired(result, baseline)
    return fmt(top1_of(result) - top1_of(baseline), "delta") if paired is None else fmt_delta(paired)


def cells(result: StudyResult, baseline: StudyResult, *, pretrained: bool = False) -> list[str]:
    """One table row; every number is a Measurement field (or the measured module's count)."""
    speed_top1 = [fmt(result.speed.accuracy.top1 if result.speed.accuracy else None, "pct")] if pretrained else []
    speed, b8 = result.speed.timing(1), result.speed.timing(8)
    base = baseline.speed.timing(1)
    gpu = result.gpu.timing(1) if result.gpu else None
    return [
        row_label(result),
        fmt(top1_of(result), "pct"),
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


def _published_line(study: Study) -> str | None:
    base, dq, best = (study.recipe.published_as(role) for role in ("baseline", "dq", "best"))
    if base is None or best is None:
        return None
    against_dq = (
        f", top-1 {fmt(best.top1, 'pct')}% against {fmt(dq.top1, 'pct')}% for {dq.label} alone "
        f"({fmt(best.top1 - dq.top1, 'delta')})"
        if dq is not None and dq.top1 is not None and best.top1 is not None
        else ""
    )
    return (
        f"- Published ({best.source or 'the study'}, their CPU): {best.label} {best.it_per_s_cpu:.3f} vs {base.label} "
        f"{base.it_per_s_cpu:.3f} it/s = {fmt(best.it_per_s_cpu / base.it_per_s_cpu, 'ratio')}, "
        f"{fmt(best.mb, 'mb')} MB vs {fmt(base.mb, 'mb')} MB{against_dq}."
    )


def _published_ratio(study: Study, role: str) -> str:
    base, figure = study.recipe.published_as("baseline"), study.recipe.published_as(role)
    if base is None or figure is None:
        return ""
    return f"; published {figure.label}: {fmt(figure.it_per_s_cpu / base.it_per_s_cpu, 'ratio')}"


def comparison(study: Study) -> list[str]:
    """Our DQ row and best combination beside the study's published figures (from the recipe)."""
    base = study.baseline
    published = _published_line(study)
    lines = [published] if published else []
    dq = next(
        (r for r in study.results if r.row.runtime == "torch:int8-dynamic" and not r.row.steps and not r.row.student),
        None,
    )
    if dq is not None:
        lines.append(
            f"- This run, DQ on {dq.speed_model}: {fmt(cpu_b1_of(dq), 'rate')} vs {fmt(cpu_b1_of(base), 'rate')} it/s "
            f"= {fmt(cpu_b1_of(dq) / cpu_b1_of(base), 'ratio')}{_published_ratio(study, 'dq')}, "
            f"{fmt(dq.speed.size_mb, 'mb')} MB, Δ top-1 {fmt(top1_of(dq) - top1_of(base), 'delta')}."
        )
    best = next((r for r in study.results if r.best), None)
    if best is not None:
        lines.append(
            f"- This run, best combination ({best.row.label}, speed on {best.speed_model}): "
            f"{fmt(cpu_b1_of(best), 'rate')} it/s = {fmt(cpu_b1_of(best) / cpu_b1_of(base), 'ratio')} Vanilla, "
            f"{fmt(best.speed.size_mb, 'mb')} MB, top-1 {fmt(top1_of(best), 'pct')}% "
            f"(Δ {fmt(top1_of(best) - top1_of(base), 'delta')} against Vanilla{_published_ratio(study, 'best')})."
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
    lines += [
        "study.png plots each row's speedup over this run's Vanilla against its Δ top-1; the published rows "
        "(another model on another machine) appear only as their own speedup over their own Vanilla.",
        "",
    ]
    if study.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in study.notes], ""]
    versions: dict[str, str] = {}
    for m in measured:
        versions.update(m.versions)
    lines += ["Runtimes: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    return "\n".join(lines) + "\n"


def _paired(result: StudyResult, baseline: StudyResult) -> Any:
    mine, theirs = result.accuracy.accuracy.hits(), baseline.accuracy.accuracy.hits()
    if mine is None or theirs is None or len(mine) != len(theirs):
        return None
    return paired_delta(theirs, mine)


def speedup_plot(study: Study, path: Path) -> Path:
    """What the study compares, on comparable axes: each row's speedup over this run's Vanilla
    (CPU, batch 1) against its Δ top-1 with the paired 95% interval. Published rows come from
    another model on another machine, so they appear only as their own speedup over their own
    Vanilla (a dotted line: no Δ top-1 against a Vanilla top-1 was published)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = study.baseline
    results = [r for r in study.results if r is not base]
    speedups = [cpu_b1_of(r) / cpu_b1_of(base) for r in results]
    deltas = [top1_of(r) - top1_of(base) for r in results]
    colors = [runtime_color(r.speed) for r in results]
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    figure.subplots_adjust(left=0.07, right=0.66, top=0.92, bottom=0.1)
    axes.scatter(speedups, deltas, c=colors, alpha=0.7)
    intervals = [(x, y, _paired(r, base)) for x, y, r in zip(speedups, deltas, results, strict=True)]
    intervals = [(x, y, d) for x, y, d in intervals if d is not None]
    if intervals:
        axes.errorbar(
            [x for x, _, _ in intervals],
            [y for _, y, _ in intervals],
            yerr=[[d.delta - d.low for _, _, d in intervals], [d.high - d.delta for _, _, d in intervals]],
            fmt="none",
            ecolor="gray",
            elinewidth=0.8,
            capsize=2,
            label="Δ top-1 95% interval (paired with Vanilla)",
        )
    axes.axhline(0.0, color="black", lw=0.6)
    axes.axvline(1.0, color="black", lw=0.6)
    published_base = study.recipe.published_as("baseline")
    for figure_row in study.recipe.published:
        if published_base is not None and figure_row is not published_base:
            ratio = figure_row.it_per_s_cpu / published_base.it_per_s_cpu
            axes.axvline(
                ratio,
                linestyle=":",
                color="gray",
                label=f"{figure_row.label}: {ratio:.2f}× (published, their model and CPU)",
            )
    numbered_key(axes, [r.row.label for r in results], colors)
    axes.set_xscale("log")
    axes.set_xlabel(f"speedup over this run's {base.row.label} (CPU, batch 1, log scale; colour: runtime)")
    axes.set_ylabel(f"Δ top-1 points against {base.row.label}")
    axes.set_title(f"{study.recipe.name}: accuracy cost against speedup")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.02, 0.0), borderaxespad=0)
    figure.canvas.draw()  # final limits, so label boxes are measured where they will be drawn
    place_labels(figure, axes, list(zip(speedups, deltas, strict=True)), [str(n) for n in range(1, len(results) + 1)])
    return save_figure_atomic(figure, path)


def write_study(study: Study, folder: Path, *, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    paths = {"json": folder / STUDY_JSON, "markdown": folder / "study.md", "plot": folder / "study.png"}
    recipe = dataclasses.asdict(study.recipe)
    write_json_atomic(
        paths["json"],
        {
            "title": study.recipe.name,
            "scales": study.scales,
            "recipe": recipe,
            "rows": [r.to_dict() for r in study.results],
            "published": [dataclasses.asdict(p) for p in study.recipe.published],
            "comparison": comparison(study),
            "notes": list(study.notes),
            **(extra or {}),
        },
    )
    write_text_atomic(paths["markdown"], markdown(study))
    speedup_plot(study, paths["plot"])
    return paths
