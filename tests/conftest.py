"""Shared fixtures: a tiny 32×32 ViT (seconds to export), real CIFAR-10 test images, and the
board tests' artifacts, images and torch-free virtualenv (built once a session)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import make_tiny_vit
from vitedge.calibration.sources import CIFAR10_CLASSES, open_source
from vitedge.models import LoadedModel

torch.set_num_threads(1)

MOST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """The worker count of pyproject's `-n auto`: one per CPU this process may keep busy (a
    taskset's or a cgroup CPU quota's count, where xdist's own would count the host's cores), at
    most MOST_WORKERS (each imports torch, ONNX Runtime and OpenVINO and builds its own session
    fixtures, the board venvs among them); none (0: in this process) with one CPU. In-process
    tests run their models at one thread, so with one worker a second CPU mostly idled.
    xdist's own PYTEST_XDIST_AUTO_NUM_WORKERS still decides where it is set."""
    import os

    from vitedge.core.cpu import usable_cpus

    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    usable = usable_cpus()[0] or 1
    return 0 if usable < 2 else min(usable, MOST_WORKERS)


@pytest.fixture(scope="session", autouse=True)
def _cache_of_the_session(tmp_path_factory) -> Iterator[Path]:
    """Every test's vitedge cache lives under pytest's temporary folder, never the user's own
    (~/.cache/vitedge): a `vitedge run` in a test would otherwise record the test's tiny model
    as this machine's measurement, which `vitedge targets` then recommends from. `own_cache`
    still gives a test a cache of its own."""
    patch = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("vitedge-cache")
    patch.setenv("VITEDGE_CACHE", str(folder))
    yield folder
    patch.undo()


@pytest.fixture()
def tiny_vit() -> LoadedModel:
    return make_tiny_vit()


@pytest.fixture()
def tiny_checkpoint(tmp_path) -> Path:
    """The tiny ViT saved as a .safetensors checkpoint, as a user passes a model file."""
    from vitedge.models import save_checkpoint

    return save_checkpoint(make_tiny_vit(), tmp_path / "tiny.safetensors")


@pytest.fixture()
def own_cache(tmp_path, monkeypatch) -> Path:
    """A vitedge cache of the test's own (calibration sets, students), so no run reuses another's."""
    monkeypatch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def cifar_test():
    """The real CIFAR-10 test set (from $VITEDGE_DATA, the user cache, or the download)."""
    return open_source("cifar10")


@pytest.fixture(scope="session")
def cifar_batch(cifar_test) -> tuple[np.ndarray, np.ndarray]:
    """64 real test images, preprocessed for the tiny ViT, with their labels."""
    from vitedge.calibration.preprocess import preprocess_batch

    config = make_tiny_vit().data_config
    images = [cifar_test.get(i) for i in range(64)]
    return preprocess_batch(images, config), np.asarray(cifar_test.labels[:64])


# ---------------------------------------------------------------- board fixtures (bundle, SSH, detection)


@pytest.fixture(scope="session")
def bundle_python(tmp_path_factory) -> Path:
    """Python of a fresh venv with numpy, Pillow and onnxruntime only; built once a session."""
    from tests.support.boards import BUNDLE_PACKAGES, clean_env, make_venv

    python = make_venv(tmp_path_factory.mktemp("bundle-venv"), BUNDLE_PACKAGES)
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=clean_env())
    assert probe.returncode != 0, "the bundle venv must not see torch"
    return python


@pytest.fixture(scope="session")
def executorch_python(tmp_path_factory) -> Path:
    """Python of a venv holding what a board needs for an ExecuTorch bundle and nothing else
    (boards.EXECUTORCH_BOARD, linked from this installation): no vitedge, no onnxruntime."""
    from tests.support.boards import EXECUTORCH_BOARD, clean_env, make_linked_venv

    folder = tmp_path_factory.mktemp("executorch-venv")
    python = make_linked_venv(folder / "venv", **EXECUTORCH_BOARD)
    for absent in ("vitedge", "onnxruntime"):  # run outside the checkout, whose vitedge/ python -c would see
        probe = subprocess.run(
            [str(python), "-c", f"import {absent}"], capture_output=True, env=clean_env(), cwd=folder
        )
        assert probe.returncode != 0, f"the ExecuTorch board venv must not see {absent}"
    return python


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """The tiny ViT as a checkpoint file: artifacts exported from it record a source that
    loads again (a board bench checks their parity against it)."""
    from vitedge.models import save_checkpoint

    return save_checkpoint(make_tiny_vit(), tmp_path_factory.mktemp("tiny-source") / "tiny.safetensors")


@pytest.fixture(scope="session")
def executorch_artifact(tmp_path_factory, tiny_source) -> Path:
    """The tiny ViT through `vitedge export`'s own exporter to ExecuTorch fp32 (XNNPACK)."""
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import export_artifact

    return export_artifact(
        load_model(str(tiny_source)),
        to="executorch",
        precision="fp32",
        out=tmp_path_factory.mktemp("tiny-executorch") / "artifact",
    )


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory) -> Path:
    from tests.support.boards import make_onnx_artifact

    return make_onnx_artifact(tmp_path_factory.mktemp("tiny-fp32") / "artifact")


@pytest.fixture(scope="session")
def default_int8_artifact(tmp_path_factory) -> Path:
    """The default model (embedded vitedge-cifar10) through `vitedge export`'s own exporter
    to ONNX int8 (dynamic: the int8 ONNX precision that needs no calibration images)."""
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import export_artifact
    from vitedge.models import DEFAULT_MODEL

    return export_artifact(
        load_model(DEFAULT_MODEL),
        to="onnx",
        precision="int8-dynamic",
        out=tmp_path_factory.mktemp("vitedge-cifar10-onnx-int8") / "artifact",
    )


@pytest.fixture(scope="session")
def png_images(tmp_path_factory, cifar_test) -> list[Path]:
    """Eight real CIFAR-10 test images as PNG, one of them enlarged to 45×40 so that the
    resize + crop path of the preprocessing runs too."""
    folder = tmp_path_factory.mktemp("png")
    paths = []
    for i in range(8):
        image = Image.fromarray(cifar_test.get(i))
        if i == 7:
            image = image.resize((45, 40), Image.Resampling.BICUBIC)
        path = folder / f"{i}-{CIFAR10_CLASSES[int(cifar_test.labels[i])]}.png"
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, cifar_test) -> Path:
    """An ImageFolder of 40 real CIFAR-10 test images (class subfolders named by label)."""
    root = tmp_path_factory.mktemp("imagefolder")
    for i in range(40):
        label = CIFAR10_CLASSES[int(cifar_test.labels[i])]
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(cifar_test.get(i)).save(root / label / f"{i:05d}.png")
    return root


# ---------------------------------------------------------------- plots: what was drawn, not only that a file exists


def _drawn(figure) -> dict:  # noqa: ANN001 - matplotlib Figure
    """The data a figure shows, read from its artists before it is saved: the points of each
    scatter (collection), lines (axes index, label, x, y), bar widths, annotation texts and
    their boxes in display space, legend texts and titles of every axes."""
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text

    drawn: dict = {"scatters": [], "lines": [], "bars": [], "labels": [], "titles": [], "key": [], "label_boxes": []}
    renderer = figure.canvas.get_renderer()
    for index, axes in enumerate(figure.axes):
        for collection in axes.collections:
            drawn["scatters"].append([tuple(float(v) for v in xy) for xy in collection.get_offsets()])
        for line in axes.get_lines():
            drawn["lines"].append(
                (index, line.get_label(), [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()])
            )
        drawn["bars"].extend(float(p.get_width()) for p in axes.patches if isinstance(p, Rectangle))
        drawn["labels"].extend(text.get_text() for text in axes.texts)
        # the text alone, not an annotation's leader line (which may cross other labels)
        drawn["label_boxes"].extend(tuple(Text.get_window_extent(text, renderer).bounds) for text in axes.texts)
        for legend in [child for child in axes.get_children() if type(child).__name__ == "Legend"]:
            drawn["key"].extend(text.get_text() for text in legend.get_texts())
        drawn["titles"].append((axes.get_title(), axes.get_xlabel(), axes.get_ylabel()))
    return drawn


@pytest.fixture()
def figures(monkeypatch) -> dict[str, dict]:
    """Every figure saved through `save_figure_atomic` during the test, by file name (outputs
    are staged in a temp folder and renamed): what it drew (see `_drawn`) and the pixel size
    of the PNG that was written, read back with Pillow."""
    import vitedge.core.io
    import vitedge.workflows.report
    import vitedge.workflows.sensitivity
    import vitedge.workflows.study_report
    import vitedge.workflows.sweep

    saved: dict[str, dict] = {}
    original = vitedge.core.io.save_figure_atomic

    def recording(figure, path, **options):  # noqa: ANN001, ANN202 - same signature as the original
        drawn = _drawn(figure)
        written = original(figure, path, **options)
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.load()
            drawn["size"] = image.size
        saved[Path(path).name] = drawn
        return written

    for module in (
        vitedge.core.io,
        vitedge.workflows.sensitivity,
        vitedge.workflows.sweep,
        vitedge.workflows.report,
        vitedge.workflows.study_report,
    ):
        monkeypatch.setattr(module, "save_figure_atomic", recording)
    return saved
