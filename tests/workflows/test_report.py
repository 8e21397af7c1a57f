from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image
from rich.console import Console

from vitedge.targets.measure import Accuracy, Measurement, Timing
from vitedge.targets.stats import pack_correct, paired_delta
from vitedge.workflows.report import (
    Parity,
    ResultRow,
    accuracy_tie,
    cells,
    fastest_fp32,
    fmt,
    pareto_front,
    pareto_plot,
    print_table,
    recommendation_line,
    recommended,
    write_reports,
)

SAMPLES = 1000
REFERENCE = np.arange(SAMPLES) < 800  # 80.0% right


def _correct(lost: int, gained: int) -> np.ndarray:
    """The reference's correctness with `lost` of its right images wrong and `gained` of its wrong ones right."""
    correct = REFERENCE.copy()
    correct[:lost] = False
    correct[800 : 800 + gained] = True
    return correct


def _row(
    name: str,
    correct: np.ndarray,
    it_s: float,
    mb: float,
    *,
    precision: str = "int8",
    computes: str = "int8+f32",
    runtime: str = "onnxruntime",
    baseline: bool = False,
) -> ResultRow:
    timings = (
        Timing(1, 20, 1 / it_s, 1000 / it_s, 1100 / it_s, 1500 / it_s, it_s, it_s),
        Timing(8, 20, 8 / (it_s * 2), 0, 0, 0, it_s / 4, it_s * 2),
    )
    top1 = 100.0 * correct.mean()
    measurement = Measurement(
        name,
        runtime,
        "cpu",
        precision,
        2,
        Accuracy(top1, 99.0, SAMPLES, pack_correct(correct)),
        timings,
        mb,
        400.0,
        {"cpu": "Test CPU", "isa": ["AVX2"], "cores": 2, "python": "3.11"},
        {"torch": "2.x"},
        execution_precision=computes,
    )
    parity = None if baseline else Parity(0.9991, 0.99, 0.98, 0.05, True)
    return ResultRow(
        measurement, parity, baseline=baseline, delta=None if baseline else paired_delta(REFERENCE, correct)
    )


ROWS = [
    _row("PyTorch fp32", REFERENCE, 100.0, 3.2, precision="fp32", computes="f32", runtime="torch", baseline=True),
    _row("ONNX fp32", REFERENCE, 200.0, 3.2, precision="fp32", computes="f32"),
    _row("int8", _correct(lost=10, gained=5), 250.0, 0.9),  # -0.50, inside the noise
    _row("slow-bad", _correct(lost=100, gained=0), 50.0, 3.2),  # -10.00, outside it
    _row(
        "OpenVINO bf16", REFERENCE, 400.0, 3.2, precision="bf16", computes="bf16", runtime="openvino"
    ),  # not an fp32 yardstick
]


def test_cells_show_execution_precision_interval_and_both_speedups() -> None:
    baseline, fastest = ROWS[0], fastest_fp32(ROWS)
    assert fastest is ROWS[1]  # the fastest row computing in f32, not the faster bf16 one
    values = cells(ROWS[2], baseline, fastest)
    # Agresti-Min for 5 gained / 10 lost of 1000: -0.50 [-1.28, +0.28] (centre -5/1002, se sqrt(16 - 25/1002)/1002), inside the noise (~)
    assert values[:9] == [
        "int8",
        "int8+f32",
        "79.50",
        "-0.50 [-1.28,+0.28]~",
        "0.99910",
        "250.0",
        "500.0",
        "1.25×",
        "2.50×",
    ]
    bad = cells(ROWS[3], baseline, fastest)
    assert bad[3] == "-10.00 [-11.85,-8.11]" and bad[7] == "0.25×" and bad[8] == "0.50×"
    assert cells(baseline, baseline, fastest)[3] == "reference"
    assert fmt(None, "pct") == "—"


def test_pareto_front() -> None:
    points = [(100.0, 80.0), (250.0, 79.5), (50.0, 70.0), (260.0, 60.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_pareto_front_does_not_rank_on_differences_inside_the_noise() -> None:
    """int8 is faster and 0.5 points lower, inside its interval: it dominates the slower fp32
    rows. Ranked on the bare top-1 the same points keep ONNX fp32 on the front for 0.5 points."""
    rows = ROWS[:4]
    points = [(r.measurement.timing(1).it_per_s, r.measurement.accuracy.top1) for r in rows]
    assert pareto_front(points) == [1, 2]
    tied = accuracy_tie(rows)
    assert tied is not None and tied(1, 2) and not tied(2, 3)
    assert pareto_front(points, tied) == [2]


def test_plot_draws_the_noise_aware_front(tmp_path: Path) -> None:
    front = pareto_plot(ROWS[:4], tmp_path / "p.png")
    assert front == ["int8"]
    with Image.open(tmp_path / "p.png") as image:
        assert image.format == "PNG" and image.size[0] > 500


def test_labels_of_points_on_one_spot_do_not_overlap() -> None:
    """Rows of equal speed and top-1 (a tiny model's int8 and fp16 rows can tie) plot on one
    spot and share one label; a crowd of points near each other still gets a label each, no
    label's text on top of another's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tests.support import label_numbers, overlapping_labels
    from vitedge.workflows.report import place_labels

    figure, axes = plt.subplots(figsize=(11.0, 5.5))
    points = [(100.0, 80.0)] * 3 + [(100.0 + n, 80.0 + n / 50) for n in range(1, 25)] + [(100.0, 80.0)]
    axes.scatter([x for x, _ in points], [y for _, y in points])
    axes.set_xscale("log")
    figure.canvas.draw()
    labels = place_labels(figure, axes, points, [str(n) for n in range(1, len(points) + 1)])
    texts = [label.get_text() for label in labels]
    assert texts[0] == "1, 2, 3, 28" and len(texts) == 25
    assert sorted(label_numbers(texts), key=int) == [str(n) for n in range(1, len(points) + 1)]
    boxes = [Text.get_window_extent(label, figure.canvas.get_renderer()).bounds for label in labels]
    assert not overlapping_labels(boxes)
    plt.close(figure)


def test_reports_are_written_and_parseable(tmp_path: Path) -> None:
    paths = write_reports(ROWS, tmp_path, title="t", extra={"model": "m"})
    data = json.loads(paths["json"].read_text())
    assert data["model"] == "m" and len(data["rows"]) == len(ROWS)
    assert [ResultRow.from_dict(row) for row in data["rows"]] == ROWS
    assert (
        data["rows"][2]["delta_top1"]["gained"] == 5
        and data["rows"][2]["measurement"]["execution_precision"] == "int8+f32"
    )
    markdown = paths["markdown"].read_text()
    assert "| int8 | int8+f32 | 79.50 | -0.50 [-1.28,+0.28]~ |" in markdown and "Test CPU" in markdown
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 500
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_print_table_has_every_row() -> None:
    console = Console(record=True, width=200)
    print_table(ROWS, console)
    text = console.export_text()
    assert all(name in text for name in ("fp32", "int8", "slow-bad")) and "2.50×" in text and "1.25×" in text


@pytest.mark.parametrize(
    "value,kind,text",
    [(1234.5, "rate", "1234.5"), (2.345, "rate", "2.35"), (0.99912, "cosine", "0.99912"), (0.5, "agree", "50.0%")],
)
def test_formatter(value: float, kind: str, text: str) -> None:
    assert fmt(value, kind) == text


def test_recommendation_is_the_fastest_row_that_passed_and_kept_accuracy() -> None:
    failed = _row("fast-but-failed-parity", REFERENCE, 900.0, 0.9)
    failed = ResultRow(failed.measurement, Parity(0.9, 0.5, 0.6, 2.0, False), delta=failed.delta)
    lossy = _row("fast-but-lossy", _correct(lost=150, gained=0), 800.0, 0.9)  # -15 points
    rows = [*ROWS, failed, lossy]
    assert recommended(rows).measurement.name == "OpenVINO bf16"  # 400 it/s, same top-1, parity passed
    assert recommended(rows, budget=0.1).measurement.name == "OpenVINO bf16"
    assert recommended([ROWS[0], ROWS[2], ROWS[3]]).measurement.name == "int8"  # -0.5 within 1 point
    assert recommended([ROWS[0], ROWS[2], ROWS[3]], budget=0.25).measurement.name == "PyTorch fp32"
    line = recommendation_line(rows)
    assert "OpenVINO bf16" in line and "400.0 it/s" in line and "2.00× ONNX fp32" in line and "Test CPU" in line
    assert recommendation_line([ROWS[0]]) == ""  # no parity checked: nothing shows an artifact usable
    assert "emulated" not in line
    on_qemu = [
        replace(r, measurement=replace(r.measurement, machine={**r.measurement.machine, "emulated": True}))
        for r in rows
    ]
    assert recommendation_line(on_qemu).endswith("Test CPU (emulated: these speeds rank nothing on real hardware).")
