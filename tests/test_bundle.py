"""The board bundle: built from a real ONNX artifact, run by `run_bundle.py` in a fresh
virtualenv that holds only numpy, Pillow and onnxruntime (no torch, no vitedge), and
compared with vitedge's own runner on real CIFAR-10 images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import calibration.preprocess
from calibration.preprocess import preprocess_batch
from calibration.sources import CIFAR10_CLASSES
from conftest import make_tiny_vit
from exporter.artifact import atomic_folder, write_manifest
from targets.bundle_build import build_bundle, is_bundle
from targets.manifest import read_manifest, verify_checksums
from targets.runners import open_artifact
from vitedge.errors import VitedgeError

BUNDLE_PACKAGES = ("numpy", "pillow", "onnxruntime")


def make_onnx_artifact(folder: Path, *, int8: bool = False, seed: int = 0) -> Path:
    """The tiny ViT exported to ONNX (optionally ORT dynamic int8) as a manifest artifact."""
    loaded = make_tiny_vit(seed)
    with atomic_folder(folder) as staging:
        fp32 = staging / ("fp32.onnx" if int8 else "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                loaded.module,
                torch.zeros(1, 3, 32, 32),
                str(fp32),
                opset_version=17,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(staging / "model.onnx"), weight_type=QuantType.QInt8)
            fp32.unlink()
        write_manifest(
            staging,
            {
                "format": "onnx",
                "precision": "int8-dynamic" if int8 else "fp32",
                "model_file": "model.onnx",
                "input_name": "input",
                "output_name": "logits",
                "data_config": loaded.data_config.to_dict(),
            },
        )
    return folder


def make_venv(folder: Path, packages: tuple[str, ...]) -> Path:
    """A plain virtualenv (no system site-packages) with only `packages`; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    if not packages:
        return python
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", *packages], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"pip install {' '.join(packages)} into a fresh venv failed (needs the PyPI mirror):\n{done.stderr[-2000:]}")
    return python


def clean_env() -> dict[str, str]:
    """The environment minus anything that could let the venv see vitedge or torch."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}


def run_bundle(python: Path, bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(bundle / "run_bundle.py"), *args], capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=120)


def session_dir(tmp_path_factory, name: str) -> Path:
    """One folder per test session by name: test_remote.py imports these fixtures, and
    pytest would otherwise build them again for that module."""
    return tmp_path_factory.getbasetemp() / name


@pytest.fixture(scope="session")
def bundle_python(tmp_path_factory) -> Path:
    """Python of a fresh venv with numpy, Pillow and onnxruntime only; built once a session."""
    folder = session_dir(tmp_path_factory, "bundle-venv")
    python = folder / "bin" / "python"
    if not (folder / "complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        make_venv(folder, BUNDLE_PACKAGES)
        probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=clean_env())
        assert probe.returncode != 0, "the bundle venv must not see torch"
        (folder / "complete").touch()
    return python


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory) -> Path:
    folder = session_dir(tmp_path_factory, "tiny-fp32")
    return folder if folder.is_dir() else make_onnx_artifact(folder)


@pytest.fixture(scope="session")
def int8_artifact(tmp_path_factory) -> Path:
    folder = session_dir(tmp_path_factory, "tiny-int8")
    return folder if folder.is_dir() else make_onnx_artifact(folder, int8=True)


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
    root = session_dir(tmp_path_factory, "imagefolder")
    if not root.is_dir():
        with atomic_folder(root) as staging:
            for i in range(40):
                label = CIFAR10_CLASSES[int(cifar_test.labels[i])]
                (staging / label).mkdir(exist_ok=True)
                Image.fromarray(cifar_test.get(i)).save(staging / label / f"{i:05d}.png")
    return root


def vitedge_logits(artifact: Path, paths: list[Path]) -> np.ndarray:
    """vitedge's own path: decode with Pillow, preprocess, run through `open_artifact`."""
    runner = open_artifact(artifact)
    config = calibration.preprocess.DataConfig.from_dict(read_manifest(artifact)["data_config"])
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(calibration.preprocess.to_rgb(image))
    return runner(preprocess_batch(images, config))


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_bundle_holds_artifact_runner_and_verbatim_preprocessing(onnx_artifact, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    assert is_bundle(bundle) and not is_bundle(onnx_artifact)
    assert sorted(p.name for p in bundle.iterdir()) == ["labels.txt", "manifest.json", "model.onnx", "preprocess.py", "requirements.txt", "run_bundle.py"]
    assert (bundle / "preprocess.py").read_bytes() == Path(calibration.preprocess.__file__).read_bytes()
    assert (bundle / "model.onnx").read_bytes() == (onnx_artifact / "model.onnx").read_bytes()
    assert (bundle / "labels.txt").read_text().split("\n")[:10] == list(CIFAR10_CLASSES)
    requirements = [line for line in (bundle / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert requirements == ["numpy>=1.24", "pillow>=10", "onnxruntime>=1.17"]
    manifest = read_manifest(bundle)
    verify_checksums(bundle, manifest)  # the bundle is itself a valid artifact
    assert manifest["bundle"]["runtime"] == "onnxruntime" and manifest["precision"] == "fp32"
    assert {e["path"] for e in manifest["files"]} == {"labels.txt", "model.onnx", "preprocess.py", "requirements.txt", "run_bundle.py"}
    batch = np.zeros((2, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(open_artifact(bundle)(batch), open_artifact(onnx_artifact)(batch))


def test_build_refuses_existing_out_corrupt_artifact_and_out_inside(onnx_artifact, tmp_path):
    out = build_bundle(onnx_artifact, tmp_path / "bundle")
    with pytest.raises(VitedgeError, match="already exists"):
        build_bundle(onnx_artifact, out)
    assert build_bundle(onnx_artifact, out, force=True) == out
    with pytest.raises(VitedgeError, match="inside the artifact"):
        build_bundle(onnx_artifact, onnx_artifact / "bundle")
    with pytest.raises(VitedgeError, match="unknown bundle runtime"):
        build_bundle(onnx_artifact, tmp_path / "x", runtime="tflite")
    broken = tmp_path / "broken"
    shutil.copytree(onnx_artifact, broken)
    with (broken / "model.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(VitedgeError, match="sha256"):
        build_bundle(broken, tmp_path / "from-broken")
    assert not (tmp_path / "from-broken").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("artifact_fixture", ["onnx_artifact", "int8_artifact"])
def test_classify_in_fresh_venv_matches_vitedge_top5(artifact_fixture, request, bundle_python, png_images, tmp_path):
    """Acceptance: the bundle in a venv with only numpy, Pillow and onnxruntime gives the
    same top-5 (and the same probabilities) as vitedge's runner on real CIFAR-10 PNGs."""
    artifact = request.getfixturevalue(artifact_fixture)
    bundle = build_bundle(artifact, tmp_path / "bundle")
    done = run_bundle(bundle_python, bundle, "classify", "--json", *map(str, png_images), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = vitedge_logits(artifact, png_images)
    for item, logits, path in zip(result["images"], expected, png_images):
        assert item["image"] == str(path)
        top5 = np.argsort(-logits, kind="stable")[:5]
        assert [t["index"] for t in item["top"]] == top5.tolist()
        assert [t["label"] for t in item["top"]] == [CIFAR10_CLASSES[i] for i in top5]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose([t["probability"] for t in item["top"]], probs[top5], rtol=1e-5)
    text = run_bundle(bundle_python, bundle, "classify", str(png_images[0]), cwd=tmp_path)
    assert text.returncode == 0 and text.stdout.splitlines()[1].split()[1] == result["images"][0]["top"][0]["label"]


def test_bench_and_eval_in_fresh_venv(onnx_artifact, bundle_python, image_folder, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    done = run_bundle(bundle_python, bundle, "bench", "--batch", "2", "--seconds", "0.3", "--warmup", "2", "--threads", "1", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bench = json.loads(done.stdout)
    lat = bench["latency_ms"]
    assert bench["batch"] == 2 and bench["threads"] == 1 and bench["runs"] >= 10 and bench["runtime"] == "onnxruntime"
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert bench["it_per_s"] == pytest.approx(2000.0 / lat["p50"])
    assert bench["board"]["versions"]["onnxruntime"] and bench["board"]["machine"] and bench["board"]["cpu"]

    done = run_bundle(bundle_python, bundle, "eval", str(image_folder), "--batch", "16", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    paths = sorted(image_folder.rglob("*.png"))
    predicted = vitedge_logits(onnx_artifact, paths).argmax(axis=1)
    truth = np.array([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    assert scored["count"] == 40 and scored["skipped"] == 0
    assert scored["correct"] == int((predicted == truth).sum())
    assert scored["top1"] == pytest.approx(100.0 * scored["correct"] / 40)
    assert scored["classes"]["cat"] == 3  # folder names that are model labels map by name


def test_refuses_a_modified_model(onnx_artifact, bundle_python, png_images, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    done = run_bundle(bundle_python, bundle, "classify", str(png_images[0]), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "model.onnx does not match the sha256" in one_line_error(done)
    (bundle / "model.onnx").unlink()
    assert "missing" in one_line_error(run_bundle(bundle_python, bundle, "info", cwd=tmp_path))


def test_bad_input_gives_one_line_errors(onnx_artifact, bundle_python, png_images, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    (tmp_path / "fake.png").write_text("not an image")
    cases = {
        ("classify", str(tmp_path / "absent.png")): "no such file",
        ("classify", str(tmp_path / "fake.png")): "not a readable image",
        ("classify", str(tmp_path)): "is a folder",
        ("bench", "--batch", "0"): "--batch must be",
        ("eval", str(png_images[0])): "is not a folder",
        ("eval", str(tmp_path / "bundle")): "no class subfolders",
        ("frobnicate",): "invalid choice",
        ("bench", "--seconds", "soon"): "invalid float value",
    }
    for args, expected in cases.items():
        done = run_bundle(bundle_python, bundle, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in one_line_error(done), args


def test_missing_runtime_names_the_pip_command(onnx_artifact, bundle_python, tmp_path):
    """An openvino bundle run by a Python without openvino: exit 3 and the pip line to run."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle", runtime="openvino")
    assert "openvino>=2024.4" in (bundle / "requirements.txt").read_text()
    done = run_bundle(bundle_python, bundle, "bench", "--seconds", "0.1", cwd=tmp_path)
    assert done.returncode == 3
    line = one_line_error(done)
    assert f"openvino is not installed for {bundle_python}" in line
    assert f"{bundle_python} -m pip install -r {bundle / 'requirements.txt'}" in line


def test_openvino_bundle_agrees_with_onnxruntime(onnx_artifact, png_images, tmp_path):
    """The same bundle code on the openvino runtime (this interpreter has it) ranks like ORT."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle", runtime="openvino")
    done = run_bundle(Path(sys.executable), bundle, "classify", "--json", *map(str, png_images), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = vitedge_logits(onnx_artifact, png_images)
    for item, logits in zip(json.loads(done.stdout)["images"], expected):
        assert item["top"][0]["index"] == int(logits.argmax())


def test_bundle_command(onnx_artifact, tmp_path):
    from typer.testing import CliRunner

    from vitedge.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["bundle", str(onnx_artifact), "--out", str(tmp_path / "b"), "--runtime", "onnxruntime"])
    assert done.exit_code == 0, done.output
    assert f"bundle {tmp_path / 'b'} (onnx fp32, onnxruntime" in " ".join(done.stdout.split())
    assert is_bundle(tmp_path / "b")
    again = runner.invoke(app, ["bundle", str(onnx_artifact), "--out", str(tmp_path / "b")])
    assert isinstance(again.exception, VitedgeError) and "already exists" in again.exception.message
