"""The last block computed for the class token only (exporter/class_token.py): the same logits
as the model, less work in the file, and only for the models where that is exact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.exporter.test_ort_attention import MODELS as ATTENTION_MODELS
from tests.support import make_tiny_vit
from tests.support.families import hf_tiny, spread, timm_tiny
from vitedge.core.manifest import read_manifest
from vitedge.exporter.class_token import class_token_only
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.models import LoadedModel
from vitedge.targets.onnxruntime import open_onnx
from vitedge.workflows.parity import DEFAULT_TOLERANCES


def _class_token_vit() -> LoadedModel:
    loaded = make_tiny_vit(class_token=True, global_pool="token")
    spread(loaded.module)
    return loaded


TRIMMED = {  # model → how many leading tokens its classifier reads
    "timm vit, class token": (lambda tmp: _class_token_vit(), 1),
    "timm vit, heads and MLP pruned": (lambda tmp: _pruned_class_token(), 1),
    "timm deit, distillation token": (lambda tmp: timm_tiny("deit_small_distilled_patch16_224"), 2),
    "transformers vit": (lambda tmp: hf_tiny(tmp / "hf"), 1),
    "transformers deit": (lambda tmp: hf_tiny(tmp / "hf", kind="deit"), 1),
    "transformers deit with teacher": (lambda tmp: hf_tiny(tmp / "hf", kind="deit-teacher"), 2),
}
WHOLE = {  # classifiers that read every token: no trim is exact
    "timm vit, average pooling": lambda tmp: ATTENTION_MODELS["timm vit"](tmp),
    "timm vit, registers + average pooling": lambda tmp: timm_tiny("vit_base_patch16_reg4_gap_256"),
    "timm eva": lambda tmp: timm_tiny("eva02_small_patch14_224"),
    "transformers dinov2 (class token + mean of patches)": lambda tmp: hf_tiny(tmp / "hf", kind="dinov2"),
}


def _pruned_class_token() -> LoadedModel:
    from vitedge.compress.registry import apply_steps, parse_step_spec

    steps = [parse_step_spec(spec) for spec in ("prune-heads:ratio=0.5", "prune-mlp:ratio=0.625")]
    loaded = apply_steps(make_tiny_vit(num_heads=4, class_token=True, global_pool="token"), steps)
    spread(loaded.module)
    return loaded


def _rows_per_matmul(path: Path) -> list[int]:
    """The token count of every 3-D MatMul/Gemm output of the ONNX file (ONNX shape inference)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim] for info in model.graph.value_info}
    outputs = [node.output[0] for node in model.graph.node if node.op_type in ("MatMul", "Gemm")]
    return [shapes[name][1] for name in outputs if len(shapes.get(name, [])) == 3]


def _logits(loaded: LoadedModel, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return loaded.module(torch.from_numpy(inputs)).numpy()


@pytest.mark.parametrize("name", list(TRIMMED))
def test_the_trimmed_model_computes_the_models_logits(name, tmp_path):
    build, keep = TRIMMED[name]
    loaded = build(tmp_path)
    inputs = np.random.default_rng(0).standard_normal((3, *loaded.data_config.input_size)).astype(np.float32)
    reference = _logits(loaded, inputs)
    parameters = dict(loaded.module.named_parameters())
    with class_token_only(loaded.module) as trim:
        inside = _logits(loaded, inputs)
    assert (trim.keep, trim.ran) == (keep, True)
    assert all("forward" not in vars(module) for module in loaded.module.modules())
    assert dict(loaded.module.named_parameters()) == parameters  # the trim's own Linears are gone again
    assert np.abs(reference).max() > 0.1  # logits that differ by whole units, so a wrong token shows
    np.testing.assert_allclose(inside, reference, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(_logits(loaded, inputs), reference)  # the model is left as it was


@pytest.mark.parametrize("name", list(WHOLE))
def test_classifiers_that_read_every_token_are_left_whole(name, tmp_path):
    loaded = WHOLE[name](tmp_path)
    with class_token_only(loaded.module) as trim:
        pass
    assert (trim.keep, trim.ran) == (0, False)
    assert all("forward" not in vars(module) for module in loaded.module.modules())


@pytest.mark.parametrize("precision", ["fp32", "int8-dynamic"])
def test_the_export_computes_the_last_block_for_the_class_token_only(precision, tmp_path, cifar_batch):
    """The file's last block runs its query, output projection and MLP on 1 token (the kept
    token count in the manifest) and gives the model's logits; --all-tokens keeps 65 rows
    everywhere (q/k/v, proj, fc1, fc2 of two blocks). ONNX Runtime fuses int8-dynamic's other blocks into QAttention, one fewer."""
    loaded = _class_token_vit()
    one = ExportOptions(batch=1)  # a fixed batch, so that ONNX shape inference knows every row count
    trimmed = export_artifact(loaded, to="onnx", precision=precision, out=tmp_path / "trimmed", options=one)
    whole = export_artifact(
        loaded,
        to="onnx",
        precision=precision,
        out=tmp_path / "whole",
        options=dataclasses.replace(one, class_token_only=False),
    )
    assert read_manifest(trimmed)["last_block_tokens"] == 1
    assert read_manifest(whole)["last_block_tokens"] == "all"
    tokens = 1 + (32 // 4) ** 2
    if precision == "fp32":
        # the last block's q, proj, fc1, fc2 on 1 token; its k/v and the first block on all 65
        assert sorted(_rows_per_matmul(trimmed / "model.onnx")) == [1] * 4 + [tokens] * 5
        assert _rows_per_matmul(whole / "model.onnx") == [tokens] * 8
    else:
        assert read_manifest(trimmed)["runs_on"]["contrib_ops"] == {"QAttention": 1}
        assert read_manifest(whole)["runs_on"]["contrib_ops"] == {"QAttention": 2}
    inputs = cifar_batch[0][:16]
    reference = _logits(loaded, inputs)
    for folder in (trimmed, whole):
        run = open_onnx(folder / "model.onnx", precision=precision, threads=1)
        got = np.concatenate([run(image[None]) for image in inputs])
        if precision == "fp32":
            np.testing.assert_allclose(got, reference, atol=2e-5, rtol=0)
        else:  # vitedge's own int8 parity gate
            cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
            agreement = (got.argmax(1) == reference.argmax(1)).mean()
            assert cosine.mean() >= DEFAULT_TOLERANCES["int8"]["cosine_mean"], (folder.name, cosine)
            assert agreement >= DEFAULT_TOLERANCES["int8"]["top1_agreement"], (folder.name, agreement)


def test_average_pooled_export_says_every_token(tmp_path):
    folder = export_artifact(make_tiny_vit(), to="onnx", precision="fp32", out=tmp_path / "avg")
    assert read_manifest(folder)["last_block_tokens"] == "all"


@pytest.mark.parametrize(
    ("to", "flag", "tokens"),
    [
        ("openvino", "--class-token-only", 1),
        ("onnx", "--all-tokens", "all"),
        ("executorch", "--class-token-only", 1),
    ],
)
def test_cli_chooses_and_verifies(to, flag, tokens, tmp_path, capsys, monkeypatch):
    """The export's own parity check (on by default) passes. ExecuTorch's parity check runs
    batches of several sizes, which a program that lost its dynamic batch fails (the trim's
    k/v split by chunk() did), and its trimmed program keeps every matrix product inside
    XNNPACK (a weight sliced in the graph left one to a portable addmm)."""
    from tests.support.cli import cli
    from vitedge.models import save_checkpoint

    checkpoint = save_checkpoint(_class_token_vit(), tmp_path / "cls.safetensors")
    args = ["export", str(checkpoint), "--to", to, flag, "--verify-samples", "32", "--out", str(tmp_path / "a")]
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 0, stderr
    manifest = read_manifest(tmp_path / "a")
    assert manifest["last_block_tokens"] == tokens
    if to == "executorch":
        outside = manifest["lowering"]["not_delegated"]
        assert not {"aten_addmm_default", "aten_mm_default", "aten_linear_default", "aten_bmm_default"} & set(outside)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_int8_searches_evaluate_the_graph_the_export_writes(enabled, tmp_path):
    """`vitedge quantize --max-drop`, `sensitivity` and `calibrate-sweep` rank and quantize graphs
    that workflows.int8_eval builds; they are trimmed exactly when the export is, so the written
    file is what its manifest's last_block_tokens says."""
    import openvino as ov

    from vitedge.workflows.int8_eval import openvino_graph, prepare_onnx

    options = ExportOptions(batch=1, class_token_only=enabled)
    onnx_rows = _rows_per_matmul(prepare_onnx(_class_token_vit(), options, tmp_path))
    model = openvino_graph(_class_token_vit(), options)
    openvino_rows = [
        op.get_output_partial_shape(0)[1].get_length()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "MatMul" and op.get_output_partial_shape(0).rank == ov.Dimension(3)
    ]
    trimmed_rows = 4 if enabled else 0  # q, proj, fc1, fc2 of the last block
    assert onnx_rows.count(1) == trimmed_rows
    assert openvino_rows.count(1) == trimmed_rows
    assert len(openvino_rows) >= 8  # the MatMuls were found at all
