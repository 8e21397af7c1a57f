"""The accuracy budget: the greedy core checked exactly on constructed cases (no runtime
involved), then once for real with ONNX Runtime on the tiny ViT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitedge.core.errors import VitedgeError
from vitedge.workflows.budget import Budget, greedy_exclusions
from vitedge.workflows.int8_eval import EvalSet


def test_greedy_keeps_exactly_the_needed_nodes_in_a_constructed_case():
    calls = []

    def evaluate(kept: frozenset) -> float:
        calls.append(kept)
        return 0.0 if {"A", "B"} <= kept else 2.0

    result = greedy_exclusions(["C", "A", "D", "B", "E"], evaluate, budget=0.5)
    assert set(result.excluded) == {"A", "B"}
    assert result.met and result.drop == 0.0
    assert len(calls) == len(set(calls))  # every distinct set measured once
    assert len(calls) <= 2 * 5 + 1
    assert [t.action for t in result.trials] == [
        "start",
        "keep",
        "keep",
        "keep",
        "keep",
        "release refused",
        "release",
        "release refused",
        "release",
    ]


def test_greedy_keeps_nothing_when_int8_already_meets_the_budget():
    result = greedy_exclusions(["A", "B"], lambda kept: 0.2, budget=0.5)
    assert result.excluded == () and result.met and result.evaluations == 1


def test_greedy_terminates_and_says_so_when_the_budget_cannot_be_met():
    result = greedy_exclusions(["A", "B", "C"], lambda kept: 1.0, budget=0.5)
    assert not result.met
    assert result.excluded == ("A", "B", "C")
    assert result.evaluations == 4


def test_greedy_additive_drops_keep_the_largest_contributors():
    weights = {"A": 0.4, "B": 0.3, "C": 0.2, "D": 0.1}
    result = greedy_exclusions(
        ["A", "B", "C", "D"], lambda kept: sum(w for u, w in weights.items() if u not in kept), budget=0.45
    )
    assert result.excluded == ("A", "B")
    assert result.drop == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), st.floats(0.0, 2.0), st.randoms(use_true_random=False))
def test_greedy_result_is_one_minimal_and_bounded(weights, budget, rng):
    units = [f"n{i}" for i in range(len(weights))]
    ranking = units[:]
    rng.shuffle(ranking)
    calls = []

    def evaluate(kept: frozenset) -> float:
        calls.append(kept)
        return sum(w for u, w in zip(units, weights, strict=True) if u not in kept)

    result = greedy_exclusions(ranking, evaluate, budget)
    assert len(calls) <= 2 * len(units) + 1
    assert result.met  # keeping everything drives the drop to 0 here
    assert evaluate(frozenset(result.excluded)) <= budget
    for unit in result.excluded:  # no single kept unit can be given back
        assert evaluate(frozenset(result.excluded) - {unit}) > budget


def test_budget_needs_exactly_one_bound_and_labels_for_top1():
    with pytest.raises(VitedgeError):
        Budget()
    with pytest.raises(VitedgeError):
        Budget(max_drop=0.5, cosine_floor=0.99)
    with pytest.raises(VitedgeError):
        Budget(max_drop=-1)
    unlabelled = EvalSet(
        np.zeros((1, 3, 32, 32), np.float32), None, np.zeros((1, 10), np.float32), {"source": "folder"}
    )
    with pytest.raises(VitedgeError, match="labelled"):
        Budget(max_drop=0.5).check(unlabelled)
    Budget(cosine_floor=0.999).check(unlabelled)
    assert Budget(cosine_floor=0.999).limit == pytest.approx(0.001)


@pytest.fixture(scope="module")
def tiny_setup():
    """The tiny ViT, 32 calibration images from cifar10:train, 160 held-out cifar10 test images."""
    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.workflows.int8_eval import evaluation_set

    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 32, seed=0)
    evalset = evaluation_set(loaded, "cifar10", 160, calibration.manifest())
    return loaded, calibration, evalset


def _slice(evalset: EvalSet, start: int, stop: int) -> EvalSet:
    return EvalSet(
        evalset.inputs[start:stop], evalset.labels[start:stop], evalset.reference[start:stop], evalset.record
    )


def test_ort_keeping_nodes_in_float_moves_int8_towards_fp32(tiny_setup, tmp_path):
    """What holds whatever int8 kernels the CPU has (VNNI or not, AMX): the ranking's numbers
    are reproduced when re-measured on the images it was made on, its top node is the best
    single node there and beats all-int8, and every node kept in float is fp32 again. (How
    much one node helps on other images depends on the CPU's int8 arithmetic: not claimed.)"""
    from vitedge.exporter.export import ExportOptions
    from vitedge.workflows.int8_eval import open_backend, score_runner
    from vitedge.workflows.sensitivity import analyse

    loaded, calibration, evalset = tiny_setup
    backend = open_backend(loaded, "onnx", calibration, ExportOptions(), tmp_path)
    ranked = _slice(evalset, 0, 80)
    report = analyse(backend, ranked, mode="float-one", group="node")
    int8 = score_runner(backend.open(()), ranked)
    best = score_runner(backend.open(report.rows[0].nodes), ranked)
    assert int8.cosine_mean == pytest.approx(report.int8.cosine_mean, abs=1e-12) and int8.cosine_mean < 0.99999
    assert best.cosine_mean == pytest.approx(report.rows[0].score.cosine_mean, abs=1e-12)
    assert best.cosine_mean > int8.cosine_mean and all(best.cosine_mean >= row.score.cosine_mean for row in report.rows)
    float_again = score_runner(backend.open(backend.units), _slice(evalset, 80, 160))
    assert float_again.cosine_min > 0.9999999 and float_again.top1_agreement == 1.0


def test_quantize_to_budget_writes_an_artifact_whose_manifest_records_the_kept_nodes(tiny_setup, tmp_path):
    from vitedge.core.manifest import read_manifest, verify_checksums
    from vitedge.exporter.export import ExportOptions
    from vitedge.targets.runners import open_artifact
    from vitedge.workflows.budget import quantize_to_budget
    from vitedge.workflows.int8_eval import open_backend, score_runner

    loaded, calibration, evalset = tiny_setup
    backend = open_backend(loaded, "onnx", calibration, ExportOptions(), tmp_path / "probe")
    int8 = score_runner(backend.open(()), evalset)
    floor = 1.0 - 0.5 * (1.0 - int8.cosine_mean)  # halve the all-int8 cosine error
    outcome = quantize_to_budget(
        loaded,
        to="onnx",
        calibration=calibration,
        evalset=evalset,
        budget=Budget(cosine_floor=floor),
        out=tmp_path / "art",
        rank_samples=80,
        group="block",
        timing_runs=2,
    )

    assert outcome.result.met and outcome.result.excluded
    assert outcome.final.cosine_mean >= floor > outcome.int8.cosine_mean
    manifest = read_manifest(tmp_path / "art")
    verify_checksums(tmp_path / "art", manifest)
    record = manifest["accuracy_budget"]
    assert manifest["precision"] == "int8-static" and manifest["format"] == "onnx"
    assert record["kept_in_float"] == list(outcome.result.excluded)
    assert manifest["quantization"]["nodes_to_exclude"] == sorted(record["kept_in_float_nodes"])
    assert record["met"] and record["cosine_floor"] == floor
    assert (
        record["evaluation"]["disjoint_from_calibration"]
        and record["evaluation"]["calibration_source"] == "cifar10:train"
    )
    assert manifest["calibration"]["source"] == "cifar10:train" and manifest["calibration"]["count"] == 32
    assert [s["kept"] for s in record["speed"]] == [
        list(outcome.result.excluded[:i]) for i in range(len(outcome.result.excluded) + 1)
    ]
    written = score_runner(open_artifact(tmp_path / "art", threads=1), evalset)
    assert written.cosine_mean == pytest.approx(outcome.final.cosine_mean, abs=1e-9)
    json.dumps(record)  # the record is plain JSON


def test_quantize_cli_refuses_two_budgets_before_any_work(tiny_vit, tmp_path, monkeypatch):
    """A real model, so that only the budget check can refuse; any work (loading images,
    calibrating) after it would be a bug: `_setup` is made to fail loudly if reached."""
    from typer.testing import CliRunner

    import vitedge.commands.int8
    from vitedge.cli import app
    from vitedge.models import save_checkpoint

    checkpoint = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the quantize command started work before refusing its budgets")

    monkeypatch.setattr(vitedge.commands.int8, "_setup", no_work)
    args = ["quantize", str(checkpoint), "--to", "onnx", "--out", str(tmp_path / "x")]
    for budgets in (["--max-drop", "0.5", "--min-cosine", "0.9"], []):
        result = CliRunner().invoke(app, [*args, *budgets])
        assert isinstance(result.exception, VitedgeError), result.exception
        assert result.exception.message == "give exactly one accuracy budget" and "--max-drop" in result.exception.hint
    assert not (tmp_path / "x").exists()


def test_export_max_drop_refuses_a_precision_without_calibration_before_any_work(tmp_path):
    from typer.testing import CliRunner

    import vitedge.commands.export  # noqa: F401 - registers the commands
    from vitedge.cli import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            "no-such-model",
            "--to",
            "onnx",
            "--precision",
            "fp32",
            "--out",
            str(tmp_path / "x"),
            "--max-drop",
            "0.5",
        ],
    )
    assert isinstance(result.exception, VitedgeError)
    assert "int8-static" in result.exception.hint
    assert not (tmp_path / "x").exists()


def test_export_max_drop_writes_the_budgeted_artifact(tiny_vit, tmp_path):
    """`vitedge export --max-drop/--min-cosine` runs the same search as `vitedge quantize`, judged on the parity images."""
    from typer.testing import CliRunner

    import vitedge.commands.export  # noqa: F401 - registers the commands
    from vitedge.cli import app
    from vitedge.core.manifest import read_manifest
    from vitedge.models import save_checkpoint

    checkpoint = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    args = [
        "export",
        str(checkpoint),
        "--to",
        "onnx",
        "--precision",
        "int8-static",
        "--out",
        str(tmp_path / "art"),
        "--calib",
        "cifar10:train",
        "--calib-samples",
        "16",
        "--verify-samples",
        "64",
        "--min-cosine",
        "0.5",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = read_manifest(tmp_path / "art")["accuracy_budget"]
    assert record["met"] and record["cosine_floor"] == 0.5
    assert record["kept_in_float"] == []  # a random tiny ViT's int8 is far above cosine 0.5
    assert record["evaluation"]["count"] == 64 and record["evaluation"]["disjoint_from_calibration"]
