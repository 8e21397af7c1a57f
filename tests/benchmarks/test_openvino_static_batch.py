"""benchmarks/openvino_static_batch.py: both compiles of one IR are timed on the same images and
compute the same logits, and the table reads the ratio the way round it says."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import openvino_static_batch  # noqa: E402


@pytest.fixture(scope="module")
def fp32_ir(tmp_path_factory) -> Path:
    from tests.support import make_tiny_vit
    from vitedge.exporter.export import export_artifact

    return export_artifact(make_tiny_vit(), to="openvino", precision="fp32", out=tmp_path_factory.mktemp("ov") / "fp32")


def test_static_and_dynamic_compiles_are_timed_side_by_side(fp32_ir: Path, tmp_path: Path) -> None:
    out = tmp_path / "static.json"
    assert (
        openvino_static_batch.main(
            [str(fp32_ir), "--out", str(out), "--batches", "1,3", "--rounds", "2", "--seconds", "0.05"]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert [row["batch"] for row in result["rows"]] == [1, 3] and result["precision"] == "fp32"
    for row in result["rows"]:
        assert len(row["round_ratios"]) == 2 and row["static_over_dynamic"] > 0
        assert row["max_abs_logit_difference"] < 1e-4  # fp32: the same products, either shape
        assert row["static_images_per_s"] > 0 and row["dynamic_images_per_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| 3 |" in table and "static / dynamic" in table and result["runner"]["inference_precision"] == "f32"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_benchmark_times_on_the_fastest_cpus_and_gives_them_back(
    fp32_ir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As vitedge's own rows: on a CPU whose kernel rates this process's last CPU fastest (a
    made-up sysfs), the benchmark measures there alone, records it, and afterwards this process
    (here pytest's own) has all its CPUs again."""
    from vitedge.core import cpu

    allowed = sorted(os.sched_getaffinity(0))
    for number in allowed:
        (tmp_path / "sys" / f"cpu{number}").mkdir(parents=True)
        (tmp_path / "sys" / f"cpu{number}" / "cpu_capacity").write_text("1024" if number == allowed[-1] else "500")
    monkeypatch.setattr(cpu, "CPU_SYSFS", str(tmp_path / "sys"))
    seen: list[list[int]] = []
    real = openvino_static_batch.measure

    def measure(*args: object) -> dict:
        seen.append(sorted(os.sched_getaffinity(0)))
        return real(*args)

    monkeypatch.setattr(openvino_static_batch, "measure", measure)
    out = tmp_path / "static.json"
    argv = [str(fp32_ir), "--out", str(out), "--batches", "1", "--rounds", "1", "--seconds", "0.05", "--threads", "1"]
    assert openvino_static_batch.main(argv) == 0
    assert seen == [[allowed[-1]]] and sorted(os.sched_getaffinity(0)) == allowed
    assert json.loads(out.read_text())["timed_on"]["cpus"] == [allowed[-1]]
