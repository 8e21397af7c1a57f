"""benchmarks/peers.py's table: each row read against the limits of the file it runs, measured
in the same round, and the headline ratios taken per round."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vitedge.targets.limits import GemmLimit, LinearLimit, LinearShape

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peers  # noqa: E402

SHAPES = (LinearShape(4, 8, 8, 1),)


def _limit(it_per_s: float, kind: str = "int8", *, streamed: bool = False) -> LinearLimit:
    return LinearLimit(kind, 2, 1, 1 / it_per_s, 512.0, SHAPES, "onnxruntime", streamed=streamed)


def _round(scale: float) -> dict[bool, dict[str, LinearLimit]]:
    """One round's limits: whole forward (False) and the trimmed one (True)."""
    return {
        trim: {
            "int8": _limit(scale * (110 if trim else 100)),
            "f32": _limit(scale * 10, "f32"),
            **dict(
                zip(
                    peers.STREAMED_RUNTIMES,
                    (
                        _limit(scale * (45 if trim else 40), streamed=True),
                        _limit(scale * (55 if trim else 50), streamed=True),
                    ),
                    strict=True,
                )
            ),  # the row's share is of the faster
        }
        for trim in (False, True)
    }


def test_int8_rows_are_read_against_the_streamed_limit_of_their_own_round():
    rows = [
        {"name": "vitedge int8", "who": peers.VITEDGE, "trimmed": True},
        {"name": "NNCF", "who": peers.PEER},
        {"name": "compressed int8", "who": peers.COMPRESSED, "trimmed": True},
        {"name": "ONNX fp32", "who": peers.REFERENCE},
    ]
    logits = [[0.0, 1.0, 2.0]]
    rates = [(33.0, 30.0, 66.0, 5.0), (44.0, 40.0, 88.0, 5.0)]  # round 2 ran faster, its limits too
    rounds = [
        [
            {"images_per_s": rate, "execution_precision": precision, "config": {}, "logits": logits}
            for rate, precision in zip(each, ("int8+f32", "int8+bf16", "int8+f32", "f32"), strict=True)
        ]
        for each in rates
    ]
    linear = [_round(1.0), _round(4 / 3)]
    scales = {compressed: peers.Scale(np.asarray(logits), 1e9, linear) for compressed in (False, True)}
    limits = {kind: GemmLimit(kind, 64, 2, 1e12, "onnxruntime") for kind in ("int8", "f32")}
    result = peers.summarize(rows, rounds, limits, scales)
    table = {row["name"]: row for row in result["rows"]}
    assert table["vitedge int8"]["share_of_streamed_linear_limit_rounds"] == pytest.approx([33 / 55, 44 / (55 * 4 / 3)])
    assert table["vitedge int8"]["share_of_linear_limit"] == pytest.approx(0.3)
    assert table["NNCF"]["share_of_streamed_linear_limit"] == pytest.approx(30 / 50)
    assert table["ONNX fp32"]["share_of_streamed_linear_limit"] is None
    assert table["ONNX fp32"]["share_of_linear_limit"] == pytest.approx((5 / 10 + 5 / (10 * 4 / 3)) / 2)
    assert result["per_round"] == pytest.approx([1.1, 1.1])
    assert result["fastest_compressed_over_fastest_peer"] == pytest.approx(2.2)
    lines = peers.markdown(
        {
            **result,
            "model": "ViT",
            "batch": 1,
            "threads": 2,
            "rounds": 2,
            "cpu": "a CPU",
            "compressed_recipe": ["heads"],
            "limits": {"int8": {"giga": 1000.0}},
            "limits_note": "square",
            "load_before": [0.25, 0.5, 1.0],
            "load_after": [1.5, 1.25, 1.0],
            **{
                key: peers.limits_json([each[trim] for each in linear])
                for key, trim in (("linear_limits", False), ("trimmed_linear_limits", True))
            },
            **{
                key: peers.limits_json([each[trim] for each in linear])
                for key, trim in (("compressed_linear_limits", False), ("compressed_trimmed_linear_limits", True))
            },
        }
    ).splitlines()
    row = next(line for line in lines if line.startswith("| vitedge int8 |"))
    assert row.split(" | ")[5] == "60%"
    assert next(line for line in lines if line.startswith("| ONNX fp32 |")).split(" | ")[5] == "–"
    assert lines[-1] == "Load average (1, 5, 15 min) before / after the rounds: 0.25, 0.50, 1.00 / 1.50, 1.25, 1.00."
