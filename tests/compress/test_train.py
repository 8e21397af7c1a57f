"""The training loop: resume continues exactly, and 2 data-parallel gloo processes (DDP, as
under torchrun) reach the same weights as 1 process with the whole batch."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from vitedge.compress.train import TrainConfig, train

CONFIG = TrainConfig(epochs=1, batch_size=16, lr=1e-3, warmup_epochs=0.0, seed=0)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, 32, 32, generator=generator), torch.randint(0, 10, (32,), generator=generator)


def _model() -> torch.nn.Module:
    from tests.support import make_tiny_vit

    return make_tiny_vit(seed=0).module


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    model, _ = train(_model(), *_data(), CONFIG, show_progress=False)
    if rank == 0:
        torch.save(model.state_dict(), out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    distributed = torch.load(out, weights_only=True)
    single, logs = train(_model(), *_data(), CONFIG, show_progress=False)
    assert len(logs) == 1
    initial = _model().state_dict()
    moved = max(float((single.state_dict()[key] - initial[key]).abs().max()) for key in initial)
    assert moved > 1e-4  # two steps really changed the weights
    differences = torch.cat([(distributed[key] - value).abs().flatten() for key, value in single.state_dict().items()])
    # Summation order differs (two half-batch means all-reduced vs one mean); Adam divides by
    # √v, which turns ~1e-9 gradient differences on near-zero gradients into ~1e-6 updates.
    assert float(differences.max()) < 1e-5
    assert float(differences.mean()) < 1e-7


def test_resume_continues_exactly(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0.5, seed=0)
    checkpoint, first_epoch = tmp_path / "run.ckpt", tmp_path / "epoch1.ckpt"

    def keep_first(log) -> None:  # noqa: ANN001 - EpochLog
        if log.epoch == 1:
            shutil.copy(checkpoint, first_epoch)

    straight, logs = train(_model(), *_data(), config, checkpoint=checkpoint, on_epoch=keep_first, show_progress=False)
    resumed, resumed_logs = train(_model(), *_data(), config, checkpoint=first_epoch, resume=True, show_progress=False)
    assert [log.epoch for log in resumed_logs] == [1, 2] and resumed_logs[0] == logs[0]
    assert all(torch.equal(resumed.state_dict()[key], value) for key, value in straight.state_dict().items())


def test_a_checkpoint_is_not_resumed_on_other_images(tmp_path: Path) -> None:
    """`--resume` after changing --data or --data-count went on training the checkpoint's weights
    and optimizer on other images, and said nothing; now one line names the mismatch (the
    same images, as in test_resume_continues_exactly, resume)."""

    from vitedge.core.errors import VitedgeError

    checkpoint = tmp_path / "run.ckpt"
    inputs, labels = _data()
    train(_model(), inputs, labels, CONFIG, checkpoint=checkpoint, show_progress=False)
    fewer = (inputs[:16], labels[:16])
    with pytest.raises(VitedgeError, match="it trained on 32 images, this run has 16") as refused:
        train(_model(), *fewer, CONFIG, checkpoint=checkpoint, resume=True, show_progress=False)
    assert refused.value.message.endswith("this run has 16") and "--data-count" in refused.value.hint
    other = (torch.flip(inputs, dims=[0]), torch.flip(labels, dims=[0]))  # the same images, another order
    with pytest.raises(VitedgeError, match="it trained on 32 images, this run has 32 other ones"):
        train(_model(), *other, CONFIG, checkpoint=checkpoint, resume=True, show_progress=False)


def test_a_checkpoint_that_cannot_be_resumed_is_named(tmp_path: Path) -> None:
    """--resume from a file that is not this run's checkpoint: one line saying which way it is
    not (torch's own message for a refused pickle advises loading it unsafely)."""

    from vitedge.compress.train import _resume
    from vitedge.core.errors import VitedgeError

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    other = torch.nn.Linear(4, 3)
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "logs": []},
        tmp_path / "own.ckpt",
    )
    torch.save(
        {"model": other.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "logs": []},
        tmp_path / "other.ckpt",
    )
    torch.save({"weights": model.state_dict()}, tmp_path / "dict.ckpt")
    (tmp_path / "text.ckpt").write_text("mine")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "own.ckpt").read_bytes()[:200])
    assert _resume(tmp_path / "own.ckpt", model, optimizer, {}) == (3, [])  # written before data was recorded
    for name, reason in {
        "other": "its weights do not fit this model (another architecture or size)",
        "dict": "not a training checkpoint (it lacks the model, optimizer, epoch or logs)",
        "text": "not a training checkpoint (vitedge loads tensors from it, never code)",
        "cut": "PytorchStreamReader failed reading zip archive",
    }.items():
        with pytest.raises(
            VitedgeError,
            match="cannot resume from .*" + name + r"\.ckpt: " + reason.replace("(", r"\(").replace(")", r"\)"),
        ):
            _resume(tmp_path / f"{name}.ckpt", model, optimizer, {})


def test_train_takes_a_class_balanced_draw_of_its_data(tmp_path: Path, cifar_test) -> None:
    """`vitedge train --data-count 20` trains on 20 of the 60 images (what it trains on is held in
    memory at the input size: at 224 pixels CIFAR-10's training set is 7.5 GB as uint8)."""
    import json

    import numpy as np
    from safetensors import safe_open
    from typer.testing import CliRunner

    from vitedge.cli import app
    from vitedge.models.loading import METADATA_KEY

    chosen = [int(i) for c in range(10) for i in np.flatnonzero(cifar_test.labels == c)[:6]]
    np.savez(tmp_path / "train.npz", x=np.stack([cifar_test.get(i) for i in chosen]), y=cifar_test.labels[chosen])
    out = tmp_path / "t.safetensors"
    small = ["--embed-dim", "32", "--depth", "1", "--num-heads", "2", "--epochs", "1", "--batch-size", "10"]
    args = ["train", "--data", str(tmp_path / "train.npz"), "--data-count", "20", "--test-data", "", *small]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    with safe_open(out, "pt") as saved:
        recorded = json.loads(saved.metadata()[METADATA_KEY])
    assert recorded["train_images"] == 20, recorded


def test_training_images_are_held_as_pixels_and_read_back_as_the_same_inputs(cifar_test) -> None:
    """Training, distillation and the data-using steps hold their images as uint8 at the input
    size (CIFAR-10's training set at 224 pixels: 7.5 GB; as float32 inputs 30 GB, refused on a
    24 GB machine) and normalize a batch when it is taken: bit for bit the float32 inputs,
    through a resize and a crop, by slice, by tensor of indices and in the resume fingerprint."""
    import dataclasses

    import numpy as np

    from vitedge.calibration.calibset import preprocess_images
    from vitedge.calibration.sources import subset_indices
    from vitedge.compress.train import data_fingerprint, images_to_tensors, tiny_cifar_vit
    from vitedge.core.cpu import batch_outgrows_memory

    config = dataclasses.replace(tiny_cifar_vit().data_config, input_size=(3, 48, 48), crop_pct=0.875)
    held, labels = images_to_tensors(cifar_test, config, 20, seed=3)
    assert held.pixels.dtype == np.uint8 and held.pixels.nbytes == 20 * 48 * 48 * 3 and len(held) == 20
    indices = subset_indices(cifar_test, 20, seed=3)
    inputs = torch.from_numpy(preprocess_images((cifar_test.get(int(i)) for i in indices), 20, config))
    assert torch.equal(labels, torch.from_numpy(cifar_test.labels[indices].astype(np.int64)))
    assert held[:].dtype == torch.float32 and torch.equal(held[:], inputs)
    order = torch.tensor([7, 0, 19, 7])
    assert torch.equal(held[order], inputs[order]) and torch.equal(held[5], inputs[5])
    assert data_fingerprint(held, labels) == data_fingerprint(inputs, labels)
    assert batch_outgrows_memory(50_000, (224, 224, 3), available=24 << 30, dtype="uint8") is None
    assert "30.1 GB for its float32 3×224×224 inputs" in batch_outgrows_memory(50_000, (3, 224, 224), 24 << 30)
    assert batch_outgrows_memory(50_000, (224, 224, 3), available=4 << 30, dtype="uint8") == (
        "batch 50000 needs 7.5 GB for its uint8 224×224×3 inputs alone, and this machine has 4.3 GB available"
    )


def test_training_that_diverges_stops_before_the_epoch_is_saved(tmp_path: Path) -> None:
    """A learning rate that blows the weights up to NaN saved them as a trained model, exit 0
    (until export refused them); now the epoch that diverged ends training with one line, and
    the checkpoint keeps the last finite epoch."""
    import dataclasses

    from vitedge.core.errors import VitedgeError

    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, warmup_epochs=0.0, seed=0)
    checkpoint = tmp_path / "run.ckpt"
    train(_model(), *_data(), config, checkpoint=checkpoint, show_progress=False)
    finite = checkpoint.read_bytes()
    wild = dataclasses.replace(config, epochs=2, lr=1e6)
    with pytest.raises(
        VitedgeError, match=r"training diverged in epoch 2: the weights are no longer finite"
    ) as refused:
        train(_model(), *_data(), wild, checkpoint=checkpoint, resume=True, show_progress=False)
    assert "it was 1e+06" in refused.value.hint
    assert checkpoint.read_bytes() == finite


def test_training_and_test_images_from_one_source_are_opened_once(tmp_path: Path, capsys, monkeypatch) -> None:
    """`train`/`distill --data DIR --test-data DIR` listed DIR (every image's header read) twice;
    the test images are now the training set handed back."""
    import numpy as np
    from PIL import Image

    import vitedge.compress.train
    from tests.support import count_openings
    from tests.support.cli import cli

    folder = tmp_path / "pets"
    for number, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True)
        for copy in range(4):
            Image.fromarray(np.full((8, 8, 3), 90 * number + copy, dtype=np.uint8)).save(folder / name / f"{copy}.png")
    opened = count_openings(monkeypatch, vitedge.compress.train)
    small = ["--embed-dim", "32", "--depth", "1", "--num-heads", "2", "--epochs", "1", "--batch-size", "4"]
    out = tmp_path / "t.safetensors"
    code, _, stderr = cli(
        capsys, monkeypatch, "train", "--data", str(folder), "--test-data", str(folder), *small, "--out", str(out)
    )
    assert code == 0 and out.is_file(), stderr
    assert opened == [str(folder)]
    code, _, stderr = cli(
        capsys,
        monkeypatch,
        "distill",
        "--teacher",
        str(out),
        "--data",
        str(folder),
        "--test-data",
        str(folder),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "s.safetensors"),
    )
    assert code == 0, stderr
    assert opened == [str(folder), str(folder)]
