"""Labels the model has no output for (a .npz numbered to 19 for a 10-class model, CIFAR-10's
ten for a model of three class folders), and training data of one class: every command that
trains on labels or scores them refuses them when the source opens, before an image is read or
a calibration draw is made."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import cli

TWENTY = "many.npz: the labels run from 0 to 19, but the model has 10 classes (0 to 9)"


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        (
            "train --data three --test-data cifar10 --batch-size 2 --out new.safetensors",
            "cifar10: the labels run from 0 to 9, but the model has 3 classes (0 to 2)",
        ),
        (
            "distill --teacher tiny.safetensors --data many.npz --test-data '' --batch-size 2 --out new.safetensors",
            TWENTY,
        ),
        (
            "distill --teacher tiny.safetensors --data three --test-data many.npz --batch-size 2 --out new.safetensors",
            TWENTY,
        ),
        ("compress tiny.safetensors --step finetune --data many.npz --out new.safetensors", TWENTY),
        ("train --data one --test-data '' --batch-size 2 --out new.safetensors", "one has one class (a); a classifier"),
        ("quantize tiny.safetensors --to onnx --calib cifar10:train --data many.npz --max-drop 1 --out new", TWENTY),
        ("sensitivity tiny.safetensors --to onnx --calib cifar10:train --data many.npz --out new", TWENTY),
        ("calibrate-sweep tiny.safetensors --to onnx --calib cifar10:train --data many.npz --out new", TWENTY),
    ],
    ids=[
        "train-test-data",
        "distill-data",
        "distill-test-data",
        "finetune-data",
        "train-one-class",
        "quantize-data",
        "sensitivity-data",
        "sweep-data",
    ],
)
def test_labels_beyond_the_models_classes_are_refused_before_an_image_is_read(
    tmp_path: Path, capsys, monkeypatch, tiny_checkpoint, command: str, refused: str
) -> None:
    """Before: `distill` and a fine-tune stopped with torch's IndexError (a traceback) after every
    training image was read; `train` scored a 3-class model on CIFAR-10's ten labels (7.93% test
    top-1, as if it had learned little); the int8 commands refused, unnamed, after calibrating;
    `train` on one class folder saved a one-output model (loss 0, every prediction right).
    Now one line naming the source, exit 2, nothing written."""
    import vitedge.calibration.calibset
    import vitedge.compress.train
    import vitedge.workflows.sweep

    def no_reading(*_args, **_kwargs):  # noqa: ANN202 - never returns
        raise AssertionError("images were read before the refusal")

    monkeypatch.setattr(vitedge.compress.train, "images_at_input_size", no_reading)
    monkeypatch.setattr(vitedge.calibration.calibset, "build_calibration_set", no_reading)
    monkeypatch.setattr(vitedge.workflows.sweep, "calibration_draws", no_reading)
    monkeypatch.chdir(tmp_path)
    for number, name in enumerate("abc"):  # three classes, named by none of CIFAR-10's labels
        (tmp_path / "three" / name).mkdir(parents=True)
        for copy in range(2):
            pixels = np.full((8, 8, 3), 60 * number + copy, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "three" / name / f"{copy}.png")
    (tmp_path / "one" / "a").mkdir(parents=True)  # one class: nothing to tell apart
    for copy in range(2):
        Image.fromarray(np.full((8, 8, 3), copy, dtype=np.uint8)).save(tmp_path / "one" / "a" / f"{copy}.png")
    np.savez(tmp_path / "many.npz", x=np.zeros((4, 8, 8, 3), dtype=np.uint8), y=np.array([0, 5, 19, 3]))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, stderr = cli(capsys, monkeypatch, *shlex.split(command))
    assert code == 2 and refused in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
