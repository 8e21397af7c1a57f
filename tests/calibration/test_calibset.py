"""Calibration sets: reproducible, class-balanced, preprocessed by the DataConfig, cached,
disjoint when asked, served to ORT and NNCF; too few images is a clear error."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from PIL import Image

from tests.support import make_tiny_vit
from vitedge.calibration.calibset import (
    CalibrationSet,
    build_calibration_set,
    draw_indices,
    indices_of,
    input_array,
)
from vitedge.calibration.preprocess import preprocess_batch
from vitedge.calibration.sources import ImageSet, open_source
from vitedge.core.errors import VitedgeError

CONFIG = make_tiny_vit().data_config


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))


def test_reproducible_balanced_and_preprocessed(cifar_test, tmp_path):
    calib = build_calibration_set(cifar_test, CONFIG, 40, seed=3)
    again = build_calibration_set(cifar_test, CONFIG, 40, seed=3, cache=False)
    other = build_calibration_set(cifar_test, CONFIG, 40, seed=4, cache=False)
    assert calib.identities == again.identities and calib.identities != other.identities
    assert np.array_equal(calib.inputs, again.inputs)
    assert calib.inputs.shape == (40, 3, 32, 32) and calib.inputs.dtype == np.float32
    assert np.bincount(cifar_test.labels[list(calib.indices)], minlength=10).tolist() == [4] * 10
    pixels = [cifar_test.get(i) for i in calib.indices]
    assert np.array_equal(calib.inputs, preprocess_batch(pixels, CONFIG))
    assert calib.image_sha256[0] == hashlib.sha256(pixels[0].tobytes()).hexdigest()
    assert calib.identities[0] == f"cifar10[{calib.indices[0]}]"
    assert calib.manifest()["count"] == 40 and calib.manifest()["seed"] == 3


class Counted:
    """The same image source, counting how many images are decoded: a cache hit decodes none."""

    def __init__(self, images: ImageSet) -> None:
        self.calls = 0
        self.images = dataclasses.replace(images, get=self._get)
        self._inner = images.get

    def _get(self, index: int) -> np.ndarray:
        self.calls += 1
        return self._inner(index)


def edit_cache(entry, change) -> None:  # noqa: ANN001 - Path, Callable[[np.ndarray], None]
    """Rewrite one cache entry with `change` applied to its inputs (in place)."""
    with np.load(entry) as data:
        arrays = {key: data[key] for key in data.files}
    change(arrays["inputs"])
    np.savez(entry, **arrays)


def test_cached_on_disk(cifar_test, tmp_path):
    first = build_calibration_set(cifar_test, CONFIG, 16, seed=0)
    files = list((tmp_path / "cache" / "calibration").glob("*.npz"))
    assert len(files) == 1
    source = Counted(cifar_test)
    second = build_calibration_set(source.images, CONFIG, 16, seed=0)
    assert second.identities == first.identities and np.array_equal(second.inputs, first.inputs)
    assert source.calls == 0  # served from disk, nothing decoded
    edit_cache(files[0], lambda inputs: inputs.__iadd__(1.0))  # a valid (finite) entry that differs
    assert np.array_equal(build_calibration_set(source.images, CONFIG, 16, seed=0).inputs, first.inputs + 1.0)
    assert source.calls == 0  # what comes back is the file's content, not a rebuild
    build_calibration_set(cifar_test, CONFIG, 17, seed=0)
    assert len(list((tmp_path / "cache" / "calibration").glob("*.npz"))) == 2


def test_exclude_gives_disjoint_draws(cifar_test):
    calib = build_calibration_set(cifar_test, CONFIG, 50, seed=0, cache=False)
    verify = build_calibration_set(cifar_test, CONFIG, 200, seed=0, exclude=calib.indices, cache=False)
    assert not set(calib.indices) & set(verify.indices)
    assert indices_of(cifar_test, calib.identities) == sorted(calib.indices)


def test_too_few_images_says_how_many(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1"):
        images = open_source(str(folder))
    with pytest.raises(VitedgeError, match="only 3 usable readable images"):
        build_calibration_set(images, CONFIG, 5)
    with pytest.raises(VitedgeError, match="only 1 usable"):
        draw_indices(images, 2, exclude=[0, 1])
    calib = build_calibration_set(images, CONFIG, 3)  # a flat folder: resized and cropped to 32×32
    assert calib.inputs.shape == (3, 3, 32, 32) and calib.identities[0].endswith("0.png")


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitedgeError, match="no readable images"):
        open_source(str(tmp_path / "empty"))


def test_serves_ort_and_nncf(cifar_test):
    calib = build_calibration_set(cifar_test, CONFIG, 10, seed=0, cache=False)
    reader = calib.ort_reader("input", batch_size=4)
    shapes = []
    while (item := reader.get_next()) is not None:
        shapes.append(item["input"].shape[0])
    assert shapes == [4, 4, 2]
    reader.rewind()
    assert np.array_equal(reader.get_next()["input"], calib.inputs[:4])
    dataset = calib.nncf_dataset()
    items = list(dataset.get_inference_data())
    assert len(items) == 10 and np.array_equal(items[3], calib.inputs[3:4])
    assert isinstance(calib, CalibrationSet) and len(calib) == 10


def test_damaged_cache_entry_is_rebuilt(cifar_test, tmp_path):
    """A damaged entry is detected, rebuilt from the source (6 images decoded again) and
    rewritten clean; an undamaged one is served as is (the control: the cache is read)."""
    first = build_calibration_set(cifar_test, CONFIG, 6, seed=0)
    [entry] = list((tmp_path / "cache" / "calibration").glob("*.npz"))

    def set_inf(inputs: np.ndarray) -> None:
        inputs[2, 0, 0, 0] = np.inf

    for damage in (set_inf, lambda _: entry.write_bytes(b"truncated")):
        source = Counted(cifar_test)
        assert (
            np.array_equal(build_calibration_set(source.images, CONFIG, 6, seed=0).inputs, first.inputs)
            and source.calls == 0
        )
        if damage is set_inf:
            edit_cache(entry, damage)
        else:
            damage(None)
        rebuilt = build_calibration_set(source.images, CONFIG, 6, seed=0)
        assert np.array_equal(rebuilt.inputs, first.inputs) and source.calls == 6
        with np.load(entry) as data:
            assert np.array_equal(data["inputs"], first.inputs)  # the entry was rewritten clean


@pytest.mark.parametrize("command", ["eval", "export"])
def test_images_beyond_memory_are_refused_before_any_work(monkeypatch, tmp_path, command):
    """`vitedge eval vit_base_patch16_224 --samples all` holds 10,000 float32 224-pixel inputs
    (6 GB; twice that while they were stacked): on a machine with less, the out-of-memory
    killer ended it minutes in. Here the machine has 50 MB and CIFAR-10's 10,000 32-pixel test
    images need 123 MB (the calibration set's 5,000 training images, 61 MB)."""
    from typer.testing import CliRunner

    from vitedge.cli import app

    monkeypatch.setattr("vitedge.core.cpu.memory_available", lambda root="/": 50_000_000)
    monkeypatch.chdir(tmp_path)
    args = {
        "eval": ["eval", "vitedge-cifar10", "--samples", "all"],
        "export": [
            "export", "vitedge-cifar10", "--to", "onnx", "--precision", "int8-static", "--calib", "cifar10:train",
            "--calib-samples", "5000", "--out", "art",
        ],
    }[command]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert isinstance(done.exception, VitedgeError), done.output
    need = "10000 images need 123 MB" if command == "eval" else "5000 images need 61 MB"
    assert done.exception.message == (
        f"{need} for their float32 3×32×32 inputs alone, and this machine has 50 MB available"
    )
    assert "--samples" in done.exception.hint and not (tmp_path / "art").exists()
    assert input_array(4, CONFIG).shape == (4, 3, 32, 32)  # what fits is allocated
