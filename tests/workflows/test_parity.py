"""Parity: the metrics themselves, verify on good artifacts (real numbers), and verify failing
on a corrupted artifact (exit 1, worst images named) or refusing a checksum mismatch (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tests.support import make_tiny_vit
from vitedge.calibration.calibset import build_calibration_set
from vitedge.calibration.sources import open_source
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest, write_manifest
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.models import save_checkpoint
from vitedge.workflows.parity import (
    DEFAULT_TOLERANCES,
    compare_logits,
    saturation_advice,
    tolerance_for,
    verification_set,
    verify_artifact,
    verify_folder,
)


def test_identical_logits_pass():
    logits = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    report = compare_logits(logits, logits.copy(), precision="fp32")
    assert report.passed and report.max_abs == 0 and report.cosine_min == pytest.approx(1.0)
    assert report.top1_agreement == 1.0 and report.top5_overlap == 1.0 and report.samples == 20


def test_failures_name_the_metric_and_the_worst_samples():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(30, 10))
    cand = ref + rng.normal(scale=1e-6, size=ref.shape)
    cand[7] = -ref[7]  # one image comes out inverted
    report = compare_logits(ref, cand, precision="fp32", identities=[f"img{i}" for i in range(30)])
    assert not report.passed and report.failures[0].startswith("max_abs")
    assert report.worst[0][0] == "img7" and report.worst[0][1] == pytest.approx(-1.0)
    assert report.top1_agreement == pytest.approx(29 / 30)
    int8 = compare_logits(ref, cand, precision="int8-static")
    assert int8.tolerance == DEFAULT_TOLERANCES["int8"]
    assert [f.split()[0] for f in int8.failures] == ["cosine_mean", "top1_agreement"]  # 0.933 < 0.995, 96.7% < 97%
    assert int8.top1_agreement == pytest.approx(0.9667, abs=1e-4) and int8.cosine_mean == pytest.approx(
        28 / 30, abs=1e-3
    )


def test_tolerances_are_overridable_and_checked():
    assert tolerance_for("int8-dynamic") == {"cosine_mean": 0.995, "top1_agreement": 0.97}
    assert tolerance_for("fp16", {"cosine_min": 0.99}) == {"cosine_min": 0.99}
    assert tolerance_for("fp32", {"max_abs": 1e-3, "top1_agreement": None}) == {"max_abs": 1e-3}
    with pytest.raises(VitedgeError, match="unknown tolerance"):
        tolerance_for("fp32", {"atol": 1.0})
    with pytest.raises(VitedgeError, match="cannot compare"):
        compare_logits(np.zeros((3, 10)), np.zeros((3, 9)), precision="fp32")


@pytest.fixture(scope="module")
def verify_set():
    config = make_tiny_vit().data_config
    return build_calibration_set(open_source("cifar10"), config, 100, seed=1, cache=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    model = make_tiny_vit()
    calib = build_calibration_set(open_source("cifar10:train"), model.data_config, 64, seed=0, cache=False)
    return {
        "fp32": export_artifact(model, to="onnx", precision="fp32", out=root / "fp32"),
        "int8-static": export_artifact(
            model, to="onnx", precision="int8-static", out=root / "static", calibration=calib
        ),
        "int8-dynamic": export_artifact(model, to="onnx", precision="int8-dynamic", out=root / "dynamic"),
        "openvino-fp32": export_artifact(model, to="openvino", precision="fp32", out=root / "ov-fp32"),
        "fp16": export_artifact(model, to="openvino", precision="fp16", out=root / "fp16"),
    }


def test_verify_good_artifacts(exported, verify_set):
    """Bounds from what each precision computes on this model (logits up to ~0.56, measured on
    100 images): fp32 ~1e-7; fp16 weights in f32 ~2e-4 (cosine_min 1-1e-7), f16 compute
    ~4e-4 (1-3e-7); bf16 execution, OpenVINO's CPU default on AVX512-BF16/AMX, ~3.4e-3
    (1-2.8e-5): it fails every float bound below, on any CPU that would run it."""
    model = make_tiny_vit()
    with torch.no_grad():
        reference = model.module(torch.from_numpy(verify_set.inputs)).numpy()
    for key in ("fp32", "openvino-fp32"):
        fp32 = verify_artifact(exported[key], model, verify_set.inputs, identities=verify_set.identities, threads=1)
        assert fp32.passed and fp32.max_abs < 1e-5 and fp32.top1_agreement == 1.0, (key, fp32)
    fp16 = verify_artifact(exported["fp16"], model, verify_set.inputs, threads=1)
    assert fp16.passed and fp16.cosine_min > 0.99999 and 1e-6 < fp16.max_abs < 1e-3, fp16
    for precision in ("int8-static", "int8-dynamic"):
        # a random-weight model has near-tied logits (mean top-2 gap 0.09), so top-1 agreement
        # is not meaningful here; the int8 error itself is (measured 5e-3..8e-3)
        report = verify_artifact(
            exported[precision], model, verify_set.inputs, tolerances={"top1_agreement": 0.9}, threads=1
        )
        assert report.passed and report.cosine_mean > 0.999 and report.top5_overlap > 0.97, (precision, report)
        assert 1e-4 < report.max_abs < 0.1 * np.abs(reference).max(), (precision, report.max_abs)


def test_a_failed_onnx_int8_check_names_u8s8_saturation_on_a_cpu_without_vnni(
    exported, verify_set, monkeypatch, tmp_path
):
    """On x86 without VNNI/AMX ONNX Runtime adds u8×s8 products in 16 bits, so a full-range int8
    file (`--full-range`) can fail there and pass on a VNNI CPU: the failed report says so and
    names the fix (--reduce-range, the default). Only then: not on a pass, not on VNNI, ARM,
    7-bit weights (the defaults), fp32 or OpenVINO."""
    from vitedge.core.cpu import CpuInfo
    from vitedge.workflows import parity

    avx2 = CpuInfo("x86_64", "AMD EPYC", 2, frozenset({"avx2", "fma"}))
    vnni = CpuInfo("x86_64", "Xeon", 2, frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}))
    arm = CpuInfo("aarch64", "Cortex-A72", 4, frozenset({"asimd"}))
    model, images = make_tiny_vit(), verify_set.inputs[:20]
    full_range = export_artifact(
        model, to="onnx", precision="int8-dynamic", out=tmp_path / "full", options=ExportOptions(reduce_range=False)
    )
    monkeypatch.setattr(parity, "probe_cpu", lambda: avx2)
    failed = verify_artifact(full_range, model, images, tolerances={"max_abs": 1e-9}, threads=1)
    assert not failed.passed and len(failed.advice) == 1 and failed.advice[0] in failed.notes
    assert "--reduce-range" in failed.advice[0] and "AVX2, FMA" in failed.advice[0]
    assert failed.to_dict()["notes"] == list(failed.advice)
    passed = verify_artifact(full_range, model, images, tolerances={"top1_agreement": 0.9}, threads=1)
    assert passed.passed and not passed.advice
    default = verify_artifact(exported["int8-dynamic"], model, images, tolerances={"max_abs": 1e-9}, threads=1)
    assert not default.passed and not default.advice  # 7-bit weights cannot saturate
    static = read_manifest(exported["int8-static"])
    full_static = {**static, "quantization": {**static["quantization"], "reduce_range": False}}
    assert saturation_advice(full_static, avx2) and saturation_advice(read_manifest(full_range), avx2)
    assert not saturation_advice(full_static, vnni) and not saturation_advice(full_static, arm)
    assert not saturation_advice(static, avx2) and not saturation_advice(read_manifest(exported["int8-dynamic"]), avx2)
    assert not saturation_advice(read_manifest(exported["fp32"]), avx2)
    assert not saturation_advice(read_manifest(exported["fp16"]), avx2)  # OpenVINO: its own overflow fix


def _with_cosine(reference: np.ndarray, cosine: float, rows: slice = slice(None)) -> np.ndarray:
    """`reference` with `rows` turned to exactly `cosine` against the original (same norm)."""
    rng = np.random.default_rng(1)
    out = reference.copy()
    for i in range(len(reference))[rows]:
        r = reference[i] / np.linalg.norm(reference[i])
        noise = rng.normal(size=r.shape)
        noise -= noise.dot(r) * r
        noise /= np.linalg.norm(noise)
        out[i] = np.linalg.norm(reference[i]) * (cosine * r + np.sqrt(1 - cosine**2) * noise)
    return out


def test_each_precision_gate_refuses_what_it_must():
    """Every default gate, on logits with a known error: a rounding-sized one passes, a bug-sized
    one fails and is named. Disabling any gate turns this red."""
    reference = np.random.default_rng(0).normal(size=(200, 10))
    assert compare_logits(reference, reference + 5e-5, precision="fp32").passed
    fp32 = compare_logits(reference, reference + 3e-3, precision="fp32")  # the bf16-sized error
    assert not fp32.passed and fp32.failures[0].startswith("max_abs 3.000e-03 ")
    assert compare_logits(reference, _with_cosine(reference, 0.99999), precision="fp16").passed
    fp16 = compare_logits(reference, _with_cosine(reference, 0.999, slice(7, 8)), precision="fp16")  # one image off
    assert not fp16.passed and fp16.failures[0].startswith("cosine_min 0.999000 ") and fp16.worst[0][0] == "#7"
    assert compare_logits(reference, _with_cosine(reference, 0.999), precision="int8-static").passed
    int8 = compare_logits(reference, _with_cosine(reference, 0.98), precision="int8-dynamic")
    assert not int8.passed and int8.failures[0].startswith("cosine_mean 0.98")
    flipped = reference.copy()
    flipped[:10] = -flipped[:10]  # 5% of the images inverted: cosine_mean 0.9, top-1 95%
    assert [f.split()[0] for f in compare_logits(reference, flipped, precision="int8-static").failures] == [
        "cosine_mean",
        "top1_agreement",
    ]


def _corrupt_weights(folder, scale: float) -> None:
    """Scale the classifier weights and rewrite the manifest, so checksums still pass."""
    path = folder / "model.onnx"
    model = onnx.load(str(path))
    for initializer in model.graph.initializer:
        if initializer.name == "head.weight":
            weights = numpy_helper.to_array(initializer) * scale
            initializer.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), initializer.name))
            break
    else:
        raise AssertionError("no head.weight initializer")
    onnx.save(model, str(path))
    manifest = read_manifest(folder)
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "created")})


def test_verify_fails_on_corrupted_artifact(tmp_path, verify_set):
    model = make_tiny_vit()
    folder = export_artifact(model, to="onnx", precision="fp32", out=tmp_path / "bad")
    _corrupt_weights(folder, 1.01)
    report = verify_artifact(folder, model, verify_set.inputs, identities=verify_set.identities, threads=1)
    assert not report.passed and report.failures[0].startswith("max_abs") and report.max_abs > 1e-4
    assert report.cosine_min > 0.999  # a 1% change: invisible to cosine, caught by max abs
    assert report.worst[0][0] in verify_set.identities


def test_cli_verify_exit_codes(tmp_path, capsys, monkeypatch):
    from tests.support.cli import cli as run_cli

    def cli(*args: str) -> tuple[int, str, str]:
        return run_cli(capsys, monkeypatch, *args)

    checkpoint = save_checkpoint(make_tiny_vit(), tmp_path / "tiny.safetensors")
    folder = export_artifact(make_tiny_vit(), to="onnx", precision="fp32", out=tmp_path / "art")
    code, stdout, _ = cli("verify", str(folder), "--model", str(checkpoint), "--samples", "40", "--threads", "1")
    assert code == 0 and "max_abs" in stdout
    _corrupt_weights(folder, 1.5)
    code, stdout, stderr = cli("verify", str(folder), "--model", str(checkpoint), "--samples", "40", "--threads", "1")
    assert code == 1 and "outside tolerance" in stderr and "worst samples" in stdout and "cifar10[" in stdout
    code, stdout, _ = cli(
        "verify",
        str(folder),
        "--model",
        str(checkpoint),
        "--samples",
        "40",
        "--threads",
        "1",
        "--max-abs",
        "100",
        "--json",
    )
    assert code == 0 and json.loads(stdout)["parity"]["tolerance"] == {"max_abs": 100.0}
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    code, _, stderr = cli("verify", str(folder), "--model", str(checkpoint), "--samples", "40")
    assert code == 2 and "does not match the sha256" in stderr
    write_manifest(folder, {k: v for k, v in read_manifest(folder).items() if k not in ("files", "created")})
    code, _, stderr = cli("verify", str(folder), "--model", str(checkpoint), "--samples", "40")
    assert code == 2 and "cannot load" in stderr


def test_verification_images_avoid_calibration_images(tmp_path, cifar_test):
    model = make_tiny_vit()
    pixels = np.stack([cifar_test.get(i) for i in range(60)])
    np.savez(tmp_path / "sixty.npz", x=pixels, y=cifar_test.labels[:60])
    np.savez(tmp_path / "copy.npz", x=pixels, y=cifar_test.labels[:60])  # the same pictures under another name
    calib = build_calibration_set(open_source(str(tmp_path / "sixty.npz")), model.data_config, 20, seed=0, cache=False)
    folder = export_artifact(model, to="onnx", precision="int8-static", out=tmp_path / "q", calibration=calib)
    loose = {"top1_agreement": 0.5}
    for source in ("sixty.npz", "copy.npz"):
        chosen = verification_set(
            str(tmp_path / source), model.data_config, 40, calibration=read_manifest(folder)["calibration"]
        )
        assert not set(chosen.image_sha256) & set(calib.image_sha256) and len(chosen) == 40
        report = verify_folder(
            folder, reference=model, data=str(tmp_path / source), samples=40, threads=1, tolerances=loose
        )
        assert report.samples == 40  # exactly the 40 images that were not calibrated on
    with pytest.raises(VitedgeError, match="only 40 usable"):
        verify_folder(folder, reference=model, data=str(tmp_path / "sixty.npz"), samples=41)


def test_random_weights_are_judged_by_their_logits_not_their_near_tie_classes():
    """A random-weight model's classes are near-ties (random ViT-B: median top-2 gap 0.14
    logits, int8's error about 0.12), so a sound int8 artifact of it fails a top-1 agreement
    bound by the draw. For such a model the agreement bounds are reported, not gated; the logit bounds
    still are, and a trained model's agreement is gated as before."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 0.5, (200, 1000))
    rounded = reference + rng.normal(0.0, 0.04, reference.shape)  # int8-sized error, cosine ~0.997
    trained = compare_logits(reference, rounded, precision="int8")
    assert not trained.passed and [f.split()[0] for f in trained.failures] == ["top1_agreement"]
    assert trained.top1_agreement < 0.97 and trained.cosine_mean > 0.995
    random = compare_logits(reference, rounded, precision="int8", random_weights=True)
    assert random.passed and random.tolerance == {"cosine_mean": 0.995}
    assert random.top1_agreement == trained.top1_agreement  # still measured and reported
    assert any("top-1 agreement and top-5 overlap reported, not gated" in note for note in random.notes)
    assert random.to_dict()["notes"] == list(random.notes)
    wrong = compare_logits(reference, rng.normal(0.0, 0.5, reference.shape), precision="int8", random_weights=True)
    assert not wrong.passed and [f.split()[0] for f in wrong.failures] == ["cosine_mean"]


def test_export_of_a_model_name_gates_its_logits_only(tmp_path, capsys, monkeypatch):
    """`vitedge export NAME` (random weights) reports its agreement ungated and says why; the
    same model from a checkpoint file is gated on it."""
    from tests.support.cli import cli

    monkeypatch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))
    reports = {}
    torch.manual_seed(0)
    checkpoint = save_checkpoint(make_tiny_vit(), tmp_path / "tiny.safetensors")
    for name, spec in (("name", "vit_tiny_patch16_224"), ("file", str(checkpoint))):
        args = ["export", spec, "--to", "onnx", "--precision", "int8-dynamic", "--out", str(tmp_path / name)]
        code, stdout, _ = cli(capsys, monkeypatch, *args, "--verify-samples", "16", "--threads", "2", "--json")
        reports[name] = json.loads(stdout)["parity"]
        assert code == (0 if reports[name]["passed"] else 1)
    assert reports["name"]["tolerance"] == {"cosine_mean": 0.995} and reports["name"]["passed"]
    assert any("not gated: random weights decide no class" in note for note in reports["name"]["notes"])
    assert reports["file"]["tolerance"] == DEFAULT_TOLERANCES["int8"]
    assert not any("not gated" in note for note in reports["file"]["notes"])
