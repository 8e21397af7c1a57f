from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from targets.measure import Accuracy, Measurement, Timing
from vitedge.report import Parity, ResultRow, cells, fmt, pareto_front, print_table, write_reports


def _row(name: str, top1: float, it_s: float, mb: float, baseline: bool = False) -> ResultRow:
    timings = (Timing(1, 20, 1 / it_s, 1000 / it_s, 1100 / it_s, 1500 / it_s, it_s, it_s), Timing(8, 20, 8 / (it_s * 2), 0, 0, 0, it_s / 4, it_s * 2))
    measurement = Measurement(name, "torch", "cpu", "fp32", 2, Accuracy(top1, 99.0, 1000), timings, mb, 400.0, {"cpu": "Test CPU", "isa": ["AVX2"], "cores": 2, "python": "3.11"}, {"torch": "2.x"})
    parity = None if baseline else Parity(0.9991, 0.99, 0.98, 0.05, True)
    return ResultRow(measurement, parity, baseline=baseline)


ROWS = [_row("fp32", 80.0, 100.0, 3.2, baseline=True), _row("int8", 79.5, 250.0, 0.9), _row("slow-bad", 70.0, 50.0, 3.2)]


def test_cells_compute_delta_and_speedup() -> None:
    values = cells(ROWS[1], ROWS[0])
    assert values[:7] == ["int8", "79.50", "-0.50", "0.99910", "250.0", "500.0", "2.50×"]
    assert cells(ROWS[0], ROWS[0])[2] == "+0.00"
    assert fmt(None, "pct") == "—"


def test_pareto_front() -> None:
    points = [(100.0, 80.0), (250.0, 79.5), (50.0, 70.0), (260.0, 60.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_reports_are_written_and_parseable(tmp_path: Path) -> None:
    paths = write_reports(ROWS, tmp_path, title="t", extra={"model": "m"})
    data = json.loads(paths["json"].read_text())
    assert data["model"] == "m" and len(data["rows"]) == 3
    assert ResultRow.from_dict(data["rows"][1]) == ROWS[1]
    markdown = paths["markdown"].read_text()
    assert "| int8 | 79.50 | -0.50 |" in markdown and "Test CPU" in markdown
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 500
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_print_table_has_every_row() -> None:
    console = Console(record=True, width=200)
    print_table(ROWS, console)
    text = console.export_text()
    assert all(name in text for name in ("fp32", "int8", "slow-bad")) and "2.50×" in text


@pytest.mark.parametrize("value,kind,text", [(1234.5, "rate", "1234.5"), (2.345, "rate", "2.35"), (0.99912, "cosine", "0.99912"), (0.5, "agree", "50.0%")])
def test_formatter(value: float, kind: str, text: str) -> None:
    assert fmt(value, kind) == text
