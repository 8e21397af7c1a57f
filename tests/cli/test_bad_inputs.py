"""The bad-input matrix: every way a user can hand vitedge something broken, run through the
real command line in a subprocess (`python -m vitedge ...`), as a user would meet it.

Each refused case must exit 2 with one `error:` line naming the problem (and at most one
`hint:` line naming the fix), print no traceback, and leave nothing behind in the working
folder: no output, no hidden `.NAME.*.partial` staging folder, no `.tmp` file. A few inputs
that look odd but are valid (CMYK, 16-bit, palette, EXIF-rotated images) must be accepted
and decoded correctly instead. docs/reliability.md lists every case with its message.

Artifacts are built once per session, in-process, from the tiny 32×32 ViT; each subprocess
imports torch (seconds), so the matrix stays near 40 calls.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import make_tiny_vit
from vitedge.calibration.sources import decode_image
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import (
    MANIFEST,
    read_manifest,
    verify_checksums,
    write_manifest,
)
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.models import save_checkpoint

TIMEOUT_S = 600


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Assets:
    """Inputs built once per session; a test copies whatever it damages."""

    root: Path
    cache: Path
    checkpoint: Path  # tiny ViT .safetensors with our metadata
    bare_pth: Path  # the same weights as a bare state_dict (no architecture recorded)
    onnx: Path  # ONNX fp32 artifact, dynamic batch
    onnx_fixed: Path  # ONNX fp32 artifact exported with --batch 1
    openvino: Path  # OpenVINO fp32 artifact
    images: Path  # 2 classes × 2 real CIFAR-10 PNGs


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header that claims width×height 1-bit pixels (400 M: a decompression
    bomb), with one tiny IDAT; the guard must refuse it before decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def listing(folder: Path) -> dict[str, int]:
    """Every path under `folder` (hidden ones too) with its size; folders as -1."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in sorted(folder.rglob("*"))}


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp", ".part"))]


def cli_env(assets: Assets) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"VITEDGE_CACHE": str(assets.cache), "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    return env


def vitedge(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitedge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def assert_user_error(done: subprocess.CompletedProcess, words: tuple[str, ...]) -> str:
    """Exit 2, `error: ...` naming every one of `words`, at most a `hint:` after it, no traceback.
    One-line `warning: ...` notes before the error are allowed (e.g. which files were skipped);
    Python's raw two-line warning format (path:line: UserWarning + source line) is not."""
    shown = f"exit {done.returncode}\n--- stderr\n{done.stderr}\n--- stdout\n{done.stdout}"
    assert "Traceback" not in done.stderr + done.stdout, shown
    assert done.returncode == 2, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    while lines and lines[0].startswith("warning: "):
        lines.pop(0)
    assert 1 <= len(lines) <= 2, shown
    assert lines[0].startswith("error: "), shown
    if len(lines) == 2:
        assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: ") + 5, shown
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in the error line\n{shown}"
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `path` (root only): a true read-only or full file system."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def assets(tmp_path_factory, cifar_test) -> Assets:
    root = tmp_path_factory.mktemp("bad-inputs-assets")
    model = make_tiny_vit()
    checkpoint = save_checkpoint(model, root / "tiny.safetensors")
    bare = root / "tiny_bare.pth"
    torch.save(model.module.state_dict(), bare)
    images = root / "images"
    for index in range(4):
        label = int(cifar_test.labels[index])
        folder = images / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{index}-{label}.png").write_bytes(png_bytes(cifar_test.get(index)))
    return Assets(
        root=root,
        cache=root / "cache",
        checkpoint=checkpoint,
        bare_pth=bare,
        onnx=export_artifact(model, to="onnx", precision="fp32", out=root / "onnx-fp32"),
        onnx_fixed=export_artifact(
            model, to="onnx", precision="fp32", out=root / "onnx-fixed", options=ExportOptions(batch=1)
        ),
        openvino=export_artifact(model, to="openvino", precision="fp32", out=root / "openvino-fp32"),
        images=images,
    )


# --------------------------------------------------------------------------- case builders
# Each builder gets (working folder, assets), creates the bad input in the working folder and
# returns the command line; the test then checks nothing else appears there.

Setup = Callable[[Path, Assets], list[str]]


def export_of(spec: str, *extra: str) -> list[str]:
    return ["export", spec, "--to", "onnx", "--out", "art", "--no-verify", *extra]


def calibrate_on(source: str, count: int = 2) -> Callable[[Path, Assets], list[str]]:
    return lambda tmp, a: [
        "export",
        str(a.checkpoint),
        "--to",
        "onnx",
        "--precision",
        "int8-static",
        "--calib",
        source,
        "--calib-samples",
        str(count),
        "--out",
        "art",
        "--no-verify",
    ]


def bench_of(folder: str) -> list[str]:
    return ["bench", folder, "--data", "", "--batch", "1", "--runs", "1"]


def corrupt_safetensors(tmp: Path, a: Assets) -> list[str]:
    (tmp / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return export_of("junk.safetensors")


def truncated_safetensors(tmp: Path, a: Assets) -> list[str]:
    data = a.checkpoint.read_bytes()
    (tmp / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return export_of("cut.safetensors")


class _Payload:
    """Unpickling this runs `os.system` (what a hostile .pth does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (self.command,))


SENTINEL = "PWNED-by-pickle"


def pickled_code_pth(tmp: Path, a: Assets) -> list[str]:
    torch.save({"head.weight": _Payload(f"touch {tmp / SENTINEL}")}, tmp / "evil.pth")
    return export_of("evil.pth", "--arch", "vit_tiny_patch16_224")


def wrong_architecture(tmp: Path, a: Assets) -> list[str]:
    shutil.copy(a.bare_pth, tmp / "weights.pth")
    return export_of("weights.pth", "--arch", "vit_tiny_patch16_224")


def bare_weights_without_arch(tmp: Path, a: Assets) -> list[str]:
    shutil.copy(a.bare_pth, tmp / "weights.pth")
    return export_of("weights.pth")


def wrong_input_size(tmp: Path, a: Assets) -> list[str]:
    """A checkpoint whose recorded DataConfig asks for 48×48 inputs, but the network was
    built for 32×32 (a hand-edited sidecar): the export must refuse, not trace garbage."""
    shutil.copy(a.bare_pth, tmp / "weights.pth")
    metadata = {
        "architecture": make_tiny_vit().architecture.to_dict(),
        "data_config": {**make_tiny_vit().data_config.to_dict(), "input_size": [3, 48, 48]},
    }
    (tmp / "weights.json").write_text(json.dumps(metadata))
    return export_of("weights.pth")


def compressed(step: str, command: str = "export") -> Setup:
    """The export (or `vitedge quantize`) of a `vitedge compress --step STEP` checkpoint: an int8 module does not trace,
    and a cast one would be written as an "fp32" file computing in fp16 (before: written, and
    only the parity check, when it ran, said anything)."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        from vitedge.compress.registry import apply_steps, load_model

        save_checkpoint(apply_steps(load_model(str(a.checkpoint)), [(step, {})]), tmp / "small.safetensors")
        if command == "quantize":
            return [
                "quantize",
                "small.safetensors",
                "--to",
                "onnx",
                "--out",
                "art",
                "--max-drop",
                "1",
                "--calib-samples",
                "4",
            ]
        return export_of("small.safetensors")

    return setup


def record_edited(edit: Callable[[dict], object] | str) -> Setup:
    """`vitedge export` of a head-pruned checkpoint whose recorded metadata is edited in place
    (`edit` changes the parsed record) or replaced by the text `edit`; the weights are untouched."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        from safetensors import safe_open
        from safetensors.torch import save_file

        from vitedge.compress.registry import apply_steps, load_model

        save_checkpoint(apply_steps(load_model(str(a.checkpoint)), [("prune-heads", {})]), tmp / "small.safetensors")
        with safe_open(str(tmp / "small.safetensors"), framework="pt") as handle:
            header, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
        if isinstance(edit, str):
            text = edit
        else:
            record = json.loads(header["vitedge"])
            edit(record)
            text = json.dumps(record)
        save_file(tensors, str(tmp / "small.safetensors"), metadata={**header, "vitedge": text})
        return export_of("small.safetensors")

    return setup


def _first_pruned_block(record: dict) -> dict:
    return next(iter(v for v in record["steps"][0]["structure"].values() if isinstance(v, dict)))


def empty_folder(tmp: Path, a: Assets) -> list[str]:
    (tmp / "empty").mkdir()
    return calibrate_on("empty")(tmp, a)


def non_images(tmp: Path, a: Assets) -> list[str]:
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "photo.jpg").write_text("<html>a web page saved as .jpg</html>\n")
    return calibrate_on("docs")(tmp, a)


def broken_images(tmp: Path, a: Assets) -> list[str]:
    folder = tmp / "broken"
    folder.mkdir()
    good = png_bytes(np.full((32, 32, 3), 128, np.uint8))
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "bomb.png").write_bytes(bomb_png())
    return calibrate_on("broken")(tmp, a)


def float_npz_with_nan(tmp: Path, a: Assets) -> list[str]:
    pixels = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    pixels[0, 0, 0, 0] = np.nan
    pixels[1, 0, 0, 0] = np.inf
    np.savez(tmp / "floats.npz", x=pixels, y=np.arange(4))
    return calibrate_on("floats.npz")(tmp, a)


def too_few_images(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.images, tmp / "four")
    return calibrate_on("four", 5)(tmp, a)


def fixed_batch_onnx_fed_batch_8(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.onnx_fixed, tmp / "fixed")
    return ["bench", "fixed", "--data", "", "--batch", "8", "--runs", "1"]


def flipped_byte(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.onnx, tmp / "art1")
    model = tmp / "art1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return bench_of("art1")


def truncated_onnx(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.onnx, tmp / "art1")
    model = tmp / "art1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:2000])
    return bench_of("art1")


def truncated_onnx_resigned(tmp: Path, a: Assets) -> list[str]:
    """Truncated and the manifest rewritten to match (as a buggy tool or a hand copy would):
    the checksums pass, so the runtime's own load check must refuse it cleanly."""
    shutil.copytree(a.onnx, tmp / "art1")
    model = tmp / "art1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:2000])
    resign_manifest(tmp / "art1")
    return bench_of("art1")


def resign_manifest(folder: Path) -> None:
    """Rewrite the manifest so its checksums match the damaged files: only the runtime's own
    load check is left to refuse them."""
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).unlink()
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "created")})


def verify_recorded_relative(other_file: bool) -> Setup:
    """`vitedge verify art1` where export recorded its source as the relative `m.safetensors` it
    was given in another folder: here none, or another model of that name (before: compared
    with that one, "outside tolerance", exit 1, as if the export were wrong)."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        shutil.copytree(a.onnx, tmp / "art1")
        manifest = json.loads((tmp / "art1" / MANIFEST).read_text())
        manifest["source"].update(spec="m.safetensors", sha256=hashlib.sha256(a.checkpoint.read_bytes()).hexdigest())
        (tmp / "art1" / MANIFEST).write_text(json.dumps(manifest))
        resign_manifest(tmp / "art1")
        if other_file:
            save_checkpoint(make_tiny_vit(seed=1), tmp / "m.safetensors")
        return ["verify", "art1", "--samples", "4"]

    return setup


def xml_without_bin(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.openvino, tmp / "ov")
    (tmp / "ov" / "model.bin").unlink()
    return bench_of("ov")


def xml_without_bin_resigned(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.openvino, tmp / "ov")
    (tmp / "ov" / "model.bin").unlink()
    resign_manifest(tmp / "ov")
    return bench_of("ov")


def bin_cut_resigned(tmp: Path, a: Assets) -> list[str]:
    """OpenVINO's error opens with two lines of where it was raised; the reason is the third."""
    shutil.copytree(a.openvino, tmp / "ov")
    weights = tmp / "ov" / "model.bin"
    weights.write_bytes(weights.read_bytes()[:2000])
    resign_manifest(tmp / "ov")
    return bench_of("ov")


def model_file_not_listed(tmp: Path, a: Assets) -> list[str]:
    """A second model dropped into the artifact and named by a hand-edited manifest, with no
    checksum: loading it would run unverified weights."""
    shutil.copytree(a.onnx, tmp / "art1")
    shutil.copyfile(tmp / "art1" / "model.onnx", tmp / "art1" / "other.onnx")
    manifest = json.loads((tmp / "art1" / MANIFEST).read_text())
    (tmp / "art1" / MANIFEST).write_text(json.dumps({**manifest, "model_file": "other.onnx"}))
    return bench_of("art1")


def manifest_path_outside(tmp: Path, a: Assets) -> list[str]:
    """The manifest points at a model beside the artifact folder, not in it."""
    shutil.copytree(a.onnx, tmp / "art1")
    shutil.copyfile(tmp / "art1" / "model.onnx", tmp / "elsewhere.onnx")
    manifest = json.loads((tmp / "art1" / MANIFEST).read_text())
    (tmp / "art1" / MANIFEST).write_text(json.dumps({**manifest, "model_file": "../elsewhere.onnx"}))
    return ["bundle", "art1", "--out", "b"]


def manifest_not_json(tmp: Path, a: Assets) -> list[str]:
    shutil.copytree(a.onnx, tmp / "art1")
    (tmp / "art1" / MANIFEST).write_text('{"format": "onnx", ')
    return ["verify", "art1", "--samples", "8"]


def manifest_edited(command: str, **fields: object) -> Setup:
    """`vitedge COMMAND` on an artifact whose manifest has `fields` hand-edited; `data_config`
    entries are merged into the recorded one unless the value is not a dict."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        shutil.copytree(a.onnx, tmp / "art1")
        manifest = json.loads((tmp / "art1" / MANIFEST).read_text())
        for key, value in fields.items():
            merged = key == "data_config" and isinstance(value, dict)
            manifest[key] = {**manifest[key], **value} if merged else value
        (tmp / "art1" / MANIFEST).write_text(json.dumps(manifest))
        return bench_of("art1") if command == "bench" else ["bundle", "art1", "--out", "b"]

    return setup


def verified_against_a_model_name(tmp: Path, a: Assets) -> list[str]:
    """An artifact exported from a timm name without pretrained weights: a new load of the name
    is another random model, against which any artifact fails (cosine about 0)."""
    shutil.copytree(a.onnx, tmp / "art1")
    manifest = json.loads((tmp / "art1" / MANIFEST).read_text())
    source = {**manifest["source"], "spec": "vit_tiny_patch16_224", "sha256": ""}
    (tmp / "art1" / MANIFEST).write_text(json.dumps({**manifest, "source": source}))
    resign_manifest(tmp / "art1")
    return ["verify", "art1", "--samples", "8"]


def npz_labelled(labels: list[int] | list[float]) -> Setup:
    """`vitedge eval` on a .npz whose y holds `labels` (one black image each)."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        np.savez(tmp / "set.npz", x=np.zeros((len(labels), 32, 32, 3), np.uint8), y=np.array(labels))
        return ["eval", str(a.checkpoint), "--data", "set.npz"]

    return setup


def damaged_npz(damage: str) -> Setup:
    """`vitedge eval` on a real .npz of four (black) images cut in half, or with 64 bytes in its middle overwritten."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        buffer = io.BytesIO()
        np.savez(buffer, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
        data = bytearray(buffer.getvalue())
        middle = len(data) // 2
        if damage == "cut":
            del data[middle:]
        else:
            data[middle : middle + 64] = b"\xff" * 64
        (tmp / "set.npz").write_bytes(bytes(data))
        return ["eval", str(a.checkpoint), "--data", "set.npz"]

    return setup


def train_on_four_images(tmp: Path, *options: str) -> list[str]:
    """`vitedge train` on four black images, one epoch unless `options` say otherwise: seconds
    if a bad option is let through."""
    np.savez(tmp / "four.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    return ["train", "--data", "four.npz", "--test-data", "", "--epochs", "1", *options, "--out", "t.safetensors"]


def distill_on_four_images(tmp: Path, a: Assets, *options: str) -> list[str]:
    """`vitedge distill` from the test checkpoint on four black images, one epoch: seconds if a
    bad option is let through."""
    np.savez(tmp / "four.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    return [
        "distill", "--teacher", str(a.checkpoint), "--data", "four.npz", "--test-data", "", "--epochs", "1",
        "--batch-size", "4", *options, "--out", "s.safetensors",
    ]  # fmt: skip


def beside_own_file(name: str, command: Setup) -> Setup:
    """`command` run where the user already has a file `name` (the matrix checks it survives)."""

    def setup(tmp: Path, a: Assets) -> list[str]:
        (tmp / name).write_text("mine")
        return command(tmp, a)

    return setup


def recipe(text: str, encoding: str = "utf-8") -> Setup:
    def setup(tmp: Path, a: Assets) -> list[str]:
        (tmp / "bad.toml").write_text(text, encoding=encoding)
        return ["run", "bad.toml", "--out", "run-out"]

    return setup


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    words: tuple[str, ...]  # what the error line must name


CASES = [
    # model files and names
    Case("corrupt-safetensors", corrupt_safetensors, ("junk.safetensors", "not a readable")),
    Case("truncated-safetensors", truncated_safetensors, ("cut.safetensors", "not a readable")),
    Case("pickled-code-pth", pickled_code_pth, ("refused", "evil.pth")),
    Case("wrong-architecture", wrong_architecture, ("do not fit", "vit_tiny_patch16_224")),
    Case("weights-without-architecture", bare_weights_without_arch, ("architecture",)),
    Case("wrong-input-size", wrong_input_size, ("weights.pth", "cannot run on its DataConfig input size (3, 48, 48)")),
    Case(
        "unknown-model-name",
        lambda tmp, a: export_of("vit_bsae_patch16_224"),
        ("unknown model", "vit_bsae_patch16_224"),
    ),
    Case(
        "missing-model-file", lambda tmp, a: export_of("nothere.safetensors"), ("nothere.safetensors", "does not exist")
    ),
    Case("not-a-vit-export", lambda tmp, a: export_of("resnet18"), ("vision transformer", "resnet18")),
    Case(
        "export-of-an-artifact-folder",
        lambda tmp, a: export_of(str(a.onnx)),
        ("artifact folder written by vitedge export", "not a PyTorch model"),
    ),
    Case(
        "export-of-a-plain-folder",
        lambda tmp, a: ((tmp / "plain").mkdir(), export_of("plain"))[1],
        ("plain is a folder but not a model", "config.json"),
    ),
    Case(
        "bench-of-an-exported-model-file",
        lambda tmp, a: ["bench", str(a.onnx / "model.onnx"), "--data", ""],
        ("model.onnx is not a PyTorch checkpoint",),
    ),
    Case(
        "verify-of-a-file-in-an-artifact",
        lambda tmp, a: ["verify", str(a.onnx / MANIFEST)],
        ("manifest.json is a file, not a vitedge artifact folder",),
    ),
    Case(
        "compress-over-an-existing-file",
        beside_own_file(
            "small.safetensors",
            lambda tmp, a: ["compress", str(a.checkpoint), "--step", "fp16", "--out", "small.safetensors"],
        ),
        ("output file small.safetensors already exists",),
    ),
    Case(
        "compress-over-its-own-input-forced",
        lambda tmp, a: (
            shutil.copyfile(a.checkpoint, tmp / "m.safetensors"),
            ["compress", "m.safetensors", "--step", "fp16", "--out", "./m.safetensors", "--force"],
        )[1],
        ("is a model this command reads",),
    ),
    Case(
        "train-over-an-existing-file",
        beside_own_file("t.safetensors", lambda tmp, a: train_on_four_images(tmp)),
        ("output file t.safetensors already exists",),
    ),
    Case(
        "bench-batch-beyond-memory",
        lambda tmp, a: ["bench", str(a.checkpoint), "--data", "", "--batch", "1,1000000000"],
        ("cannot time", "batch 1000000000 needs", "for its float32 3×32×32 inputs alone", "GB available"),
    ),
    Case(
        "data-folder-named-with-a-line-break",
        lambda tmp, a: ((tmp / "we\nird").mkdir(), ["eval", str(a.checkpoint), "--data", "we\nird"])[1],
        ("no readable images in we\\nird",),
    ),
    Case(
        "train-out-under-a-file",
        beside_own_file("notes", lambda tmp, a: [*train_on_four_images(tmp)[:-2], "--out", "notes/t.safetensors"]),
        ("cannot write --out notes/t.safetensors", "notes is a file, not a folder"),
    ),
    Case(
        "distill-checkpoint-under-a-file",
        beside_own_file("notes", lambda tmp, a: [*distill_on_four_images(tmp, a), "--checkpoint", "notes/s.ckpt"]),
        ("cannot write --checkpoint notes/s.ckpt", "notes is a file, not a folder"),
    ),
    Case(
        "export-out-under-a-file",
        beside_own_file("notes", lambda tmp, a: export_of(str(a.checkpoint), "--out", "notes/art")),
        ("cannot write to notes", "notes is a file, not a folder"),
    ),
    Case(
        "sensitivity-report-into-a-file",
        beside_own_file(
            "notes.txt", lambda tmp, a: ["sensitivity", str(a.checkpoint), "--samples", "8", "--out", "notes.txt"]
        ),
        ("--out notes.txt is a file, not a folder",),
    ),
    Case(
        "sweep-report-into-a-file",
        beside_own_file(
            "notes.txt",
            lambda tmp, a: [
                "calibrate-sweep",
                str(a.checkpoint),
                "--samples",
                "8",
                "--counts",
                "4",
                "--out",
                "notes.txt",
            ],
        ),
        ("--out notes.txt is a file, not a folder",),
    ),
    Case(
        "train-over-an-earlier-checkpoint",
        beside_own_file("t.ckpt", lambda tmp, a: train_on_four_images(tmp, "--batch-size", "4")),
        ("checkpoint t.ckpt exists (an earlier run's state",),
    ),
    Case(
        "distill-over-an-earlier-checkpoint",
        beside_own_file("s.ckpt", lambda tmp, a: distill_on_four_images(tmp, a)),
        ("checkpoint s.ckpt exists",),
    ),
    Case(
        "train-resume-from-a-damaged-checkpoint",
        beside_own_file("t.ckpt", lambda tmp, a: train_on_four_images(tmp, "--batch-size", "4", "--resume")),
        ("cannot resume from t.ckpt",),
    ),
    Case(
        "sensitivity-over-an-earlier-report",
        lambda tmp, a: (
            (tmp / "sens").mkdir(),
            (tmp / "sens" / "sensitivity.json").write_text("{}"),
            ["sensitivity", str(a.checkpoint), "--samples", "8", "--out", "sens"],
        )[2],
        ("output folder sens already exists",),
    ),
    Case(
        "train-zero-epochs",
        lambda tmp, a: train_on_four_images(tmp, "--epochs", "0"),
        ("training epochs 0", "at least 1"),
    ),
    Case(
        "train-image-not-whole-patches",
        lambda tmp, a: train_on_four_images(tmp, "--img-size", "30"),
        ("image size 30", "4-pixel patches"),
    ),
    Case(
        "not-a-vit-compress",
        lambda tmp, a: ["compress", "resnet18", "--step", "prune-heads:ratio=0.25", "--out", "small.safetensors"],
        ("timm vision transformer", "resnet"),
    ),
    # export options
    Case(
        "unknown-format",
        lambda tmp, a: ["export", str(a.checkpoint), "--to", "tflite", "--out", "art"],
        ("unknown export format", "tflite"),
    ),
    Case(
        "static-int8-without-calibration",
        lambda tmp, a: ["export", str(a.checkpoint), "--to", "onnx", "--precision", "int8-static", "--out", "art"],
        ("calibration",),
    ),
    Case(
        "export-of-an-int8-checkpoint",
        compressed("quantize-dynamic"),
        ("holds int8-dynamic weights", "quantize-dynamic step", "start from the float model"),
    ),
    Case("export-of-an-fp16-checkpoint", compressed("fp16"), ("holds fp16 weights", "fp16 step")),
    Case("quantize-of-a-bf16-checkpoint", compressed("bf16", "quantize"), ("holds bf16 weights", "bf16 step")),
    Case("opset-too-old", lambda tmp, a: export_of(str(a.checkpoint), "--opset", "13"), ("opset 13",)),
    Case(
        "unknown-compress-step",
        lambda tmp, a: [
            "compress",
            str(a.checkpoint),
            "--step",
            "prune-hedas:ratio=0.25",
            "--out",
            "small.safetensors",
        ],
        ("unknown compression step", "prune-hedas"),
    ),
    Case(
        "compress-ratio-out-of-range",
        lambda tmp, a: ["compress", str(a.checkpoint), "--step", "prune-heads:ratio=1.5", "--out", "small.safetensors"],
        ("ratio=1.5",),
    ),
    # images and data sets
    Case("missing-data-set", calibrate_on("no-such-folder"), ("no-such-folder", "does not exist")),
    Case("empty-image-folder", empty_folder, ("no readable images", "empty")),
    Case("folder-of-non-images", non_images, ("no readable images", "docs")),
    Case("broken-and-bomb-images", broken_images, ("no readable images", "broken")),
    Case("nan-inf-float-npz", float_npz_with_nan, ("uint8", "float32")),
    Case("npz-negative-labels", npz_labelled([0, -1]), ("set.npz", "not class indices", "from -1 to 0")),
    Case("npz-fractional-labels", npz_labelled([0.5, 1.0]), ("set.npz", "not class indices")),
    Case("labels-beyond-the-model", npz_labelled([0, 99]), ("labels run from 0 to 99", "10 classes")),
    Case("truncated-npz", damaged_npz("cut"), ("cannot read set.npz", "not a zip file")),
    Case(
        "data-loose-images-beside-class-folders",
        lambda tmp, a: (
            shutil.copytree(a.images, tmp / "pets"),
            shutil.copyfile(next((a.images / "class0").iterdir()), tmp / "pets" / "stray.png"),
            ["eval", str(a.checkpoint), "--data", "pets"],
        )[-1],
        ("pets has no labels (1 image(s) lie beside its class folders, e.g. stray.png)",),
    ),
    Case(
        "data-one-image",
        lambda tmp, a: (
            shutil.copyfile(next((a.images / "class0").iterdir()), tmp / "one.png"),
            ["eval", str(a.checkpoint), "--data", "one.png"],
        )[1],
        ("'one.png' is one image, not a set of images",),
    ),
    Case(
        "data-a-zip-file",
        lambda tmp, a: ((tmp / "images.zip").write_bytes(b"PK"), ["eval", str(a.checkpoint), "--data", "images.zip"])[
            1
        ],
        ("'images.zip' is a file vitedge does not read images from",),
    ),
    Case("npz-with-overwritten-bytes", damaged_npz("overwritten"), ("cannot read set.npz", "crc")),
    Case("more-calibration-samples-than-images", too_few_images, ("5 images", "only 4")),
    Case("eval-samples-zero", lambda tmp, a: ["eval", str(a.checkpoint), "--samples", "0"], ("--samples", "positive")),
    Case(
        "eval-unlabelled-folder",
        lambda tmp, a: (
            shutil.copytree(a.images / "class0", tmp / "flat"),
            ["eval", str(a.checkpoint), "--data", "flat"],
        )[1],
        ("no labels",),
    ),
    # recipes
    Case("recipe-typo-table", recipe('[modle]\nspec = "vitedge-cifar10"\n'), ("bad.toml:1", "unknown table", "modle")),
    Case(
        "recipe-typo-step-option", recipe('[[compress]]\nstep = "prune-heads"\nratoi = 0.25\n'), ("bad.toml:3", "ratoi")
    ),
    Case("recipe-not-toml", recipe('[model\nspec = "x"\n'), ("bad.toml", "not valid toml")),
    Case(
        "recipe-negative-seed",
        recipe("[calibration]\nseed = -1\n"),
        ("bad.toml:2", "[calibration] seed must be at least 0, got -1"),
    ),
    Case("recipe-utf-16", recipe('[model]\nspec = "vitedge-cifar10"\n', "utf-16"), ("bad.toml", "not UTF-8 text")),
    # a byte-order mark (Windows editors write one) is dropped: the error is the typo on line 2
    Case("recipe-with-a-bom", recipe("\ufeff[run]\nbogus = 1\n"), ("bad.toml:2", "unknown key", "bogus")),
    Case(
        "recipe-a-folder",
        lambda tmp, a: ((tmp / "recipes").mkdir(), ["run", "recipes", "--out", "run-out"])[1],
        ("recipe recipes is a folder, not a TOML file",),
    ),
    Case("recipe-wrong-type", recipe('[data]\nsamples = "lots"\n'), ("bad.toml:2", "[data] samples")),
    # a relative path is read from the recipe's folder; one found there and in the working folder is a guess
    Case(
        "recipe-path-beside-it-and-here",
        lambda tmp, a: (
            [(tmp / p).mkdir(parents=True) for p in ("conf/imgs", "imgs")],
            (tmp / "conf" / "pi.toml").write_text('[data]\nsource = "imgs"\n'),
            ["run", "conf/pi.toml", "--out", "run-out"],
        )[-1],
        ("conf/pi.toml:2", "names both", "beside the recipe"),
    ),
    # artifacts
    Case("manifest-checksum-mismatch", flipped_byte, ("model.onnx", "sha256")),
    Case("truncated-onnx", truncated_onnx, ("model.onnx", "sha256")),
    Case("truncated-onnx-resigned-manifest", truncated_onnx_resigned, ("onnx runtime cannot load", "model.onnx")),
    Case("xml-without-bin", xml_without_bin, ("model.bin", "missing")),
    Case(
        "verify-recorded-source-another-file",
        verify_recorded_relative(other_file=True),
        ("m.safetensors here is not the file art1 was exported from",),
    ),
    Case(
        "verify-recorded-source-missing",
        verify_recorded_relative(other_file=False),
        ("art1's recorded source m.safetensors cannot be loaded here", "does not exist"),
    ),
    Case(
        "xml-without-bin-resigned-manifest",
        xml_without_bin_resigned,
        ("the model file model.bin is not among the checksummed files",),
    ),
    Case(
        "model-file-not-listed",
        model_file_not_listed,
        ("the model file other.onnx is not among the checksummed files",),
    ),
    Case(
        "manifest-path-outside",
        manifest_path_outside,
        ("names the file '../elsewhere.onnx', outside the artifact folder",),
    ),
    Case(
        "openvino-bin-cut-resigned",
        bin_cut_resigned,
        ("OpenVINO cannot load ov/model.xml", "Incorrect weights in bin file"),
    ),
    Case("manifest-not-json", manifest_not_json, ("manifest.json", "not valid json")),
    Case("record-not-json", record_edited("{broken"), ("metadata recorded in small.safetensors", "not valid JSON")),
    Case("record-a-list", record_edited("[1, 2]"), ("small.safetensors", "a JSON list, not an object")),
    Case(
        "record-steps-not-a-list",
        record_edited(lambda r: r.update(steps="prune-heads")),
        ("small.safetensors", "'steps' must be a list"),
    ),
    Case(
        "record-step-without-options",
        record_edited(lambda r: r["steps"].append({"name": "tokens"})),
        ("small.safetensors", "'steps' must be a list"),
    ),
    Case(
        "record-architecture-not-an-object",
        record_edited(lambda r: r["architecture"].update(kwargs="x")),
        ("small.safetensors", "'architecture' must be {name, kwargs}"),
    ),
    Case(
        "record-kept-head-past-the-width",
        record_edited(lambda r: _first_pruned_block(r).update(heads=[0, 1, 99])),
        ("small.safetensors", "cannot be rebuilt", "out of bounds"),
    ),
    Case(
        "manifest-std-zero",
        manifest_edited("bench", data_config={"std": [0, 1, 1]}),
        ("data_config recorded in art1/manifest.json is invalid", "std must be positive"),
    ),
    Case(
        "manifest-two-means",
        manifest_edited("bench", data_config={"mean": [0.5, 0.5]}),
        ("art1/manifest.json", "one finite number per RGB channel"),
    ),
    Case(
        "manifest-data-config-not-an-object",
        manifest_edited("bundle", data_config="imagenet"),
        ("art1/manifest.json", "a JSON str, not an object"),
    ),
    Case("manifest-labels-not-a-list", manifest_edited("bundle", labels=5), ("'labels' must be a list",)),
    Case("manifest-batch-not-a-number", manifest_edited("bench", batch="many"), ("'batch' must be", "'many'")),
    Case(
        "verify-against-a-model-name",
        verified_against_a_model_name,
        ("vit_tiny_patch16_224", "random weights"),
    ),
    Case(
        "verify-against-a-named-model",
        lambda tmp, a: ["verify", str(a.onnx), "--model", "vit_tiny_patch16_224", "--samples", "8"],
        ("vit_tiny_patch16_224", "random weights"),
    ),
    Case(
        "fixed-batch-onnx-fed-batch-8",
        fixed_batch_onnx_fed_batch_8,
        ("exported for batch 1 only and cannot be timed at batch 8",),
    ),
    Case(
        "bundle-not-an-artifact",
        lambda tmp, a: ((tmp / "plain").mkdir(), ["bundle", "plain", "--out", "b"])[1],
        ("not a vitedge artifact",),
    ),
    # boards over SSH (refused before any connection is attempted, or a dead port)
    Case(
        "ssh-target-injects-option",
        lambda tmp, a: ["bench", str(a.onnx), "--target", "ssh://-oProxyCommand=touch%20PWNED-by-ssh", "--data", ""],
        ("bad host name",),
    ),
    Case(
        "calib-on-an-fp32-export",
        lambda tmp, a: ["export", str(a.checkpoint), "--to", "onnx", "--calib", "cifar10:train", "--out", "art"],
        ("--calib is for a calibrated int8 export, not onnx fp32",),
    ),
    Case(
        "calib-options-on-int8-dynamic",
        lambda tmp, a: export_of(
            str(a.checkpoint), "--precision", "int8-dynamic", "--calib-samples", "8", "--calib-seed", "3"
        ),
        ("--calib-samples, --calib-seed are for a calibrated int8 export, not onnx int8-dynamic",),
    ),
    Case(
        "per-tensor-on-an-openvino-export",
        lambda tmp, a: ["export", str(a.checkpoint), "--to", "openvino", "--per-tensor", "--out", "art"],
        ("--per-tensor is for onnx int8, not openvino fp32",),
    ),
    Case(
        "smooth-quant-on-an-onnx-export",
        lambda tmp, a: export_of(str(a.checkpoint), "--precision", "int8-dynamic", "--no-smooth-quant"),
        ("--no-smooth-quant is for openvino int8, not onnx int8-dynamic",),
    ),
    Case(
        "calib-method-on-int8-dynamic",
        lambda tmp, a: export_of(str(a.checkpoint), "--precision", "int8-dynamic", "--calib-method", "entropy"),
        ("--calib-method is for onnx int8-static, not onnx int8-dynamic",),
    ),
    Case(
        "opset-on-an-openvino-export",
        lambda tmp, a: ["export", str(a.checkpoint), "--to", "openvino", "--opset", "18", "--out", "art"],
        ("--opset is for onnx, not openvino fp32",),
    ),
    Case(
        "calib-method-on-an-openvino-quantize",
        lambda tmp, a: ["quantize", str(a.checkpoint), "--to", "openvino", "--calib-method", "entropy", "--out", "q"],
        ("--calib-method is for onnx int8-static, not openvino",),
    ),
    Case(
        "calib-method-on-an-openvino-sensitivity",
        lambda tmp, a: ["sensitivity", str(a.checkpoint), "--to", "openvino", "--calib-method", "percentile"],
        ("--calib-method is for onnx int8-static, not openvino",),
    ),
    Case(
        "variants-on-an-onnx-sweep",
        lambda tmp, a: ["calibrate-sweep", str(a.checkpoint), "--to", "onnx", "--variants", "mixed"],
        ("--variants is for the openvino sweep, not --to onnx",),
    ),
    Case(
        "methods-on-an-openvino-sweep",
        lambda tmp, a: ["calibrate-sweep", str(a.checkpoint), "--to", "openvino", "--methods", "entropy"],
        ("--methods is for the onnx sweep, not --to openvino",),
    ),
    Case(
        "study-quick-and-a-recipe",
        lambda tmp, a: ((tmp / "mine.toml").write_text("[study]\n"), ["study", "--quick", "--recipe", "mine.toml"])[1],
        ("--quick and --recipe mine.toml name two recipes",),
    ),
    Case(
        "arch-for-the-embedded-model",
        lambda tmp, a: export_of("vitedge-cifar10", "--arch", "deit_tiny_patch16_224"),
        ("architecture 'deit_tiny_patch16_224' is given for vitedge-cifar10, which is vitedge's embedded model",),
    ),
    Case(
        "arch-for-a-timm-name",
        lambda tmp, a: export_of("vit_tiny_patch16_224", "--arch", "deit_tiny_patch16_224"),
        ("is given for vit_tiny_patch16_224, which is a name: only a checkpoint file takes one",),
    ),
    Case(
        "no-verify-with-an-accuracy-budget",
        lambda tmp, a: export_of(
            str(a.checkpoint), "--precision", "int8-static", "--calib", "cifar10:train", "--max-drop", "1"
        ),
        ("--no-verify is not for --max-drop/--min-cosine, whose budget is the parity check",),
    ),
    Case(
        "parity-options-with-no-verify",
        lambda tmp, a: export_of(str(a.checkpoint), "--no-verify", "--verify-samples", "8", "--threads", "1"),
        ("--verify-samples, --threads are for the parity check, which --no-verify skips",),
    ),
    Case(
        "ssh-option-on-a-local-bench",
        lambda tmp, a: ["bench", str(a.onnx), "--seconds", "5", "--data", ""],
        ("--seconds is for an ssh:// board, not --target cpu",),
    ),
    Case(
        "ssh-options-on-a-local-bench",
        lambda tmp, a: ["bench", str(a.onnx), "--python", "python3.11", "--accept-new-host-key", "--data", ""],
        ("--accept-new-host-key, --python are for an ssh:// board",),
    ),
    Case(
        "fresh-student-options-with-a-student",
        lambda tmp, a: distill_on_four_images(tmp, a, "--student", str(a.checkpoint), "--student-width", "0.25"),
        ("--student-width is for a fresh student, not --student",),
    ),
    Case(
        "temperature-with-hard-distillation",
        lambda tmp, a: distill_on_four_images(tmp, a, "--kind", "hard", "--temperature", "4"),
        ("--temperature is for --kind soft",),
    ),
    Case(
        "runs-on-a-board-bench",
        lambda tmp, a: ["bench", str(a.onnx), "--target", "ssh://root@127.0.0.1:9", "--runs", "50", "--data", ""],
        ("--runs is for a row timed here, not on an ssh:// board",),
    ),
    Case(
        "samples-without-data",
        lambda tmp, a: ["bench", str(a.onnx), "--data", "", "--samples", "all"],
        ("--samples is for accuracy, which --data '' skips",),
    ),
    Case(
        "board-timeout-not-positive",
        lambda tmp, a: [
            "bench",
            str(a.onnx),
            "--target",
            "ssh://root@127.0.0.1:9",
            "--board-timeout",
            "0",
            "--data",
            "",
        ],
        ("time limit must be > 0 s",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, assets: Assets, tmp_path: Path) -> None:
    args = case.setup(tmp_path, assets)
    before = listing(tmp_path)
    done = vitedge(args, cwd=tmp_path, env=cli_env(assets))
    assert_user_error(done, case.words)
    assert listing(tmp_path) == before, "the refused command left files behind"
    assert not leftovers(tmp_path)
    assert not (tmp_path / SENTINEL).exists(), "a pickled payload ran"
    assert not list(tmp_path.rglob("PWNED*")), "an injected command ran"


# --------------------------------------------------------------------------- outputs


def test_existing_output_is_refused_and_left_untouched(assets: Assets, tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "keep.txt").write_text("mine")
    before = listing(tmp_path)
    done = vitedge(export_of(str(assets.checkpoint)), cwd=tmp_path, env=cli_env(assets))
    assert_user_error(done, ("art", "already exists"))
    assert listing(tmp_path) == before and (tmp_path / "art" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["file", "folder-of-other-files", "empty-folder"])
def test_force_replaces_only_a_folder_vitedge_wrote(assets: Assets, tmp_path: Path, kind: str) -> None:
    """`--force` replaces an earlier output (its manifest.json inside) or an empty folder, never a
    file or a folder of the user's own (before: `--out mydocs --force` deleted mydocs/thesis.tex
    and wrote the artifact there; `--out notes.txt --force` ended in a NotADirectoryError
    traceback)."""
    if kind == "file":
        (tmp_path / "art").write_text("mine")
    else:
        (tmp_path / "art").mkdir()
    if kind == "folder-of-other-files":
        (tmp_path / "art" / "thesis.tex").write_text("mine")
    before = listing(tmp_path)
    done = vitedge([*export_of(str(assets.checkpoint)), "--force"], cwd=tmp_path, env=cli_env(assets))
    if kind == "empty-folder":
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "art" / MANIFEST).is_file()
        return
    assert_user_error(done, ("--out art", "is a file" if kind == "file" else "holds files vitedge did not write"))
    assert listing(tmp_path) == before and not leftovers(tmp_path)


class _UnwritableFile:
    """A file object on a full disk: opening worked, every write fails with ENOSPC."""

    def __init__(self, handle: io.IOBase) -> None:
        self._handle = handle

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _UnwritableFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)


def _fd_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None  # no /proc (macOS): then every file opened for writing counts


def inject_fs_error(monkeypatch, folder: Path, code: int) -> None:
    """Make the file system under `folder` behave as read-only (EROFS: creating a folder or a
    file fails) or full (ENOSPC: files can be created, every write fails), for this process,
    at the OS calls the product's writers go through (os.mkdir, os.open, os.fdopen). No root,
    no mount: the unprivileged twin of the tmpfs tests."""
    real_mkdir, real_open, real_fdopen = os.mkdir, os.open, os.fdopen
    root = folder.resolve()

    def under(path: object) -> bool:
        return path is not None and Path(os.path.abspath(path)).resolve().is_relative_to(root)

    def mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202 - os.mkdir's signature
        if code == errno.EROFS and under(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202 - os.open's signature
        if code == errno.EROFS and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and under(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fdopen(fd, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202 - os.fdopen's signature
        handle = real_fdopen(fd, mode, *args, **kwargs)
        path = _fd_path(fd)
        if code == errno.ENOSPC and any(c in mode for c in "wa+") and (path is None or under(path)):
            return _UnwritableFile(handle)
        return handle

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fdopen", fdopen)


def vitedge_in_process(args: list[str], capsys, monkeypatch) -> tuple[int, str]:  # noqa: ANN001
    """`vitedge ARGS` through the real entry point in this process (so injected OS errors
    reach it): exit code and stderr."""
    from vitedge.cli import run

    monkeypatch.setattr(sys, "argv", ["vitedge", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        run()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def command_writing_into(command: str, folder: Path, assets: Assets) -> list[str]:
    if command == "export":
        return ["export", str(assets.checkpoint), "--to", "onnx", "--out", str(folder / "art"), "--no-verify"]
    return ["compress", str(assets.checkpoint), "--step", "lowrank:rank=8", "--out", str(folder / "small.safetensors")]


@pytest.mark.parametrize("command", ["export", "compress"])
@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, ("disk full",)), (errno.EROFS, ("cannot write", "read-only file system"))],
    ids=["disk-full", "read-only"],
)
def test_write_errors_without_root(
    assets: Assets, tmp_path: Path, capsys, monkeypatch, command: str, code: int, words: tuple[str, ...]
) -> None:
    """A full or read-only output file system, injected at the OS calls (any user, any OS with
    /proc or not): one `error:` line naming it, exit 2, and nothing left in the folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "other.txt").write_text("already here\n")
    before = listing(folder)
    inject_fs_error(monkeypatch, folder, code)
    exit_code, stderr = vitedge_in_process(command_writing_into(command, folder, assets), capsys, monkeypatch)
    monkeypatch.undo()
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert exit_code == 2 and lines and lines[0].startswith("error: "), stderr
    assert all(word in lines[0].lower() for word in words), stderr
    assert listing(folder) == before, "a failed write left files behind"


def test_read_only_output_folder(assets: Assets, tmp_path: Path) -> None:
    """A read-only file system (root ignores permission bits, so a real `ro` tmpfs); as a
    normal user, a 0555 folder is the same test."""
    if os.geteuid() == 0:
        guard = tmpfs(tmp_path / "ro", "ro,size=1m")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        guard = contextlib.nullcontext(tmp_path / "ro")
    with guard as folder:
        done = vitedge(
            ["export", str(assets.checkpoint), "--to", "onnx", "--out", str(folder / "art"), "--no-verify"],
            cwd=tmp_path,
            env=cli_env(assets),
        )
        assert_user_error(done, ("cannot write", "ro"))
        assert listing(folder) == {}


def writing_into_a_full_disk(command: str, folder: Path, assets: Assets, tmp_path: Path) -> list[str]:
    """The commands whose writers are not Python's own file objects: OpenVINO's `save_model`
    (a bare "iostream error", its partial files deleted before it raises) and `vitedge run`'s
    `np.save` of the images ("N requested and M written", no errno)."""
    if command == "openvino":
        return ["export", str(assets.checkpoint), "--to", "openvino", "--out", str(folder / "art"), "--no-verify"]
    if command == "int8":  # written inside a temp folder's block, on a disk with room: --out is what is full
        return [*command_writing_into("export", folder, assets), "--precision", "int8-dynamic"]
    if command == "run":
        # 16 images: 196 KB as the float inputs `vitedge run` saves
        np.savez(tmp_path / "images.npz", x=np.zeros((16, 32, 32, 3), np.uint8), y=np.arange(16) % 10)
        recipe = tmp_path / "r.toml"
        recipe.write_text(
            f'[model]\nspec = "{assets.checkpoint}"\n[data]\nsource = "{tmp_path / "images.npz"}"\nsamples = 16\n'
            '[export]\nrows = ["torch:fp32"]\n[bench]\nbatches = [1]\nruns = 1\nthreads = 1\n'
        )
        return ["run", str(recipe), "--out", str(folder / "run")]
    return command_writing_into(command, folder, assets)


@pytest.mark.parametrize("command", ["export", "compress", "openvino", "run", "int8"])
def test_disk_full(assets: Assets, tmp_path: Path, command: str) -> None:
    """A real 64 KiB tmpfs (root only; test_write_errors_without_root is the unprivileged
    twin): the tiny ViT's model file (~0.4 MB), or `vitedge run`'s images, cannot fit, so the
    write fails part-way; the user must get "disk full" and no partial file or folder. OpenVINO
    deletes what it wrote before it raises, so its disk is left with more free than the 64 KiB
    under which a failed write counts as out of space: only its own check can tell."""
    with tmpfs(tmp_path / "full", "size=256k" if command == "openvino" else "size=64k") as folder:
        (folder / "other.txt").write_text("already here\n")
        before = listing(folder)
        args = writing_into_a_full_disk(command, folder, assets, tmp_path)
        done = vitedge(args, cwd=tmp_path, env=cli_env(assets))
        assert_user_error(done, (f"disk full while writing {folder}",))
        assert listing(folder) == before


@pytest.mark.parametrize("command", ["export", "bench"])
def test_a_full_temp_folder_is_named_as_the_temp_folder(assets: Assets, tmp_path: Path, command: str) -> None:
    """TMPDIR on a full disk (a real 64 KiB tmpfs): an int8 export writes its float model there
    first, and `vitedge bench` the images a row is timed on (numpy's short write: no errno).
    Before: "disk full while writing art" (--out, which had room) and a traceback. Now the
    place that is full is named, with TMPDIR as the fix, and nothing is left in either."""
    with tmpfs(tmp_path / "tmp", "size=64k") as scratch:
        if command == "export":
            args = ["export", str(assets.checkpoint), "--to", "onnx", "--precision", "int8-dynamic", "--out", "art"]
        else:
            np.savez(tmp_path / "images.npz", x=np.zeros((16, 32, 32, 3), np.uint8), y=np.arange(16) % 10)
            args = ["bench", str(assets.checkpoint), "--data", "images.npz", "--samples", "all", "--batch", "1"]
        done = vitedge(
            [*args, "--no-verify"] if command == "export" else args,
            cwd=tmp_path,
            env={**cli_env(assets), "TMPDIR": str(scratch)},
        )
        assert_user_error(done, (f"disk full in the temp folder {scratch}",))
        assert "TMPDIR" in done.stderr and listing(scratch) == {}
    assert not (tmp_path / "art").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["train", "compress"])
def test_a_model_file_on_a_read_only_disk_is_refused_before_any_work(
    assets: Assets, tmp_path: Path, command: str
) -> None:
    """`vitedge train --out ro/t.safetensors` trained a whole epoch before its first checkpoint
    write failed; the place is now checked first (`os.access` knows a read-only mount)."""
    with tmpfs(tmp_path / "ro", "ro,size=64k") as folder:
        out = str(folder / "m.safetensors")
        if command == "train":
            args = [*train_on_four_images(tmp_path)[:-2], "--out", out]
        else:
            args = ["compress", str(assets.checkpoint), "--step", "fp16", "--out", out]
        done = vitedge(args, cwd=tmp_path, env=cli_env(assets))
        assert_user_error(done, (f"cannot write --out {out}", "read-only file system"))
        assert "epoch" not in done.stdout + done.stderr


@pytest.mark.parametrize("place", ["read-only-disk", "a-file-in-the-way"])
def test_a_run_whose_default_folder_cannot_be_made_is_one_line(assets: Assets, tmp_path: Path, place: str) -> None:
    """`vitedge run` without --out makes `vitedge-out/run-<time>` where it starts: on a
    read-only disk, or with a file named vitedge-out there, one line before any work."""
    if place == "a-file-in-the-way":
        (tmp_path / "vitedge-out").write_text("mine")
        done = vitedge(["run"], cwd=tmp_path, env=cli_env(assets))
        assert_user_error(done, ("cannot write to vitedge-out", "vitedge-out is a file, not a folder"))
        assert listing(tmp_path) == {"vitedge-out": 4}
        return
    with tmpfs(tmp_path / "ro", "ro,size=64k") as folder:
        done = vitedge(["run"], cwd=folder, env=cli_env(assets))
        assert_user_error(done, ("cannot write to .", "read-only file system"))


def _default_sigint() -> None:
    """In the child before exec: SIGINT unblocked and at its default, so Python installs its
    KeyboardInterrupt handler whatever mask or disposition the test process carries."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_state() -> list[str]:
    """This process's blocked and ignored signal masks, for the failure message."""
    return [
        line.strip()
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("SigBlk", "SigIgn"))
    ]


def _interrupt_export(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run `args`, send SIGINT (what Ctrl-C sends) once its staging folder exists, and wait:
    the exit code and stderr."""
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # as a terminal's child: whatever this process did to SIGINT
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not list(cwd.glob(".art.*.partial")):
            assert process.poll() is None, f"export ended before it could be interrupted: {process.communicate()}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def test_ctrl_c_during_export_leaves_nothing_and_a_rerun_succeeds(assets: Assets, tmp_path: Path) -> None:
    """SIGINT while the staging folder exists, i.e. mid-export. On a loaded machine the poll
    can see the staging folder just before the rename, so the signal lands after the export
    finished: then the export must be whole (checked) and the interruption is tried again."""
    command = [
        "export",
        str(assets.checkpoint),
        "--to",
        "onnx",
        "--precision",
        "int8-dynamic",
        "--out",
        "art",
        "--no-verify",
    ]
    for _attempt in range(8):  # the window is short: a tiny model's files are written in milliseconds
        code, stderr = _interrupt_export([sys.executable, "-m", "vitedge", *command], tmp_path, cli_env(assets))
        if code != 0:
            break
        verify_checksums(tmp_path / "art", read_manifest(tmp_path / "art"))  # too late to interrupt: whole
        shutil.rmtree(tmp_path / "art")
    assert code == 130, (code, stderr, _signal_state())
    assert "Traceback" not in stderr and "aborted" in stderr, stderr
    assert listing(tmp_path) == {}, "Ctrl-C left a partial artifact"
    again = vitedge(command, cwd=tmp_path, env=cli_env(assets))
    assert again.returncode == 0, again.stderr
    verify_checksums(tmp_path / "art", read_manifest(tmp_path / "art"))
    assert not leftovers(tmp_path)


# --------------------------------------------------------------------------- boards over SSH


def _free_port() -> int:
    from tests.support.sshd import free_port

    return free_port()


def test_unreachable_board(assets: Assets, tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    done = vitedge(
        ["bench", str(assets.onnx), "--target", f"ssh://root@127.0.0.1:{port}", "--data", ""],
        cwd=tmp_path,
        env=cli_env(assets),
    )
    assert_user_error(done, (f"127.0.0.1:{port}", "connection refused"))
    assert listing(tmp_path) == {}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    from tests.support.sshd import running_sshd, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_changed_host_key_is_refused(assets: Assets, sshd, tmp_path: Path) -> None:
    """An impostor key recorded for the board: refused even with accept-new, known_hosts
    untouched, nothing run on the board (the CLI has no --known-hosts, so through the library)."""
    from tests.support.sshd import keygen, write_known_hosts
    from vitedge.core.errors import VitedgeError
    from vitedge.targets.remote import bench_remote

    impostor = keygen(tmp_path / "impostor", "impostor")
    known_hosts = write_known_hosts(tmp_path / "known_hosts", sshd.host, sshd.port, impostor)
    recorded = known_hosts.read_text()
    for accept_new in (False, True):
        with pytest.raises(VitedgeError) as error:
            bench_remote(
                assets.onnx,
                sshd.target,
                identity=sshd.identity,
                known_hosts=known_hosts,
                accept_new_host_key=accept_new,
                python=sys.executable,
                seconds=0.1,
            )
        assert "CHANGED" in error.value.message and "ssh-keygen -R" in error.value.hint
    assert known_hosts.read_text() == recorded


HOSTILE_NAMES = (
    "$(cd;touch {s}1).png",
    "`cd;touch {s}2`.png",
    "a;cd;touch {s}3;.png",
    "-rf .png",
    "--help.png",
    'it\'s "quoted".png',
    "new\nline.png",
    "ünï cødé.png",
)


def test_hostile_file_names_over_ssh_run_nothing(assets: Assets, sshd, tmp_path: Path, cifar_test) -> None:
    """An eval folder whose file names are shell code: scored like any other image on the
    board (the real sshd, the bundle with this Python), and no command in a name runs."""
    from vitedge.targets.remote import bench_remote

    sentinel = f"vitedge-pwned-{os.getpid()}-"
    data = tmp_path / "data"
    (data / "airplane").mkdir(parents=True)
    for index, name in enumerate(HOSTILE_NAMES):
        (data / "airplane" / name.format(s=sentinel)).write_bytes(png_bytes(cifar_test.get(index)))
    result = bench_remote(
        assets.onnx,
        sshd.target,
        identity=sshd.identity,
        known_hosts=sshd.known_hosts,
        python=sys.executable,
        seconds=0.2,
        data=data,
    )
    assert result["eval_count"] == len(HOSTILE_NAMES)
    planted = [p for folder in (Path.home(), tmp_path, Path.cwd()) for p in folder.glob(f"{sentinel}*")]
    for path in planted:
        path.unlink()
    assert not planted, f"a file name ran as a command: {planted}"


# --------------------------------------------------------------------------- odd but valid images


def odd_images() -> dict[str, bytes]:
    """Valid images in the modes users actually have: each must decode to the right RGB."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    files: dict[str, bytes] = {}

    def save(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    files["cmyk.jpg"] = save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    sixteen = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    files["gray16.png"] = save(Image.fromarray(sixteen), "PNG")  # uint16 → mode I;16
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    files["palette.png"] = save(palette, "PNG", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    # 4:4:4 (no chroma subsampling): Pillow's default 4:2:0 averages the colour of 2×2 blocks,
    # a mean error of ~48 on per-pixel noise that would hide whether the rotation is right.
    files["exif-rotated.jpg"] = save(Image.fromarray(rgb), "JPEG", quality=95, subsampling=0, exif=exif)
    files["gray-alpha.png"] = save(Image.fromarray(rgb).convert("LA"), "PNG")
    return files


def test_odd_but_valid_images_decode_to_the_right_rgb() -> None:
    decoded = {name: decode_image(data) for name, data in odd_images().items()}
    for name, pixels in decoded.items():
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, name
    assert decoded["exif-rotated.jpg"].shape == (40, 24, 3)  # displayed upright: portrait
    assert decoded["cmyk.jpg"].shape == decoded["palette.png"].shape == (24, 40, 3)
    rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    assert np.array_equal(decoded["gray16.png"][..., 0], rgb[..., 0])  # 16-bit scaled, not clipped
    assert np.abs(decoded["cmyk.jpg"].astype(int) - rgb).mean() < 12  # JPEG loss only
    assert np.abs(np.rot90(decoded["exif-rotated.jpg"], k=1).astype(int) - rgb).mean() < 12


@pytest.mark.parametrize("pixels", [10_000 * 10_000, 20_000 * 20_000], ids=["100M", "400M"])
def test_decompression_bomb_is_refused_before_decoding(pixels: int) -> None:
    side = int(pixels**0.5)
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(bomb_png(side, side))


def test_odd_images_through_eval(assets: Assets, tmp_path: Path) -> None:
    """The same odd images as a labelled folder: `vitedge eval` scores every one of them."""
    for index, (name, data) in enumerate(odd_images().items()):
        folder = tmp_path / "odd" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    done = vitedge(["eval", str(assets.checkpoint), "--data", "odd"], cwd=tmp_path, env=cli_env(assets))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"({len(odd_images())} images)" in done.stdout


# --------------------------------------------------------------------------- safe loading and NaN


def test_the_pickle_payload_is_real(tmp_path: Path) -> None:
    """Control for the pickled-code case: a plain unpickler does run the payload, so the
    refusal above proves something."""
    import zipfile

    torch.save({"head.weight": _Payload(f"touch {tmp_path / SENTINEL}")}, tmp_path / "evil.pth")
    with zipfile.ZipFile(tmp_path / "evil.pth") as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    pickle.loads(pickled)  # noqa: S301 - deliberately unsafe: this is the attack being refused
    assert (tmp_path / SENTINEL).exists()


def test_nan_weights_are_refused_before_export(assets: Assets, tmp_path: Path) -> None:
    """A diverged training run saves NaN weights; exporting one with --no-verify must not
    hand the user an artifact that outputs NaN."""
    model = make_tiny_vit()
    with torch.no_grad():
        model.module.head.weight[0, 0] = float("nan")
    save_checkpoint(model, tmp_path / "nan.safetensors")
    before = listing(tmp_path)
    done = vitedge(export_of("nan.safetensors"), cwd=tmp_path, env=cli_env(assets))
    assert_user_error(done, ("nan.safetensors", "nan"))
    assert listing(tmp_path) == before


@pytest.mark.parametrize("problem", ["not-a-folder", "cut-arrays", "no-labels"])
def test_a_vitedge_data_the_product_cannot_use_is_named(assets: Assets, tmp_path: Path, problem: str) -> None:
    """VITEDGE_DATA is the user's own setting: a wrong one is named, not downloaded around
    (before: "the download failed") nor a numpy traceback."""
    data = tmp_path / "data"
    if problem != "not-a-folder":
        (data / "cifar10").mkdir(parents=True)
        buffer = io.BytesIO()
        arrays = {"x": np.zeros((4, 32, 32, 3), np.uint8)} | ({"y": np.arange(4)} if problem == "cut-arrays" else {})
        np.savez(buffer, **arrays)
        whole = buffer.getvalue()
        (data / "cifar10" / "cifar10_test.npz").write_bytes(
            whole[: len(whole) // 2] if problem == "cut-arrays" else whole
        )
    env = cli_env(assets) | {"VITEDGE_DATA": str(data)}
    before = listing(tmp_path)
    done = vitedge(["eval", str(assets.checkpoint), "--samples", "2"], cwd=tmp_path, env=env)
    words = {
        "not-a-folder": (f"VITEDGE_DATA={data}", "not a folder"),
        "cut-arrays": ("cannot read", "cifar10_test.npz"),
        "no-labels": ("cifar10_test.npz", "no labels"),
    }[problem]
    assert_user_error(done, words)
    assert listing(tmp_path) == before


def test_a_cut_calibration_cache_entry_is_rebuilt(tmp_path: Path, monkeypatch, cifar_test) -> None:
    """A cache file cut short (a full disk, a copied cache) is rebuilt, not a zipfile traceback."""
    from vitedge.calibration.calibset import build_calibration_set

    monkeypatch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))
    config = make_tiny_vit().data_config
    first = build_calibration_set(cifar_test, config, 4, seed=0)
    [entry] = list((tmp_path / "cache" / "calibration").glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    again = build_calibration_set(cifar_test, config, 4, seed=0)
    assert np.array_equal(again.inputs, first.inputs)
    with np.load(entry, allow_pickle=False) as data:  # and the entry is whole again
        assert np.array_equal(data["inputs"], first.inputs)


def test_damaged_calibration_cache_with_nan_is_rebuilt(tmp_path: Path, monkeypatch, cifar_test) -> None:
    """Images cannot carry NaN (sources give uint8), but the calibration cache is float32 on
    disk: a damaged entry with NaN must be rebuilt, not fed to the int8 calibrator."""
    import dataclasses

    from vitedge.calibration.calibset import build_calibration_set

    monkeypatch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))
    config = make_tiny_vit().data_config
    first = build_calibration_set(cifar_test, config, 4, seed=0)
    [entry] = list((tmp_path / "cache" / "calibration").glob("*.npz"))
    decoded: list[int] = []
    counted = dataclasses.replace(cifar_test, get=lambda i: (decoded.append(i), cifar_test.get(i))[1])

    def rewrite(value: float) -> None:
        with np.load(entry, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        arrays["inputs"][0, 0, 0, 0] = value
        np.savez(entry, **arrays)

    rewrite(7.0)  # the control: a finite edit is served from the cache (it is read at all)
    assert build_calibration_set(counted, config, 4, seed=0).inputs[0, 0, 0, 0] == 7.0 and decoded == []
    rewrite(np.nan)
    again = build_calibration_set(counted, config, 4, seed=0)
    assert np.isfinite(again.inputs).all() and np.array_equal(again.inputs, first.inputs)
    assert len(decoded) == 4  # the NaN was detected and the set rebuilt from the images


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_load_checkpoint_refuses_non_finite_weights_naming_the_tensor(tmp_path: Path, bad: float) -> None:
    """Refused at load (eval, bench and compress too, not only export), naming the tensor."""
    from vitedge.core.errors import VitedgeError
    from vitedge.models import load_checkpoint

    model = make_tiny_vit()
    with torch.no_grad():
        model.module.blocks[1].mlp.fc1.bias[3] = bad
    path = save_checkpoint(model, tmp_path / "diverged.safetensors")
    with pytest.raises(VitedgeError) as error:
        load_checkpoint(path)
    assert "blocks.1.mlp.fc1.bias" in error.value.message and "NaN or inf" in error.value.message
    assert "\n" not in error.value.message and error.value.hint


def test_data_config_refuses_a_zero_std(tmp_path: Path) -> None:
    """normalize divides by std: 0 would turn a whole channel into inf/NaN."""
    from vitedge.calibration.preprocess import DataConfig
    from vitedge.core.errors import VitedgeError
    from vitedge.models import load_checkpoint

    with pytest.raises(ValueError, match="std"):
        DataConfig(std=(0.229, 0.0, 0.225))
    torch.save(make_tiny_vit().module.state_dict(), tmp_path / "weights.pth")
    metadata = {
        "architecture": make_tiny_vit().architecture.to_dict(),
        "data_config": {**make_tiny_vit().data_config.to_dict(), "std": [0.2, 0.0, 0.2]},
    }
    (tmp_path / "weights.json").write_text(json.dumps(metadata))
    with pytest.raises(VitedgeError, match="std") as error:
        load_checkpoint(tmp_path / "weights.pth")
    assert "weights.pth" in error.value.message


def test_unknown_model_name_suggests_the_closest_timm_name() -> None:
    from vitedge.compress.registry import load_model
    from vitedge.core.errors import VitedgeError

    with pytest.raises(VitedgeError, match="unknown model 'vit_bsae_patch16_224'") as error:
        load_model("vit_bsae_patch16_224")
    assert error.value.hint.startswith("did you mean vit_base_patch16_224?"), error.value.hint


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["export", "vitedge-cifar10", "--to", "onnx", "--out", "x", "--threads", "-1"], "--threads"),
        (["export", "vitedge-cifar10", "--to", "onnx", "--out", "x", "--verify-samples", "0"], "--verify-samples"),
        (
            ["export", "vitedge-cifar10", "--to", "onnx", "--precision", "int8-static", "--calib", "cifar10:train"]
            + ["--calib-samples", "0", "--out", "x"],
            "--calib-samples",
        ),
        (["bench", "vitedge-cifar10", "--runs", "0", "--samples", "8"], "--runs"),
        (["bench", "vitedge-cifar10", "--threads", "0", "--samples", "8"], "--threads"),
        (["verify", "x", "--min-top1", "5"], "--min-top1"),
        (["verify", "x", "--max-abs", "-1"], "--max-abs"),
        (["compress", "vitedge-cifar10", "--step", "fp16", "--data-count", "-1", "--out", "x"], "--data-count"),
        (
            ["export", "vitedge-cifar10", "--to", "onnx", "--precision", "int8-static", "--calib", "cifar10:train"]
            + ["--calib-seed", "-1", "--out", "x"],
            "--calib-seed",
        ),
        (["quantize", "vitedge-cifar10", "--to", "onnx", "--calib-seed", "-1", "--out", "x"], "--calib-seed"),
        (["train", "--seed", "-1", "--out", "t.safetensors"], "--seed"),
    ],
    ids=[
        "export-threads",
        "export-verify-samples",
        "calib-samples",
        "bench-runs",
        "bench-threads",
        "min-top1",
        "max-abs",
        "data-count",
        "export-calib-seed",
        "quantize-calib-seed",
        "train-seed",
    ],
)
def test_a_number_out_of_its_range_is_refused_before_any_work(
    args: list[str], option: str, capsys, monkeypatch, tmp_path: Path
) -> None:
    """Before these had bounds, `--threads -1` ended in torch's traceback after the export was
    written, `--verify-samples 0` was refused only after it, `--min-top1 5` made every artifact
    fail its check, and `--runs 0` or `--data-count -1` ran as something else."""
    from tests.support.cli import cli

    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 2 and f"Invalid value for '{option}'" in stderr, stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args", [["export", "vitedge-cifar10", "--to", "onnx", "--out", "x", "--samples", "9"], ["verify"]]
)
def test_usage_errors_are_one_message_not_a_traceback(args: list[str], capsys, monkeypatch, tmp_path: Path) -> None:
    """An unknown option or a missing argument: Click's usage message, exit 2, no traceback."""
    from tests.support.cli import cli

    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert "No such option: --samples" in stderr or "Missing argument" in stderr, stderr
    assert not list(tmp_path.iterdir())


def test_resume_without_a_checkpoint_starts_at_epoch_one_and_says_so(assets: Assets, tmp_path: Path) -> None:
    """A job that always passes --resume (a preemptible queue) starts and restarts alike."""
    done = vitedge(train_on_four_images(tmp_path, "--batch-size", "4", "--resume"), cwd=tmp_path, env=cli_env(assets))
    assert done.returncode == 0, done.stderr
    assert "no checkpoint at t.ckpt to resume from: training starts at epoch 1" in done.stdout + done.stderr
    assert (tmp_path / "t.safetensors").is_file() and (tmp_path / "t.ckpt").is_file()


@pytest.mark.parametrize("command", ["compress", "train", "distill"])
@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_a_model_file_written_meanwhile_is_replaced_only_with_force(
    assets: Assets, tmp_path: Path, monkeypatch, command: str, force: bool
) -> None:
    """Two `vitedge compress … --out small.safetensors` (or train, distill) at once: the second
    to finish replaced the first's file without --force, both exiting 0. Here the other
    command's file appears just after this one checked --out, as it does when both start
    together; without --force it is kept and this one's goes beside it."""
    import importlib

    from typer.testing import CliRunner

    from vitedge.cli import app
    from vitedge.compress.registry import load_model

    module = importlib.import_module(f"vitedge.commands.{'train' if command == 'train' else 'compress'}")
    checked = module.check_output_file

    def check_then_the_other_finishes(path: Path, **options) -> None:
        checked(path, **options)
        path.write_bytes(b"theirs")

    monkeypatch.setattr(module, "check_output_file", check_then_the_other_finishes)
    monkeypatch.chdir(tmp_path)
    args = {
        "compress": ["compress", str(assets.checkpoint), "--step", "prune-heads:ratio=0.5", "--out", "m.safetensors"],
        "train": [*train_on_four_images(tmp_path)[:-2], "--batch-size", "4", "--out", "m.safetensors"],
        "distill": [*distill_on_four_images(tmp_path, assets)[:-2], "--out", "m.safetensors"],
    }[command]
    done = CliRunner().invoke(app, [*args, *(["--force"] if force else [])])
    mine = tmp_path / ("m.safetensors" if force else "m-2.safetensors")
    assert load_model(str(mine)).module is not None, done.output  # whole, and replays its steps
    if force:
        assert done.exit_code == 0, done.output
    else:  # the CLI's entry point turns this VitedgeError into its one line and exit 2
        assert isinstance(done.exception, VitedgeError), done.output
        assert "m.safetensors was written by another command while this one ran" in done.exception.message
        assert "m-2.safetensors" in done.exception.message
        assert (tmp_path / "m.safetensors").read_bytes() == b"theirs"
