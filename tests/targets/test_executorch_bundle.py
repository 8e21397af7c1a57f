"""The board bundle of an ExecuTorch program: built from a real `.pte` artifact, run by
`run_bundle.py` in a virtualenv holding only what a board needs for it (numpy, Pillow, torch,
executorch and the three packages its runtime imports; no vitedge, no onnxruntime), and held
to vitedge's own runner on real CIFAR-10 images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.boards import bundle_logits, check_against_vitedge, one_line_error, run_bundle, vitedge_logits
from vitedge.calibration.sources import CIFAR10_CLASSES
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest, verify_checksums
from vitedge.targets.bundle_build import build_bundle


def requirements(bundle) -> list[str]:  # noqa: ANN001 - Path
    return [
        line for line in (bundle / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]


def test_bundle_names_what_the_board_installs(executorch_artifact, tmp_path):
    bundle = build_bundle(executorch_artifact, tmp_path / "bundle")
    assert sorted(p.name for p in bundle.iterdir()) == [
        "cpu.py",
        "errors.py",
        "labels.txt",
        "manifest.json",
        "model.pte",
        "preprocess.py",
        "requirements.txt",
        "run_bundle.py",
    ]
    manifest = read_manifest(bundle)
    verify_checksums(bundle, manifest)
    assert manifest["bundle"]["runtime"] == "executorch" and manifest["max_batch"] == 32
    assert requirements(bundle) == [
        "numpy>=1.24",
        "pillow>=10",
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "executorch>=1.5,<1.6",
        "torch>=2.14,<2.15",
    ]
    assert "links libtorch" in (bundle / "requirements.txt").read_text()
    for runtime in ("onnxruntime", "openvino"):  # a .pte runs on ExecuTorch only
        with pytest.raises(VitedgeError, match=f"cannot run with --runtime {runtime}"):
            build_bundle(executorch_artifact, tmp_path / runtime, runtime=runtime)


def test_classify_on_the_board_venv_matches_vitedge(executorch_artifact, executorch_python, png_images, tmp_path):
    """The same top-5, and every logit within the fp32 bound, as vitedge's runner on this
    machine: the board needs nothing beyond the packages of this venv."""
    bundle = build_bundle(executorch_artifact, tmp_path / "bundle")
    expected = vitedge_logits(executorch_artifact, png_images)
    got = bundle_logits(executorch_python, bundle, png_images, tmp_path)
    np.testing.assert_array_equal(np.argsort(-got, axis=1)[:, :5], np.argsort(-expected, axis=1)[:, :5])
    check_against_vitedge(executorch_python, bundle, png_images, expected, "fp32", tmp_path)
    done = run_bundle(executorch_python, bundle, "classify", "--json", str(png_images[0]), cwd=tmp_path)
    top = json.loads(done.stdout)["images"][0]["top"]
    assert [t["label"] for t in top] == [CIFAR10_CLASSES[t["index"]] for t in top]


def test_bench_and_eval_on_the_board_venv(executorch_artifact, executorch_python, image_folder, tmp_path):
    bundle = build_bundle(executorch_artifact, tmp_path / "bundle")
    done = run_bundle(
        executorch_python, bundle, "bench", "--batch", "2", "--seconds", "0.3", "--threads", "1", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    bench = json.loads(done.stdout)
    assert (bench["runtime"], bench["format"], bench["batch"]) == ("executorch", "executorch", 2)
    assert (
        bench["detail"]["threads"] == 1 and bench["detail"]["execution_precision"] == "f32"
    )  # read back from the pool
    assert bench["it_per_s"] == pytest.approx(2000.0 / bench["latency_ms"]["p50"])
    assert bench["latency_ms"]["p50"] <= bench["latency_ms"]["p90"] <= bench["latency_ms"]["p99"]
    # load (torch and executorch imported) + first answer: far above one warm call
    assert bench["first_inference_ms"] > 10 * bench["latency_ms"]["p50"] and bench["peak_rss_mb"] > 50
    assert {"executorch", "torch", "numpy", "pillow"} <= set(bench["board"]["versions"])
    assert "processor" in bench["board"]["cpuinfo"] and bench["board"]["machine"]
    done = run_bundle(
        executorch_python, bundle, "eval", str(image_folder), "--batch", "40", "--logits", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    paths = sorted(image_folder.rglob("*.png"))
    expected = vitedge_logits(executorch_artifact, paths)  # 40 images: two calls of the 32-image program
    assert scored["images"] == [p.relative_to(image_folder).as_posix() for p in paths]
    np.testing.assert_allclose(np.array(scored["logits"]), expected, atol=1e-4, rtol=0)
    truth = np.array([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    assert scored["correct"] == int((expected.argmax(axis=1) == truth).sum()) and scored["count"] == 40


def test_a_board_without_executorch_is_told_what_to_install(executorch_artifact, bundle_python, tmp_path):
    """numpy, Pillow and onnxruntime but no torch or executorch: exit 3 and the pip line."""
    bundle = build_bundle(executorch_artifact, tmp_path / "bundle")
    done = run_bundle(bundle_python, bundle, "bench", "--seconds", "0.1", cwd=tmp_path)
    assert done.returncode == 3
    line = one_line_error(done)
    assert f"executorch is not installed for {bundle_python}" in line
    assert "pip install numpy pillow torch executorch --extra-index-url https://download.pytorch.org/whl/cpu" in line
