"""benchmarks/int8_kernels.py: each kernel computes the Linear product it is timed on, and the
table's ratios are read against the kernel vitedge ships and the limit's kernel."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

from vitedge.targets.limits import LinearShape

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import int8_kernels  # noqa: E402

SHAPES = (LinearShape(17, 64, 96, 2), LinearShape(17, 96, 64, 1))


@pytest.fixture(scope="module")
def measured() -> dict[str, dict]:
    names = (
        "ORT MatMul f32",
        int8_kernels.LIMIT,
        int8_kernels.SHIPPED,
        "ORT MatMulNBits 8-bit, blocks of 32, int8 compute",
        "PyTorch Linear f32",
    )
    return {name: int8_kernels.time_kernel(name, SHAPES, 1, 0.01, 1) for name in names}


def test_every_float_output_kernel_computes_the_product(measured):
    assert measured["ORT MatMul f32"]["min_cosine"] > 0.999999
    assert measured["PyTorch Linear f32"]["min_cosine"] > 0.999999
    for int8 in (int8_kernels.SHIPPED, "ORT MatMulNBits 8-bit, blocks of 32, int8 compute"):
        assert 0.99 < measured[int8]["min_cosine"] < measured["ORT MatMul f32"]["min_cosine"]
    assert measured[int8_kernels.LIMIT]["min_cosine"] is None  # int32 out: timed, not compared
    assert all(m["seconds_per_image"] > 0 for m in measured.values())


def test_ratios_are_read_round_by_round_against_the_shipped_and_the_limit_kernel(measured):
    slower = {name: {**m, "seconds_per_image": 2 * m["seconds_per_image"]} for name, m in measured.items()}
    slower[int8_kernels.SHIPPED] = measured[int8_kernels.SHIPPED]  # round 2: only the shipped kernel holds
    names = list(measured)
    computes = {name: "int8" for name in names}
    table = {row["kernel"]: row for row in int8_kernels.summarize(names, [measured, slower], computes)}
    shipped, limit = table[int8_kernels.SHIPPED], table[int8_kernels.LIMIT]
    assert shipped["over_shipped"] == pytest.approx(1.0)
    assert limit["share_of_limit_kernel"] == pytest.approx(1.0)
    ratio = measured[int8_kernels.SHIPPED]["seconds_per_image"] / measured[int8_kernels.LIMIT]["seconds_per_image"]
    assert limit["over_shipped_rounds"] == pytest.approx([ratio, ratio / 2])
    assert shipped["share_of_limit_kernel"] == pytest.approx(statistics.median([1 / ratio, 2 / ratio]))
    assert shipped["ms_per_image"] == pytest.approx(1e3 * measured[int8_kernels.SHIPPED]["seconds_per_image"])
