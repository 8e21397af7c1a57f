"""A calibration count nobody asked for is not a demand: with the default, every command that
calibrates uses what the source has (and says how many, warning below a sensible minimum);
only a count the user gave is refused when the source is smaller, in one line, exit 2."""

from __future__ import annotations

import warnings

import pytest

from tests.support import make_tiny_vit
from tests.support.cli import cli
from vitedge.calibration.calibset import DEFAULT_CALIB_SAMPLES, MIN_CALIB_SAMPLES, build_calibration_set
from vitedge.calibration.sources import open_source
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest

CONFIG = make_tiny_vit().data_config


pytestmark = pytest.mark.usefixtures("own_cache")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_default_count_uses_what_the_source_has(image_folder):
    images = open_source(str(image_folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 40 images is above the minimum: no warning
        calib = build_calibration_set(images, CONFIG, seed=0, cache=False)
    assert len(calib) == 40 < DEFAULT_CALIB_SAMPLES and calib.defaulted
    assert "calibrating on 40 images of" in calib.summary() and "default is up to 256" in calib.summary()
    held = build_calibration_set(images, CONFIG, seed=0, cache=False, hold_out=8)
    assert len(held) == 32
    with pytest.raises(VitedgeError, match="asked for 41 images but .* only 40 usable"):
        build_calibration_set(images, CONFIG, 41, cache=False)


def test_a_small_default_draw_warns_why(image_folder):
    images = open_source(str(image_folder))
    with pytest.warns(UserWarning, match=rf"only 24 images .*fewer than {MIN_CALIB_SAMPLES}.*outliers"):
        calib = build_calibration_set(images, CONFIG, seed=0, cache=False, hold_out=16)
    assert len(calib) == 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: the user knows, no warning
        assert len(build_calibration_set(images, CONFIG, 24, seed=0, cache=False)) == 24


def test_export_with_the_default_count_calibrates_on_all_40(
    tmp_path, tiny_checkpoint, image_folder, capsys, monkeypatch
):
    out_dir = tmp_path / "q"
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-static", "--out", str(out_dir)]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--calib", str(image_folder), "--no-verify")
    assert code == 0, stderr
    assert f"calibrating on 40 images of {image_folder}" in stderr
    assert read_manifest(out_dir)["calibration"]["count"] == 40


def test_an_explicit_count_the_folder_cannot_give_is_refused(
    tmp_path, tiny_checkpoint, image_folder, capsys, monkeypatch
):
    out_dir = tmp_path / "q"
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-static", "--out", str(out_dir)]
    code, _, stderr = cli(capsys, monkeypatch, *args, "--calib", str(image_folder), "--calib-samples", "256")
    assert code == 2 and not out_dir.exists()
    assert len(_error_lines(stderr)) == 1 and "asked for 256 images" in stderr and "only 40 usable" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", ["sensitivity", "quantize"])
def test_int8_commands_default_to_what_the_folder_has(
    tmp_path, tiny_checkpoint, image_folder, capsys, monkeypatch, command
):
    """The default reaches the draw (the search itself is stopped: its cost is not the point);
    an explicit count the folder cannot give is refused before any work."""
    import vitedge.workflows.budget
    import vitedge.workflows.sensitivity

    seen = {}

    def stop(loaded, *, calibration, evalset, **options):  # noqa: ANN001, ANN202 - the workflow's signature
        seen["calibration"], seen["evalset"] = calibration, evalset
        raise VitedgeError("stopped by the test", "")

    monkeypatch.setattr(vitedge.workflows.sensitivity, "run_sensitivity", stop)
    monkeypatch.setattr(vitedge.workflows.budget, "quantize_to_budget", stop)
    args = [command, str(tiny_checkpoint), "--calib", str(image_folder), "--data", "cifar10", "--samples", "16"]
    if command == "quantize":
        args += ["--to", "onnx", "--out", str(tmp_path / "b"), "--min-cosine", "0.99"]
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 2 and "stopped by the test" in stderr
    assert len(seen["calibration"]) == 40 and f"calibrating on 40 images of {image_folder}" in stderr
    code, _, stderr = cli(capsys, monkeypatch, *args, "--calib-samples", "256")
    assert code == 2 and len(_error_lines(stderr)) == 1 and "asked for 256 images" in stderr


def test_int8_evaluation_on_the_calibration_folder_gets_held_out_images(
    tiny_checkpoint, image_folder, capsys, monkeypatch
):
    import vitedge.workflows.sensitivity

    seen = {}

    def stop(loaded, *, calibration, evalset, **options):  # noqa: ANN001, ANN202 - the workflow's signature
        seen["calibration"], seen["evalset"] = calibration, evalset
        raise VitedgeError("stopped by the test", "")

    monkeypatch.setattr(vitedge.workflows.sensitivity, "run_sensitivity", stop)
    code, _, stderr = cli(
        capsys,
        monkeypatch,
        "sensitivity",
        str(tiny_checkpoint),
        "--calib",
        str(image_folder),
        "--data",
        str(image_folder),
    )
    assert code == 2 and "stopped by the test" in stderr
    assert len(seen["calibration"]) == 32 and seen["evalset"].record["count"] == 8


def test_sweep_default_counts_stop_at_what_the_folder_has():
    from vitedge.commands.int8 import _sweep_counts

    assert _sweep_counts(None, 40) == (16, 40)
    assert _sweep_counts("8,64", 40) == (8, 64)  # asked for: the draw refuses 64 itself
