from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support import make_tiny_vit
from vitedge.calibration.preprocess import DataConfig
from vitedge.compress.registry import load_model
from vitedge.core.errors import VitedgeError
from vitedge.models import Architecture, require_vit, save_checkpoint


def test_safetensors_round_trip_gives_bit_identical_logits(tiny_vit, cifar_batch, tmp_path: Path) -> None:
    inputs = torch.from_numpy(cifar_batch[0])
    path = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    loaded = load_model(str(path))
    with torch.no_grad():
        assert torch.equal(tiny_vit.module(inputs), loaded.module(inputs))
    assert loaded.data_config == tiny_vit.data_config
    assert loaded.architecture == tiny_vit.architecture
    assert len(loaded.source_sha256) == 64


def test_pth_state_dict_loads_with_arch_and_metadata_sidecar(tiny_vit, cifar_batch, tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny_vit.module.state_dict()}, path)
    (tmp_path / "tiny.json").write_text(
        json.dumps({"architecture": tiny_vit.architecture.to_dict(), "data_config": tiny_vit.data_config.to_dict()})
    )
    loaded = load_model(str(path))
    inputs = torch.from_numpy(cifar_batch[0][:4])
    with torch.no_grad():
        assert torch.equal(tiny_vit.module(inputs), loaded.module(inputs))


def test_pth_without_architecture_asks_for_arch(tiny_vit, tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(tiny_vit.module.state_dict(), path)
    with pytest.raises(VitedgeError, match="architecture"):
        load_model(str(path))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    path = tmp_path / "evil.pth"
    torch.save({"weights": Evil()}, path)
    with pytest.raises(VitedgeError, match="refused"):
        load_model(str(path), arch="vit_tiny_patch16_224")
    assert not sentinel.exists()


def test_shape_mismatch_and_corrupt_file_are_user_errors(tiny_vit, tmp_path: Path) -> None:
    path = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    with pytest.raises(VitedgeError, match="do not fit"):
        load_model(str(path), arch="vit_small_patch16_224")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VitedgeError, match="not a readable"):
        load_model(str(truncated))


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(VitedgeError, match="unknown model") as info:
        load_model("vit_bsae_patch16_224")
    assert info.value.hint


def test_timm_name_resolves_data_config() -> None:
    loaded = load_model("vit_tiny_patch16_224")
    config = loaded.data_config
    assert config.input_size == (3, 224, 224)
    assert config.num_classes == 1000 and len(config.labels) == 1000
    assert config.crop_pct == pytest.approx(0.9)
    assert config.interpolation == "bicubic"


def test_pretrained_offline_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(VitedgeError, match="pretrained") as info:
        load_model("vit_tiny_patch16_224", pretrained=True)
    assert "--arch" in info.value.hint


def test_require_vit_rejects_a_cnn() -> None:
    loaded = load_model("resnet18")
    with pytest.raises(VitedgeError, match="Vision Transformer"):
        require_vit(loaded, "token merging")


def test_data_config_round_trips_through_dict() -> None:
    config = make_tiny_vit().data_config
    assert DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert Architecture.from_dict(make_tiny_vit().architecture.to_dict()) == make_tiny_vit().architecture
