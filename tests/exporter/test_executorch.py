"""ExecuTorch (XNNPACK) artifacts of the tiny ViT: what was lowered is recorded and is what
makes it fast (the matrix products and attention inside XNNPACK), fp32 computes PyTorch's
logits, int8 is calibrated on the calibration set and holds the int8 bounds, the batch bound
of a dynamic program, and the CLI's export, verify and refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.support import make_tiny_vit
from tests.support.cli import cli
from vitedge.calibration.calibset import build_calibration_set
from vitedge.calibration.sources import open_source
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest, verify_checksums
from vitedge.exporter import executorch as et_export
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.targets.runners import open_artifact
from vitedge.workflows.parity import verify_artifact

# what the safe-softmax decomposition of scaled_dot_product_attention leaves outside XNNPACK
FUSED_ATTENTION_OPS = ("aten_any_dim", "aten_where_self", "aten_logical_not_default", "aten_full_like_default")


@pytest.fixture(scope="module")
def calib():
    return build_calibration_set(open_source("cifar10:train"), make_tiny_vit().data_config, 32, seed=0, cache=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, calib, executorch_artifact):
    """The tiny ViT's fp32 program (the session's, shared with the board tests) and its int8 one."""
    out = tmp_path_factory.mktemp("executorch") / "int8"
    int8 = export_artifact(make_tiny_vit(), to="executorch", precision="int8", out=out, calibration=calib)
    return {"fp32": executorch_artifact, "int8": int8}


def reference(inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return make_tiny_vit().module(torch.from_numpy(inputs)).numpy()


def test_fp32_program_is_lowered_to_xnnpack_and_computes_pytorch_logits(pair, cifar_batch):
    folder = pair["fp32"]
    manifest = read_manifest(folder)
    verify_checksums(folder, manifest)
    assert (manifest["format"], manifest["precision"], manifest["model_file"]) == ("executorch", "fp32", "model.pte")
    assert manifest["batch"] == "dynamic" and manifest["max_batch"] == et_export.MAX_DYNAMIC_BATCH == 32
    assert {"executorch", "torchao", "torch"} <= set(manifest["versions"]) and manifest["quantization"] is None
    lowering = manifest["lowering"]
    assert lowering["backend"] == "XnnpackBackend" and lowering["delegate_calls"] >= 1
    # every Linear (4 per block, 2 blocks, the head), the patch Conv and both attention
    # products of each block run inside XNNPACK; what stays outside is layout and LayerNorm
    assert lowering["delegated_nodes"] >= 2 * (4 + 2) + 2 and "aten_linear_default" not in lowering["not_delegated"]
    assert (
        "aten_bmm_default" not in lowering["not_delegated"] and "aten__softmax_default" not in lowering["not_delegated"]
    )
    assert not set(FUSED_ATTENTION_OPS) & set(lowering["not_delegated"]), lowering["not_delegated"]
    assert 0 < lowering["delegated_share"] <= 1
    assert lowering["delegated_share"] == pytest.approx(
        lowering["delegated_nodes"] / (lowering["delegated_nodes"] + lowering["not_delegated_nodes"])
    )
    inputs = cifar_batch[0]
    runner = open_artifact(folder, threads=1)
    assert (runner.info.runtime, runner.info.execution_precision, runner.info.threads) == ("executorch", "f32", 1)
    expected = reference(inputs[:40])
    for size in (1, 8, 32, 40):  # 40 > the bound: two calls (32 + 8), the same logits
        got = runner(inputs[:size])
        assert got.shape == (size, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected[:size], atol=1e-5, rtol=0)
    report = verify_artifact(folder, make_tiny_vit(), inputs, threads=1)
    assert report.passed and report.max_abs < 1e-5 and report.execution_precision == "f32", report


def test_attention_is_exported_unfused_and_the_model_left_as_it_was():
    """With the fused call, the safe-softmax ops fall out of XNNPACK around every attention
    block; the exporter computes attention unfused and restores the module afterwards."""
    model = make_tiny_vit().module
    attentions = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attentions and all(m.fused_attn for m in attentions)
    with et_export.unfused_attention(model):
        assert not any(m.fused_attn for m in attentions) and not torch.backends.mha.get_fastpath_enabled()
    assert all(m.fused_attn for m in attentions) and torch.backends.mha.get_fastpath_enabled()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example, shapes = et_export._example_and_shapes((3, 32, 32), 1)
    fused = to_edge_transform_and_lower(
        torch.export.export(model.eval(), (example,)), partitioner=[XnnpackPartitioner()]
    )
    outside = et_export.delegation_summary(fused.exported_program().graph_module)["not_delegated"]
    assert set(FUSED_ATTENTION_OPS) & set(outside), outside


def test_int8_is_calibrated_static_and_within_the_int8_bounds(pair, calib, cifar_batch):
    folder = pair["int8"]
    manifest = read_manifest(folder)
    assert manifest["calibration"]["identities"] == list(calib.identities)
    assert manifest["calibration"]["image_sha256"] == list(calib.image_sha256)
    quantization = manifest["quantization"]
    assert quantization["quantizer"] == "XNNPACKQuantizer" and quantization["calibration_images"] == 32
    assert quantization["quantized_ops"] == ["linear", "conv2d"] and "per output channel" in quantization["weights"]
    fp32_bytes = (pair["fp32"] / "model.pte").stat().st_size
    assert (folder / "model.pte").stat().st_size < 0.5 * fp32_bytes  # int8 weights, not fp32 ones
    inputs = cifar_batch[0]
    runner = open_artifact(folder, threads=1)
    assert runner.info.execution_precision == "int8+f32"
    got, expected = runner(inputs), reference(inputs)
    assert np.abs(got - expected).max() > 1e-4  # it computes in int8, not fp32
    # random weights tie their logits: top-1 agreement is noise here (as in test_export)
    report = verify_artifact(folder, make_tiny_vit(), inputs, tolerances={"top1_agreement": 0.9}, threads=1)
    assert report.passed and report.cosine_mean > 0.995, report


def activation_scales(exported) -> list[float]:  # noqa: ANN001 - torch.export.ExportedProgram
    """The scale of every activation quantize node of a PT2E-converted program."""
    return [
        float(node.args[1])
        for node in exported.graph.nodes
        if "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target)
    ]


def test_activation_ranges_come_from_the_calibration_images(calib):
    """Other images, other scales: the observers saw the calibration set (a quarter of the
    pixel values gives smaller ranges for the input side of the first matrix products)."""
    model = make_tiny_vit().module.eval()
    example, shapes = et_export._example_and_shapes((3, 32, 32), "dynamic")
    scales = []
    for images in (calib, dataclasses.replace(calib, inputs=calib.inputs * 0.25)):
        with et_export.unfused_attention(model):
            exported = torch.export.export(model, (example,), dynamic_shapes=shapes)
            quantized, settings = et_export.quantize_pt2e(exported, example, shapes, images, "dynamic")
        scales.append(activation_scales(quantized))
        assert settings["calibration_images"] == 32
    assert len(scales[0]) == len(scales[1]) >= 2 * 4 + 1  # at least one per Linear
    assert scales[1][0] < 0.5 * scales[0][0] and scales[0] != scales[1]


def test_fixed_batch_program(tmp_path, cifar_batch):
    folder = export_artifact(
        make_tiny_vit(), to="executorch", precision="fp32", out=tmp_path / "b2", options=ExportOptions(batch=2)
    )
    manifest = read_manifest(folder)
    assert manifest["batch"] == 2 and manifest["max_batch"] == 2
    assert "aten_view_copy_default" not in manifest["lowering"]["not_delegated"]  # static reshapes are delegated
    runner = open_artifact(folder, threads=1)
    np.testing.assert_allclose(runner(cifar_batch[0][:2]), reference(cifar_batch[0][:2]), atol=1e-5, rtol=0)
    with pytest.raises(VitedgeError, match="exported for batch 2 only, but was given batch 3"):
        runner(cifar_batch[0][:3])
    report = verify_artifact(folder, make_tiny_vit(), cifar_batch[0][:9], threads=1)  # padded to pairs
    assert report.passed and report.samples == 9


def test_runner_refusals(pair, tmp_path):
    with pytest.raises(VitedgeError, match="cannot run on target 'cuda'"):
        open_artifact(pair["fp32"], target="cuda")
    broken = tmp_path / "broken"
    broken.mkdir()
    for entry in read_manifest(pair["fp32"])["files"]:
        (broken / entry["path"]).write_bytes((pair["fp32"] / entry["path"]).read_bytes()[:200])
    manifest = json.loads((pair["fp32"] / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VitedgeError, match="sha256"):
        open_artifact(broken)
    with pytest.raises(VitedgeError, match="ExecuTorch cannot load .*model.pte"):
        open_artifact(broken, check=False)  # a truncated program: one line, not the C++ log


def test_executorch_missing_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(VitedgeError, match="ExecuTorch is not installed") as caught:
        export_artifact(make_tiny_vit(), to="executorch", precision="fp32", out=tmp_path / "a")
    assert "vitedge[executorch]" in caught.value.hint and not (tmp_path / "a").exists()


def test_cli_export_verify_and_refusals(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    out = tmp_path / "pte"
    code, stdout, stderr = cli(
        capsys, monkeypatch, "export", str(tiny_checkpoint), "--to", "executorch", "--out", str(out),
        "--verify-samples", "64", "--threads", "1",
    )  # fmt: skip
    assert code == 0, stderr
    assert f"wrote {out} (executorch fp32" in stdout and "computed in f32, 64 images" in " ".join(stdout.split())
    code, stdout, stderr = cli(capsys, monkeypatch, "verify", str(out), "--samples", "64", "--json")
    assert code == 0, stderr
    parity = json.loads(stdout)["parity"]
    assert parity["tolerance"] == {"max_abs": 1e-4} and parity["max_abs"] < 1e-5 and parity["passed"]
    for args, message in (
        (("--precision", "int8-dynamic"), "executorch has no precision 'int8-dynamic'"),
        (("--precision", "int8"), "executorch int8 needs calibration images"),
        (
            ("--precision", "int8", "--calib", "cifar10:train", "--max-drop", "1"),
            "--max-drop/--min-cosine work on onnx and openvino int8, not executorch",
        ),
    ):
        code, _, stderr = cli(
            capsys,
            monkeypatch,
            "export",
            str(tiny_checkpoint),
            "--to",
            "executorch",
            "--out",
            str(tmp_path / "x"),
            *args,
        )
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "x").exists()


def test_runtime_start_up_log_is_held_back_unless_verbose(pair):
    """ExecuTorch's C++ runtime logs its thread pool (re)start on stderr at every open: held
    back by default, shown with `vitedge --verbose`, like the other libraries' chatter (in a
    process of its own, as a user runs it: pytest's own fd capture interferes)."""
    import os
    import subprocess
    import sys

    code = f"from vitedge.targets.runners import open_artifact; open_artifact({str(pair['fp32'])!r}, threads=1)"
    for verbose, shown in (("0", False), ("1", True)):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "VITEDGE_VERBOSE": verbose}
        )
        assert done.returncode == 0, done.stderr
        assert ("Resetting threadpool to 1 threads" in done.stderr) is shown, done.stderr
