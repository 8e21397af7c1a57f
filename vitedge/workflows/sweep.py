"""Calibration sweep: how many calibration images, and which calibration method or NNCF
settings, give the best int8 model? Every combination is quantized and scored (top-1 and cosine
to the fp32 logits) on the same held-out images, which no calibration draw contains.

ONNX Runtime: image counts × methods (minmax, entropy, percentile; exporter/quantize.py's
definitions). The fp32 export and `quant_pre_process` run once per sweep.
OpenVINO: image counts × NNCF variants (`VARIANTS`: the export default, the mixed preset,
SmoothQuant off, bias correction off or full instead of fast). The fp32 conversion runs once.

Calibration draws of different sizes are nested (the draw is class-balanced round-robin over
seeded per-class permutations), so a larger count only adds images.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibration.calibset import CalibrationSet
from ..calibration.sources import ImageSet
from ..core.errors import VitedgeError
from ..core.io import save_figure_atomic, scratch_folder
from ..exporter.export import ExportOptions
from ..models import LoadedModel
from .int8_eval import (
    EvalSet,
    OpenVinoVariant,
    Progress,
    Score,
    openvino_backend,
    openvino_graph,
    ort_backend,
    ort_settings,
    prepare_onnx,
    score_runner,
)

DEFAULT_COUNTS = (16, 64, 256, 1024)
ORT_METHODS = ("minmax", "entropy", "percentile")
TOP1_TOLERANCE = 0.1  # points: closer than this to the best counts as equally good
COSINE_TOLERANCE = 1e-4


def openvino_variants(options: ExportOptions = ExportOptions()) -> dict[str, OpenVinoVariant]:
    """The export default and one change of it per knob."""
    default = OpenVinoVariant.of(options)
    other_preset = "mixed" if default.preset == "performance" else "performance"
    return {
        "default": default,
        other_preset: dataclasses.replace(default, preset=other_preset),
        "smoothquant-off" if default.smooth_quant else "smoothquant-on": dataclasses.replace(
            default, smooth_quant=not default.smooth_quant
        ),
        "bias-correction-off": dataclasses.replace(default, bias_correction="off"),
        "bias-correction-full": dataclasses.replace(default, bias_correction="full"),
    }


@dataclass(frozen=True)
class SweepPoint:
    format: str
    count: int
    method: str  # ORT calibration method, or an OpenVINO variant name
    settings: dict[str, Any]
    score: Score
    seconds: float  # calibration + quantization, this machine

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "count": self.count,
            "method": self.method,
            "settings": self.settings,
            "score": self.score.to_dict(),
            "seconds": self.seconds,
        }


def check_counts(counts: Sequence[int]) -> tuple[int, ...]:
    if not counts or min(counts) < 1:
        raise VitedgeError(f"calibration counts must be positive, got {list(counts)}", "e.g. --counts 16,64,256,1024")
    return tuple(sorted(set(int(c) for c in counts)))


def calibration_draws(
    loaded: LoadedModel, source: str | ImageSet, counts: Sequence[int], *, seed: int = 0
) -> dict[int, CalibrationSet]:
    """One seeded, class-balanced draw per count from `source`, a spec or a source already open
    (cached on disk)."""
    from ..calibration.calibset import build_calibration_set
    from ..calibration.sources import as_image_set

    images = as_image_set(source)
    return {
        count: build_calibration_set(images, loaded.data_config, count, seed=seed) for count in check_counts(counts)
    }


def sweep_onnx(
    loaded: LoadedModel,
    draws: dict[int, CalibrationSet],
    evalset: EvalSet,
    *,
    methods: Sequence[str] = ORT_METHODS,
    options: ExportOptions = ExportOptions(),
    threads: int | None = 1,
    progress: Progress | None = None,
) -> list[SweepPoint]:
    from ..exporter.quantize import CALIB_METHODS

    unknown = [m for m in methods if m not in CALIB_METHODS]
    if unknown:
        raise VitedgeError(f"unknown calibration method(s) {', '.join(unknown)}", f"use {', '.join(CALIB_METHODS)}")
    points = []
    total = len(draws) * len(methods)
    with scratch_folder("vitedge-sweep-") as tmp:
        work = Path(tmp)
        prepared = prepare_onnx(loaded, options, work)
        for count, calibration in sorted(draws.items()):
            for method in methods:
                chosen = dataclasses.replace(options, calib_method=method)
                began = time.perf_counter()
                backend = ort_backend(prepared, calibration, chosen, work)
                runner = backend.open((), threads=threads)
                seconds = time.perf_counter() - began
                points.append(
                    SweepPoint("onnx", count, method, ort_settings(chosen), score_runner(runner, evalset), seconds)
                )
                if progress:
                    progress(len(points), total, f"onnx {method} {count}")
    return points


def sweep_openvino(
    loaded: LoadedModel,
    draws: dict[int, CalibrationSet],
    evalset: EvalSet,
    *,
    variants: dict[str, OpenVinoVariant] | None = None,
    options: ExportOptions = ExportOptions(),
    threads: int | None = 1,
    progress: Progress | None = None,
) -> list[SweepPoint]:
    variants = variants if variants is not None else openvino_variants(options)
    fp32 = openvino_graph(loaded, options)
    points = []
    total = len(draws) * len(variants)
    with scratch_folder("vitedge-sweep-") as tmp:
        for count, calibration in sorted(draws.items()):
            for name, variant in variants.items():
                backend = openvino_backend(loaded, calibration, options, Path(tmp), variant=variant, model=fp32)
                began = time.perf_counter()
                runner = backend.open((), threads=threads)
                seconds = time.perf_counter() - began
                settings = {**dataclasses.asdict(variant), "overflow_fix": options.overflow_fix}
                points.append(SweepPoint("openvino", count, name, settings, score_runner(runner, evalset), seconds))
                if progress:
                    progress(len(points), total, f"openvino {name} {count}")
    return points


def recommend(
    points: Sequence[SweepPoint], *, top1_tolerance: float = TOP1_TOLERANCE, cosine_tolerance: float = COSINE_TOLERANCE
) -> SweepPoint:
    """The cheapest point (fewest images, then fastest) whose top-1 is within `top1_tolerance`
    points of the best (cosine within `cosine_tolerance` when unlabelled): a difference smaller
    than the evaluation's noise should not cost four times the calibration images."""
    if not points:
        raise VitedgeError("the sweep produced no results", "give at least one count and one method")
    labelled = all(p.score.top1 is not None for p in points)
    value = (lambda p: p.score.top1) if labelled else (lambda p: p.score.cosine_mean)
    tolerance = top1_tolerance if labelled else cosine_tolerance
    best = max(value(p) for p in points)
    good = [p for p in points if value(p) >= best - tolerance]
    return min(good, key=lambda p: (p.count, -p.score.cosine_mean, p.seconds))


def sweep_plot(points: Sequence[SweepPoint], path: Path, *, reference_top1: float | None = None) -> Path:
    """top-1 (if labelled) and 1 − cosine against the number of calibration images, one line
    per format and method; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = all(p.score.top1 is not None for p in points)
    panels = 2 if labelled else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    lines: dict[tuple[str, str], list[SweepPoint]] = {}
    for point in points:
        lines.setdefault((point.format, point.method), []).append(point)
    for (fmt, method), members in lines.items():
        members = sorted(members, key=lambda p: p.count)
        counts = [p.count for p in members]
        style = "-o" if fmt == "onnx" else "--s"
        axes[0][-1].plot(
            counts, [1.0 - p.score.cosine_mean for p in members], style, label=f"{fmt} {method}", markersize=4
        )
        if labelled:
            axes[0][0].plot(counts, [p.score.top1 for p in members], style, label=f"{fmt} {method}", markersize=4)
    if labelled:
        if reference_top1 is not None:
            axes[0][0].axhline(reference_top1, color="black", linewidth=0.8, label="fp32")
        axes[0][0].set_ylabel("top-1 % (held-out images)")
    axes[0][-1].set_ylabel("1 − mean cosine to fp32 logits")
    axes[0][-1].set_yscale("log")
    for axis in axes[0]:
        axis.set_xscale("log", base=2)
        axis.set_xlabel("calibration images")
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle("int8 calibration sweep", fontsize=10)
    figure.tight_layout()
    return save_figure_atomic(figure, path)


def write_sweep(
    points: Sequence[SweepPoint], folder: Path, *, evalset: EvalSet, calibration: dict[str, Any]
) -> dict[str, Path]:
    """`sweep.json` (every point, the recommendation per format, where the images came from)
    and `sweep.png` in `folder`."""
    from ..core.io import write_json_atomic

    folder = Path(folder)
    formats = sorted({p.format for p in points})
    recommendations = {fmt: recommend([p for p in points if p.format == fmt]).to_dict() for fmt in formats}
    paths = {"json": folder / "sweep.json", "plot": folder / "sweep.png"}
    write_json_atomic(
        paths["json"],
        {
            "points": [p.to_dict() for p in points],
            "recommendation": recommendations,
            "rule": f"fewest images within {TOP1_TOLERANCE} top-1 points (or {COSINE_TOLERANCE} cosine) of the best",
            "reference_top1": evalset.reference_top1,
            "evaluation": evalset.record,
            "calibration": {k: v for k, v in calibration.items() if k not in ("identities", "image_sha256")},
        },
    )
    sweep_plot(points, paths["plot"], reference_top1=evalset.reference_top1)
    return paths
