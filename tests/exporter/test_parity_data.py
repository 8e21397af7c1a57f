"""After calibrating on the user's own images, the parity check runs on other images of that
same source (the model's domain, never a calibration image), not on CIFAR-10; CIFAR-10 is the
fallback only for models whose labels are CIFAR-10's; and the result says which images it used."""

from __future__ import annotations

import json

import pytest

from tests.support import count_openings
from tests.support.cli import cli
from vitedge.calibration.sources import CIFAR10_CLASSES
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest
from vitedge.workflows.parity import MIN_HELD_OUT, plan_parity_data, settle_parity_data

OTHER_LABELS = tuple(f"part-{i}" for i in range(10))  # a domain model's classes, not CIFAR-10's


pytestmark = pytest.mark.usefixtures("own_cache")


def test_export_checks_parity_on_held_out_images_of_the_calibration_folder(
    tmp_path, tiny_checkpoint, image_folder, capsys, monkeypatch
):
    out_dir = tmp_path / "q"
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-static", "--out", str(out_dir)]
    code, stdout, stderr = cli(capsys, monkeypatch, *args, "--calib", str(image_folder), "--threads", "1", "--json")
    result = json.loads(stdout)
    # a random-weight model's int8 top-1 agreement is a coin toss: the exit code follows the verdict
    assert code == (0 if result["parity"]["passed"] else 1), stderr
    data = result["parity"]["data"]
    calibration = read_manifest(out_dir)["calibration"]
    assert data["source"] == str(image_folder) == calibration["source"]
    assert data["held_out_from_calibration"] and "held out from the calibration source" in data["why"]
    assert calibration["count"] + data["count"] == 40 and data["count"] >= MIN_HELD_OUT
    assert len(set(data["identities"])) == data["count"] == result["parity"]["samples"]
    assert not set(data["identities"]) & set(calibration["identities"])
    assert f"calibrating on {calibration['count']} images of {image_folder}" in stderr
    assert f"{data['count']} left for the parity check" in stderr

    code, stdout, stderr = cli(capsys, monkeypatch, "verify", str(out_dir), "--threads", "1")
    assert code in (0, 1), stderr
    assert f"parity data: {data['count']} images of {image_folder}, held out from the calibration source" in stdout


def test_export_without_a_source_says_it_used_cifar10(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--out", str(tmp_path / "f"), "--verify-samples", "16"]
    code, stdout, stderr = cli(capsys, monkeypatch, *args, "--threads", "1")
    assert code == 0, stderr
    assert "parity data: 16 images of cifar10, CIFAR-10 test images, the model's own classes" in stdout


def test_the_default_plan_follows_the_calibration_source():
    plan = plan_parity_data(None, calibration_source="/data/parts", labels=OTHER_LABELS)
    assert (plan.spec, plan.held_out) == ("/data/parts", True)
    assert plan_parity_data(None, calibration_source="cifar10:train", labels=CIFAR10_CLASSES).spec == "cifar10"
    asked = plan_parity_data("/data/other", calibration_source="/data/parts", labels=OTHER_LABELS)
    assert (asked.spec, asked.held_out, asked.asked) == ("/data/other", False, True)


def test_too_few_images_left_falls_back_only_for_a_cifar10_model(image_folder):
    from vitedge.calibration.sources import open_source

    images = open_source(str(image_folder))
    everything = {"source": images.name, "identities": list(images.identities)[:36]}  # 4 left
    plan = plan_parity_data(None, calibration_source=images.name, labels=OTHER_LABELS)
    with pytest.raises(VitedgeError, match="only 4 of the 40 images .* are not calibration images") as refused:
        settle_parity_data(plan, calibration=everything, labels=OTHER_LABELS, images=images)
    assert "--calib-samples" in refused.value.hint and "--verify-data" in refused.value.hint
    with pytest.warns(UserWarning, match="checking parity on CIFAR-10 test images"):
        fallback = settle_parity_data(plan, calibration=everything, labels=CIFAR10_CLASSES, images=images)
    assert fallback.spec == "cifar10" and "only 4 of the 40" in fallback.why
    enough = {"source": images.name, "identities": list(images.identities)[:32]}
    assert settle_parity_data(plan, calibration=enough, labels=OTHER_LABELS, images=images) == plan


def test_each_source_is_opened_once_and_a_mistyped_one_before_the_model_loads(
    tmp_path, tiny_checkpoint, image_folder, capsys, monkeypatch
):
    """`export` opens --calib and --verify-data before the model loads, so a typo is named in a
    second, and its parity check draws from those same opened sets; `verify` opens its source
    once too (a folder is listed and every image's header read on each opening)."""
    import vitedge.compress.registry

    opened = count_openings(monkeypatch)
    out_dir, folder = tmp_path / "q", str(image_folder)
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-static", "--calib", folder]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--out", str(out_dir), "--threads", "1")
    assert code in (0, 1), stderr  # a random-weight model's int8 verdict is a coin toss on near-ties
    assert opened == [folder], opened  # calibration and the held-out parity images: one listing

    opened.clear()
    code, stdout, stderr = cli(capsys, monkeypatch, "verify", str(out_dir), "--threads", "1")
    assert code in (0, 1) and "held out from the calibration source" in stdout, stderr
    assert opened == [folder], opened  # the held-out plan's check and its draw: one listing

    opened.clear()
    code, _, stderr = cli(capsys, monkeypatch, "verify", str(out_dir), "--data", "cifar10", "--samples", "8")
    assert code in (0, 1), stderr
    assert opened == ["cifar10"], opened

    opened.clear()
    verify = ["--verify-data", "cifar10", "--verify-samples", "8", "--threads", "1"]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--out", str(tmp_path / "v"), *verify)
    assert code in (0, 1), stderr
    assert opened == [folder, "cifar10"], opened

    opened.clear()
    verify = ["--verify-data", folder, "--verify-samples", "8", "--threads", "1"]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--calib-samples", "8", "--out", str(tmp_path / "c"), *verify)
    assert code in (0, 1), stderr
    assert opened == [folder], opened  # --verify-data naming --calib's images: one listing

    def no_loading(*_args, **_kwargs):  # noqa: ANN202 - never returns
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(vitedge.compress.registry, "load_model", no_loading)
    code, _, stderr = cli(capsys, monkeypatch, "verify", str(out_dir), "--data", str(tmp_path / "no-such-folder"))
    assert code == 2 and "does not exist" in stderr, stderr
