"""Sensitivity analysis: node naming and grouping (pure), disjoint evaluation images, and real
ORT / OpenVINO variants of the tiny ViT."""

from __future__ import annotations

import numpy as np
import pytest

from vitedge.exporter.export import ExportOptions
from vitedge.workflows.sensitivity import group_of, group_units, layer_label

ORT_NODES = (
    "/patch_embed/proj/Conv",
    "/blocks/blocks.0/attn/qkv/MatMul",
    "/blocks/blocks.0/attn/MatMul",
    "/blocks/blocks.0/attn/MatMul_1",
    "/blocks/blocks.0/mlp/fc2/MatMul",
    "/blocks/blocks.1/mlp/fc2/MatMul",
    "/head/Gemm",
)


def test_layer_labels_are_the_same_for_both_runtimes():
    assert layer_label("/blocks/blocks.0/attn/qkv/MatMul") == "blocks.0.attn.qkv"
    assert layer_label("__module.blocks.0.attn.qkv/aten::linear/MatMul") == "blocks.0.attn.qkv"
    assert layer_label("/blocks/blocks.0/attn/MatMul_1") == "blocks.0.attn.MatMul_1"
    assert layer_label("/head/Gemm") == "head"
    assert layer_label("__module.patch_embed.proj/aten::_convolution/Convolution") == "patch_embed.proj"


def test_groups_by_block_and_by_kind():
    assert group_of("/blocks/blocks.1/mlp/fc2/MatMul", "block") == "blocks.1"
    assert group_of("/head/Gemm", "block") == "head"
    assert group_of("/blocks/blocks.1/mlp/fc2/MatMul", "kind") == "blocks.*.mlp.fc2"
    groups = group_units(ORT_NODES, "kind")
    assert groups["blocks.*.mlp.fc2"] == ("/blocks/blocks.0/mlp/fc2/MatMul", "/blocks/blocks.1/mlp/fc2/MatMul")
    assert list(group_units(ORT_NODES, "block")) == ["patch_embed", "blocks.0", "blocks.1", "head"]


@pytest.fixture(scope="module")
def setup():
    """Tiny ViT; calibration and evaluation drawn from the SAME source (cifar10) to check the exclusion."""
    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.workflows.int8_eval import evaluation_set

    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10"), loaded.data_config, 32, seed=0)
    evalset = evaluation_set(loaded, "cifar10", 64, calibration.manifest(), seed=0)
    return loaded, calibration, evalset


def test_evaluation_images_never_include_a_calibration_image(setup):
    import torch

    loaded, calibration, evalset = setup
    assert len(evalset) == 64 and evalset.labels is not None
    assert evalset.record["disjoint_from_calibration"] and "excluded by name" in evalset.record["disjoint_by"]
    # the same seed for both draws: without the exclusion they would share images
    calibrated = {row.tobytes() for row in calibration.inputs}
    assert not any(row.tobytes() in calibrated for row in evalset.inputs)
    with torch.no_grad():
        reference = loaded.module(torch.from_numpy(evalset.inputs[:4])).numpy()
    np.testing.assert_allclose(reference, evalset.reference[:4], atol=1e-5)


def test_ort_backend_without_exclusions_matches_vitedge_export(setup, tmp_path):
    """The variants are built exactly as `vitedge export --precision int8-static` builds its model."""
    from vitedge.exporter.export import export_artifact
    from vitedge.targets.runners import open_artifact
    from vitedge.workflows.int8_eval import open_backend, score_runner

    loaded, calibration, evalset = setup
    backend = open_backend(loaded, "onnx", calibration, ExportOptions(), tmp_path / "work")
    exported = export_artifact(
        loaded, to="onnx", precision="int8-static", out=tmp_path / "exported", calibration=calibration
    )
    ours = backend.open(())(evalset.inputs)
    theirs = open_artifact(exported, threads=1)(evalset.inputs)
    np.testing.assert_array_equal(ours, theirs)
    assert len(backend.units) == 10 and "/head/Gemm" in backend.units  # 4 Linears a block, head, patch Conv
    assert not any(unit.endswith(("attn/MatMul", "attn/MatMul_1")) for unit in backend.units)  # float products
    assert score_runner(backend.open(backend.units), evalset).cosine_mean > 0.999999  # all float = fp32


def test_sensitivity_report_is_ranked_and_written(setup, tmp_path, figures):
    from vitedge.workflows.int8_eval import open_backend
    from vitedge.workflows.sensitivity import analyse, write_report

    loaded, calibration, evalset = setup
    backend = open_backend(loaded, "onnx", calibration, ExportOptions(), tmp_path / "work")
    report = analyse(backend, evalset, mode="float-one", group="block")
    assert [row.unit for row in report.rows] and {row.unit for row in report.rows} == {
        "patch_embed",
        "blocks.0",
        "blocks.1",
        "head",
    }
    values = [row.sensitivity for row in report.rows]
    assert values == sorted(values, reverse=True)
    for row in report.rows:
        assert row.sensitivity == pytest.approx(row.score.cosine_mean - report.int8.cosine_mean)
    assert report.ranking()[: len(report.rows[0].nodes)] == list(report.rows[0].nodes)
    only = analyse(backend, evalset, mode="int8-one", group="block")
    assert all(
        row.score.cosine_mean >= only.int8.cosine_mean - 1e-4 for row in only.rows
    )  # one block int8 ≈ no worse than all
    paths = write_report(report, tmp_path / "out")
    plot = figures["sensitivity.png"]
    assert plot["size"] == (960, 300)  # 8 in wide, max(2.5, 0.28 × 4 rows + 1.2) in tall, 120 dpi
    assert plot["bars"] == pytest.approx(values[::-1])  # one bar per unit, most sensitive on top
    assert f"all-int8 cosine {report.int8.cosine_mean:.5f}" in plot["titles"][0][0]
    import json

    data = json.loads(paths["json"].read_text())
    assert data["rows"][0]["unit"] == report.rows[0].unit and "identities" not in data["calibration"]


def test_openvino_ignored_scope_keeps_the_node_in_float(setup, tmp_path):
    from vitedge.workflows.int8_eval import open_backend

    loaded, calibration, evalset = setup
    backend = open_backend(loaded, "openvino", calibration, ExportOptions(), tmp_path)
    assert len(backend.units) == 10  # SDPA keeps attention's products out of NNCF's reach
    fc2 = next(u for u in backend.units if "blocks.1.mlp.fc2" in u)

    def quantized_inputs(model) -> int:  # noqa: ANN001 - ov.Model; FakeQuantize ops feeding fc2 of block 1
        fakes = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
        return sum(
            1
            for op in fakes
            for consumer in op.output(0).get_target_inputs()
            if "blocks.1.mlp.fc2" in consumer.get_node().get_friendly_name()
        )

    everything, _ = backend.quantize_model(())
    kept, settings = backend.quantize_model([fc2])
    assert settings["ignored_scope"] == [fc2]
    assert quantized_inputs(everything) >= 1 and quantized_inputs(kept) == 0
