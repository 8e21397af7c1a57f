"""benchmarks/peers.py's table: each row read against the limits of the file it runs, measured
in the same round, and the headline ratios taken per round."""

from __future__ import annotations

import os
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


# OpenVINO's refusal where its CPU plugin runs the chain's products in float (targets.limits)
REFUSAL = peers.NotInt8(0, 5, "OpenVINO 2026.4.1")


def _round(scale: float, onnxruntime: bool = True, openvino: bool = True) -> dict[bool, dict[str, LinearLimit]]:
    """One round's limits: whole forward (False) and the trimmed one (True); a runtime passed
    False refused its streamed limit that round."""
    return {
        trim: {
            "int8": _limit(scale * (110 if trim else 100)),
            "f32": _limit(scale * 10, "f32"),
            **dict(
                zip(
                    peers.STREAMED_RUNTIMES,
                    (
                        _limit(scale * (45 if trim else 40), streamed=True) if onnxruntime else REFUSAL,
                        _limit(scale * (55 if trim else 50), streamed=True) if openvino else REFUSAL,
                    ),
                    strict=True,
                )
            ),  # the row's share is of the faster
        }
        for trim in (False, True)
    }


ROWS = [
    {"name": "vitedge int8", "who": peers.VITEDGE, "trimmed": True},
    {"name": "NNCF", "who": peers.PEER},
    {"name": "compressed int8", "who": peers.COMPRESSED, "trimmed": True},
    {"name": "ONNX fp32", "who": peers.REFERENCE},
]


def _summary(linear: list[dict[bool, dict[str, LinearLimit]]]) -> tuple[dict, list[str]]:
    """`summarize` of two rounds read against `linear` (round 2 ran faster, its limits too),
    and its markdown's lines."""
    logits = [[0.0, 1.0, 2.0]]
    rates = [(33.0, 30.0, 66.0, 5.0), (44.0, 40.0, 88.0, 5.0)]
    rounds = [
        [
            {"images_per_s": rate, "execution_precision": precision, "config": {}, "logits": logits}
            for rate, precision in zip(each, ("int8+f32", "int8+bf16", "int8+f32", "f32"), strict=True)
        ]
        for each in rates
    ]
    scales = {compressed: peers.Scale(np.asarray(logits), 1e9, linear) for compressed in (False, True)}
    limits = {kind: GemmLimit(kind, 64, 2, 1e12, "onnxruntime") for kind in ("int8", "f32")}
    result = peers.summarize(ROWS, rounds, limits, scales)
    result.update(
        {
            key: peers.limits_json([each[trim] for each in linear])
            for key, trim in (
                ("linear_limits", False),
                ("trimmed_linear_limits", True),
                ("compressed_linear_limits", False),
                ("compressed_trimmed_linear_limits", True),
            )
        }
    )
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
        }
    ).splitlines()
    return result, lines


def _streamed_cell(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.startswith(f"| {name} |")).split(" | ")[5]


def test_int8_rows_are_read_against_the_streamed_limit_of_their_own_round():
    result, lines = _summary([_round(1.0), _round(4 / 3)])
    table = {row["name"]: row for row in result["rows"]}
    assert table["vitedge int8"]["share_of_streamed_linear_limit_rounds"] == pytest.approx([33 / 55, 44 / (55 * 4 / 3)])
    assert table["vitedge int8"]["share_of_linear_limit"] == pytest.approx(0.3)
    assert table["NNCF"]["share_of_streamed_linear_limit"] == pytest.approx(30 / 50)
    assert table["ONNX fp32"]["share_of_streamed_linear_limit"] is None
    assert table["ONNX fp32"]["share_of_linear_limit"] == pytest.approx((5 / 10 + 5 / (10 * 4 / 3)) / 2)
    assert result["per_round"] == pytest.approx([1.1, 1.1])
    assert result["fastest_compressed_over_fastest_peer"] == pytest.approx(2.2)
    assert _streamed_cell(lines, "vitedge int8") == "60%"
    assert _streamed_cell(lines, "ONNX fp32") == "–"
    assert not any("not measurable" in line for line in lines)
    assert all("unavailable" not in v for v in result["linear_limits"].values())
    assert lines[-1] == "Load average (1, 5, 15 min) before / after the rounds: 0.25, 0.50, 1.00 / 1.50, 1.25, 1.00."


def test_a_refused_streamed_limit_leaves_the_share_to_the_runtime_measured():
    """Where OpenVINO will not run the chain in int8 (NotInt8), a round's streamed share is of
    the runtime that was measured; with none measured the share is absent, not a crash."""
    openvino = peers.STREAMED_RUNTIMES[1]
    result, lines = _summary([_round(1.0, openvino=False), _round(4 / 3)])  # refused in round 1 only
    table = {row["name"]: row for row in result["rows"]}
    assert table["vitedge int8"]["share_of_streamed_linear_limit_rounds"] == pytest.approx([33 / 45, 44 / (55 * 4 / 3)])
    assert table["NNCF"]["share_of_streamed_linear_limit_rounds"] == pytest.approx([30 / 40, 40 / (50 * 4 / 3)])
    assert table["vitedge int8"]["share_of_linear_limit"] == pytest.approx(0.3)
    trimmed = result["trimmed_linear_limits"][openvino]
    assert trimmed["it_per_s_rounds"][0] is None and trimmed["it_per_s"] == pytest.approx(55 * 4 / 3)
    assert trimmed["unavailable"] == str(REFUSAL)
    assert "unavailable" not in result["trimmed_linear_limits"][peers.STREAMED_RUNTIMES[0]]
    assert f"{openvino} 73.3 img/s" in lines[-4] and "per round –/73.3)" in lines[-4]
    assert lines[-3] == (
        "Streamed limits not measurable here, so a row's streamed share is of the faster of those measured in "
        "its round (– where none was): OpenVINO 2026.4.1 ran 0 of 5 products of the chain as int8 FullyConnected; "
        "its int8 streamed limit is not measurable on this CPU."
    )

    result, lines = _summary([_round(1.0, openvino=False)] * 2)  # refused every round
    assert result["linear_limits"][openvino]["it_per_s"] is None and f"{openvino} not measurable" in lines[-4]
    vitedge = {row["name"]: row for row in result["rows"]}["vitedge int8"]
    assert vitedge["share_of_streamed_linear_limit"] == pytest.approx((33 / 45 + 44 / 45) / 2)

    result, lines = _summary([_round(1.0, onnxruntime=False, openvino=False)] * 2)  # nothing measured
    table = {row["name"]: row for row in result["rows"]}
    assert table["vitedge int8"]["share_of_streamed_linear_limit_rounds"] == [None, None]
    assert table["vitedge int8"]["share_of_streamed_linear_limit"] is None
    assert table["vitedge int8"]["share_of_linear_limit"] == pytest.approx((33 / 110 + 44 / 110) / 2)
    assert _streamed_cell(lines, "vitedge int8") == "–" and _streamed_cell(lines, "NNCF") == "–"


def test_a_child_process_error_reaches_the_benchmark_at_once() -> None:
    """What a limit or row raises in its own process is raised in the benchmark's (the refusal
    is kept as the round's result, any other error ends the run), and a child that dies ends
    it at once instead of leaving it waiting on a result that never comes."""
    from concurrent.futures.process import BrokenProcessPool
    from functools import partial

    refuse = partial(exec, "from vitedge.targets.limits import NotInt8\nraise NotInt8(0, 5, 'OpenVINO 2026.4.1')")
    refusal = peers.limit_or_refusal(refuse)
    assert isinstance(refusal, peers.NotInt8) and str(refusal) == str(REFUSAL)
    with pytest.raises(ValueError, match="invalid literal"):
        peers.limit_or_refusal(int, "not a number")
    with pytest.raises(BrokenProcessPool):
        peers.in_own_process(os._exit, 3)
    assert peers.in_own_process(max, 2, 3) == 3


def test_the_pytorch_peer_runs_pytorchs_own_per_tensor_defaults(tiny_vit, tmp_path: Path) -> None:
    """The peer is `quantize_dynamic` as PyTorch ships it (one scale per weight tensor), not
    vitedge's per-channel step; red with the peer built from the step's default."""
    from vitedge.compress.registry import load_model

    spec = peers.pytorch_dynamic_int8(tiny_vit, tmp_path, threads=1)
    reloaded = load_model(spec.path)
    assert reloaded.module.get_submodule("blocks.0.mlp.fc1").state_dict()["weight_scale"].numel() == 1
    assert (spec.name, spec.kind, spec.precision) == (peers.PYTORCH_DQ, "torch", "int8-dynamic")
