"""Step names and specs, chains, purity, the save/load round trip of every step (bit-identical
logits), and the `vitedge compress` command."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from vitedge.cli import app
from vitedge.compress.pipeline import compress_to_file
from vitedge.compress.registry import STEPS, apply_steps, load_model, parse_step_spec
from vitedge.core.errors import VitedgeError
from vitedge.models import save_checkpoint

EXPECTED_STEPS = {
    "quantize-dynamic",
    "fp16",
    "bf16",
    "lowrank",
    "nystrom",
    "prune-magnitude",
    "prune-taylor",
    "prune-heads",
    "prune-mlp",
    "prune-structured",
    "tokens",
    "distill",
    "finetune",
}


def test_registry_names_every_technique() -> None:
    assert set(STEPS) == EXPECTED_STEPS
    assert all(step.help for step in STEPS.values())


def test_parse_step_spec_types_values() -> None:
    assert parse_step_spec("prune-heads:ratio=0.25,importance=taylor") == (
        "prune-heads",
        {"ratio": 0.25, "importance": "taylor"},
    )
    assert parse_step_spec("tokens:r=4") == ("tokens", {"r": 4})
    assert parse_step_spec("quantize-dynamic:per-channel=true") == ("quantize-dynamic", {"per_channel": True})
    assert parse_step_spec("fp16") == ("fp16", {})


def test_parse_step_spec_typos_list_the_valid_choices() -> None:
    with pytest.raises(VitedgeError) as unknown:
        parse_step_spec("prune-head:ratio=0.25")
    assert "prune-heads" in unknown.value.hint and "tokens" in unknown.value.hint
    with pytest.raises(VitedgeError) as option:
        parse_step_spec("tokens:ratio=4")
    assert "r" in option.value.hint and "mode" in option.value.hint
    with pytest.raises(VitedgeError, match="key=value"):
        parse_step_spec("tokens:r")
    # the last of two would win silently
    with pytest.raises(VitedgeError, match="step option 'ratio' is given twice"):
        parse_step_spec("prune-heads:ratio=0.25,ratio=0.5")


def test_bad_option_values_are_user_errors(tiny_vit) -> None:
    with pytest.raises(VitedgeError, match="ratio"):
        apply_steps(tiny_vit, [("prune-heads", {"ratio": "lots"})])
    with pytest.raises(VitedgeError, match="mode"):
        apply_steps(tiny_vit, [("tokens", {"mode": "blend"})])


def test_chain_is_pure_and_records_every_step(tiny_vit) -> None:
    before = {key: value.clone() for key, value in tiny_vit.module.state_dict().items()}
    chained = apply_steps(
        tiny_vit,
        [
            parse_step_spec("prune-structured:ratio=0.5"),
            parse_step_spec("tokens:r=4"),
            parse_step_spec("quantize-dynamic"),
        ],
    )
    assert [record["name"] for record in chained.steps] == ["prune-structured", "tokens", "quantize-dynamic"]
    assert tiny_vit.steps == ()
    after = tiny_vit.module.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[key], before[key]) for key in before)
    assert chained.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


ROUND_TRIPS = [
    ["quantize-dynamic"],
    ["fp16"],
    ["bf16"],
    ["lowrank:energy=0.8"],
    ["nystrom:landmarks=8"],
    ["prune-magnitude:ratio=0.5"],
    ["prune-heads:ratio=0.5"],
    ["prune-mlp:ratio=0.25,importance=taylor,samples=32"],
    ["tokens:r=8"],
    ["tokens:r=8,mode=drop"],
    ["prune-structured:ratio=0.5", "lowrank:rank=8", "tokens:r=4", "quantize-dynamic:per_channel=true"],
    ["nystrom:landmarks=4", "prune-heads:ratio=0.5", "bf16"],
]


@pytest.mark.parametrize("chain", ROUND_TRIPS, ids=["+".join(chain) for chain in ROUND_TRIPS])
def test_saved_compressed_model_reloads_bit_identical(tiny_vit, cifar_batch, tmp_path, chain) -> None:
    data = (torch.from_numpy(cifar_batch[0]), torch.from_numpy(cifar_batch[1]))
    compressed = apply_steps(tiny_vit, [parse_step_spec(spec) for spec in chain], data=data)
    inputs = torch.from_numpy(cifar_batch[0][:8])
    path = save_checkpoint(compressed, tmp_path / "compressed.safetensors")
    reloaded = load_model(str(path))
    assert [record["name"] for record in reloaded.steps] == [spec.partition(":")[0] for spec in chain]
    with torch.no_grad():
        assert torch.equal(reloaded.module(inputs), compressed.module(inputs))


def test_compress_to_file_and_cli(tiny_vit, cifar_test, tmp_path) -> None:
    import numpy as np

    source = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    pixels = np.stack([cifar_test.get(i) for i in range(64)])
    np.savez(tmp_path / "calib.npz", x=pixels, y=np.asarray(cifar_test.labels[:64]))
    compressed = compress_to_file(
        str(source),
        ["prune-heads:ratio=0.5,importance=taylor,samples=32", "tokens:r=4"],
        tmp_path / "a.safetensors",
        data=str(tmp_path / "calib.npz"),
    )
    assert compressed.steps[0]["options"]["importance"] == "taylor"
    result = CliRunner().invoke(
        app,
        [
            "compress",
            str(source),
            "--step",
            "prune-structured:ratio=0.5",
            "--step",
            "tokens:r=4",
            "--out",
            str(tmp_path / "b.safetensors"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tokens after each block: 60, 56" in result.output  # 64 patches, r=4 in each of 2 blocks
    reloaded = load_model(str(tmp_path / "b.safetensors"))
    assert reloaded.module.blocks[0].attn.num_heads == 1 and reloaded.module.blocks[0].mlp.fc1.out_features == 64
    typo = CliRunner().invoke(
        app, ["compress", str(source), "--step", "prune-head:ratio=0.5", "--out", str(tmp_path / "c.safetensors")]
    )
    assert isinstance(typo.exception, VitedgeError) and not (tmp_path / "c.safetensors").exists()
    with pytest.raises(VitedgeError, match="needs images"):
        compress_to_file(str(source), ["prune-taylor:ratio=0.5"], tmp_path / "d.safetensors")
    # images no step looks at are refused, not recorded in the file as if used
    with pytest.raises(
        VitedgeError, match=r"--data .*calib.npz is for steps that use images, and no step of tokens, fp16"
    ):
        compress_to_file(
            str(source), ["tokens:r=4", "fp16"], tmp_path / "e.safetensors", data=str(tmp_path / "calib.npz")
        )
    with pytest.raises(VitedgeError, match="--data-count is for the images of --data"):
        compress_to_file(str(source), ["tokens:r=4"], tmp_path / "e.safetensors", data_count=8)
    assert not (tmp_path / "e.safetensors").exists()
