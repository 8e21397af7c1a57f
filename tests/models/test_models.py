from __future__ import annotations

import json
import os
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


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unanswered"])
def test_pretrained_offline_is_a_clear_error(monkeypatch, tmp_path: Path, offline: str) -> None:
    """Offline by the user's HF_HUB_OFFLINE=1 or by a hub that does not answer (an endpoint
    under `.invalid`, which never resolves): one line naming the model, the cache looked in and
    why the hub was not asked, with the timm name that loads a local file offline."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline == "HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "ENDPOINT", "https://hub.invalid")
    why = "HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "hub.invalid did not answer"
    with pytest.raises(VitedgeError) as info:
        load_model("vit_tiny_patch16_224", pretrained=True)
    assert info.value.message == f"vit_tiny_patch16_224 is not in the Hugging Face cache ({tmp_path}) and {why}"
    assert "--model weights.safetensors --arch vit_tiny_patch16_224" in info.value.hint
    assert hub.HF_HUB_OFFLINE is (offline == "HF_HUB_OFFLINE")  # the client's own setting given back


def test_require_vit_rejects_a_cnn() -> None:
    loaded = load_model("resnet18")
    with pytest.raises(VitedgeError, match="Vision Transformer"):
        require_vit(loaded, "token merging")


def test_data_config_round_trips_through_dict() -> None:
    config = make_tiny_vit().data_config
    assert DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert Architecture.from_dict(make_tiny_vit().architecture.to_dict()) == make_tiny_vit().architecture


def _hub_cache_holding(home: Path, repo: str, loaded) -> None:  # noqa: ANN001 - LoadedModel
    """A Hugging Face cache under `home` holding `repo` (timm's save_for_hf files), laid out as
    the hub's client leaves a download: blobs, a snapshot per revision, refs/main."""
    from timm.models._hub import save_for_hf

    revision = "0" * 40
    snapshot = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    save_for_hf(loaded.module, str(snapshot), model_args=dict(loaded.architecture.kwargs), safe_serialization=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)


def test_a_hub_model_in_the_cache_loads_at_once_when_the_hub_does_not_answer(tmp_path: Path) -> None:
    """`vitedge export hf-hub:ORG/NAME` with no network: the hub's client retried its host five
    times (27 s, ten lines of "Retrying in 8s") before reading the model from its cache. Now one
    connection is tried, the load goes to the cache, and nothing but vitedge's lines is
    printed; a model the cache lacks is one error line. The endpoint is `.invalid`, a name that
    never resolves (RFC 2606), so this holds on a machine with network too."""
    import subprocess
    import sys

    _hub_cache_holding(tmp_path / "hf", "vitedge-tests/tiny-vit", make_tiny_vit())
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://hub.invalid", "COLUMNS": "200"}
    env.pop("HF_HUB_OFFLINE", None)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)

    def vitedge(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vitedge", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )

    done = vitedge("export", "hf-hub:vitedge-tests/tiny-vit", "--to", "onnx", "--out", "art", "--no-verify")
    assert done.returncode == 0, done.stderr
    assert "Retry" not in done.stderr and "thrown while requesting" not in done.stderr, done.stderr
    assert (tmp_path / "art" / "model.onnx").is_file()
    absent = vitedge("export", "hf-hub:vitedge-tests/absent", "--to", "onnx", "--out", "none", "--no-verify")
    assert absent.returncode == 2 and "Retry" not in absent.stderr, absent.stderr
    lines = [line for line in absent.stderr.splitlines() if line.strip()]
    assert lines[0] == (
        f"error: hf-hub:vitedge-tests/absent is not in the Hugging Face cache ({tmp_path / 'hf' / 'hub'}) "
        "and hub.invalid did not answer"
    ), absent.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), absent.stderr
