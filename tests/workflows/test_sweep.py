"""Calibration sweep: the recommendation rule (pure), and a small real sweep on the tiny ViT."""

from __future__ import annotations

import json

import pytest

from vitedge.core.errors import VitedgeError
from vitedge.workflows.int8_eval import Score
from vitedge.workflows.sweep import (
    SweepPoint,
    check_counts,
    openvino_variants,
    recommend,
)


def _point(count: int, method: str, top1: float | None, cosine: float, seconds: float = 1.0) -> SweepPoint:
    return SweepPoint("onnx", count, method, {}, Score(cosine, cosine, 0.99, top1), seconds)


def test_recommend_takes_the_fewest_images_within_the_tolerance_of_the_best():
    points = [
        _point(16, "minmax", 70.0, 0.990),
        _point(64, "minmax", 71.45, 0.995),
        _point(256, "entropy", 71.5, 0.997),
        _point(1024, "minmax", 71.3, 0.998),
    ]
    chosen = recommend(points, top1_tolerance=0.1)
    assert (chosen.count, chosen.method) == (64, "minmax")
    assert recommend(points, top1_tolerance=0.0).count == 256


def test_recommend_uses_cosine_without_labels_and_breaks_ties_by_cosine():
    points = [
        _point(16, "minmax", None, 0.9990),
        _point(16, "percentile", None, 0.99985),
        _point(64, "entropy", None, 0.99990),
    ]
    chosen = recommend(points, cosine_tolerance=1e-4)
    assert (chosen.count, chosen.method) == (16, "percentile")
    with pytest.raises(VitedgeError):
        recommend([])


def test_counts_and_variants():
    assert check_counts([64, 16, 64]) == (16, 64)
    with pytest.raises(VitedgeError):
        check_counts([0])
    variants = openvino_variants()
    assert set(variants) == {"default", "mixed", "smoothquant-off", "bias-correction-off", "bias-correction-full"}
    assert variants["default"].preset == "performance" and variants["default"].bias_correction == "fast"


def test_small_real_sweep_writes_table_plot_and_recommendation(tmp_path, figures):
    from tests.support import make_tiny_vit
    from vitedge.workflows.int8_eval import calibration_record, evaluation_set
    from vitedge.workflows.sweep import (
        calibration_draws,
        sweep_onnx,
        sweep_openvino,
        write_sweep,
    )

    loaded = make_tiny_vit()
    draws = calibration_draws(loaded, "cifar10:train", [8, 16], seed=0)
    assert set(draws[8].identities) <= set(draws[16].identities)  # nested draws
    record = calibration_record(list(draws.values()))
    assert record["count"] == 16
    evalset = evaluation_set(loaded, "cifar10", 64, record)
    points = sweep_onnx(loaded, draws, evalset, methods=("minmax", "percentile"))
    points += sweep_openvino(loaded, {8: draws[8]}, evalset, variants={"default": openvino_variants()["default"]})
    assert [(p.format, p.count, p.method) for p in points] == [
        ("onnx", 8, "minmax"),
        ("onnx", 8, "percentile"),
        ("onnx", 16, "minmax"),
        ("onnx", 16, "percentile"),
        ("openvino", 8, "default"),
    ]
    assert all(0.99 < p.score.cosine_mean < 1.0 and p.score.top1 is not None for p in points)
    assert points[1].settings["percentile"] > 99 and points[0].settings["calib_method"] == "minmax"
    paths = write_sweep(points, tmp_path, evalset=evalset, calibration=record)
    data = json.loads(paths["json"].read_text())
    assert set(data["recommendation"]) == {"onnx", "openvino"}
    assert data["evaluation"]["disjoint_from_calibration"] and "identities" not in data["calibration"]
    plot = figures["sweep.png"]
    assert plot["size"] == (1440, 540)  # two panels (labelled images), 12×4.5 in at 120 dpi
    drawn = {(axes, label): (x, y) for axes, label, x, y in plot["lines"]}
    for fmt, method in {(p.format, p.method) for p in points}:
        members = sorted((p for p in points if (p.format, p.method) == (fmt, method)), key=lambda p: p.count)
        x, y = drawn[(1, f"{fmt} {method}")]  # right panel: 1 − cosine per calibration count
        assert x == [p.count for p in members] and y == pytest.approx([1.0 - p.score.cosine_mean for p in members])
        assert drawn[(0, f"{fmt} {method}")][1] == pytest.approx([p.score.top1 for p in members])  # left: top-1
    assert drawn[(0, "fp32")][1] == pytest.approx([evalset.reference_top1] * 2)
