"""An artifact folder is self-contained and checked: every file a runtime loads is listed with
its sha256, and whatever a manifest says, vitedge (and the bundle on a board) reads only inside
the artifact folder and writes only inside the output folder it was told."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import make_tiny_vit
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import (
    MANIFEST,
    read_manifest,
    verify_checksums,
    write_manifest,
)
from vitedge.exporter.export import export_artifact
from vitedge.targets.bundle_build import build_bundle
from vitedge.targets.runners import open_artifact


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("manifest")
    model = make_tiny_vit()
    return {fmt: export_artifact(model, to=fmt, precision="fp32", out=root / fmt) for fmt in ("onnx", "openvino")}


def copy_of(exported: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    folder = tmp_path / f"art-{fmt}"
    shutil.copytree(exported[fmt], folder)
    return folder


def edit_manifest(folder: Path, **changes: object) -> dict:
    """Rewrite manifest.json by hand (as an attacker or a careless script would): no re-signing."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_a_flipped_byte_is_refused_before_loading(exported, tmp_path) -> None:
    folder = copy_of(exported, "onnx", tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: the file still parses, the weights differ
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(VitedgeError, match=r"model\.onnx does not match the sha256 in its manifest"):
        verify_checksums(folder, read_manifest(folder))
    with pytest.raises(VitedgeError, match="does not match the sha256"):
        open_artifact(folder, threads=1)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_model_file_missing_from_files_is_refused(exported, tmp_path, fmt: str) -> None:
    """The manifest names a model that no checksum covers (a second model dropped beside the
    real one): loading it would run unverified weights, so it is refused."""
    folder = copy_of(exported, fmt, tmp_path)
    manifest = read_manifest(folder)
    suffixes = (".xml", ".bin") if fmt == "openvino" else (".onnx",)
    for suffix in suffixes:
        shutil.copyfile(folder / f"model{suffix}", folder / f"other{suffix}")
    edit_manifest(folder, model_file=f"other{suffixes[0]}")
    with pytest.raises(
        VitedgeError, match=f"the model file other{suffixes[0]} is not among the checksummed files"
    ) as error:
        open_artifact(folder, threads=1)
    assert error.value.hint and "\n" not in error.value.message
    if fmt == "openvino":  # the .xml listed but not the .bin that OpenVINO opens beside it
        files = [e for e in manifest["files"] if e["path"] != "model.bin"]
        edit_manifest(folder, model_file="model.xml", files=files)
        with pytest.raises(VitedgeError, match=r"the model file model\.bin is not among the checksummed files"):
            verify_checksums(folder, read_manifest(folder))


@pytest.mark.parametrize("name", ["../outside.onnx", "/tmp/outside.onnx", "sub/../../outside.onnx", "..\\outside.onnx"])
def test_paths_outside_the_artifact_are_refused(exported, tmp_path, name: str) -> None:
    folder = copy_of(exported, "onnx", tmp_path)
    shutil.copyfile(folder / "model.onnx", tmp_path / "outside.onnx")
    files = read_manifest(folder)["files"]
    edit_manifest(folder, model_file=name)
    with pytest.raises(VitedgeError, match="outside the artifact folder|not a relative path inside the artifact"):
        open_artifact(folder, threads=1)
    edit_manifest(folder, model_file="model.onnx", files=[*files, {"path": name, "sha256": "0" * 64, "bytes": 1}])
    with pytest.raises(VitedgeError, match="outside the artifact folder|not a relative path inside the artifact"):
        read_manifest(folder)


def test_a_symlink_out_of_the_artifact_is_refused(exported, tmp_path) -> None:
    """Listed, checksummed and re-signed, but a link to a file elsewhere: still outside."""
    folder = copy_of(exported, "onnx", tmp_path)
    shutil.move(folder / "model.onnx", tmp_path / "elsewhere.onnx")
    (folder / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    manifest = read_manifest(folder)
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "created")})
    with pytest.raises(VitedgeError, match="leads outside the artifact folder"):
        open_artifact(folder, threads=1)
    with pytest.raises(VitedgeError, match="leads outside the artifact folder"):
        build_bundle(folder, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_bundle_never_writes_outside_its_output(exported, tmp_path) -> None:
    """A manifest entry `../../planted.txt` (its checksum even right): copying it into the
    bundle would write beside the output folder. Refused, and nothing is written anywhere."""
    folder = copy_of(exported, "onnx", tmp_path)
    planted = tmp_path / "planted.txt"
    planted.write_text("x")
    manifest = read_manifest(folder)
    entry = {"path": "../planted.txt", "sha256": hashlib.sha256(b"x").hexdigest(), "bytes": 1}
    edit_manifest(folder, files=[*manifest["files"], entry])
    out = tmp_path / "out" / "bundle"
    with pytest.raises(VitedgeError, match=r"names the file '\.\./planted\.txt', outside the artifact folder"):
        build_bundle(folder, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art-onnx", "planted.txt"]  # no out/, no out/planted.txt


def test_a_good_artifact_still_opens(exported, tmp_path) -> None:
    """The control for the refusals above: the untouched copy loads and computes."""
    for fmt in ("onnx", "openvino"):
        folder = copy_of(exported, fmt, tmp_path)
        verify_checksums(folder, read_manifest(folder))
        logits = open_artifact(folder, threads=1)(np.zeros((2, 3, 32, 32), np.float32))
        assert logits.shape == (2, 10)


def run_bundle_here(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The bundle's own runner with this interpreter (it has onnxruntime, numpy, Pillow)."""
    return subprocess.run(
        [sys.executable, str(bundle / "run_bundle.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=bundle.parent,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_file": "../model.onnx"}, "names the file '../model.onnx', outside the bundle folder"),
        ({"model_file": "copy.onnx"}, "the model file copy.onnx is not among the checksummed files"),
    ],
    ids=["model-outside", "model-unlisted"],
)
def test_the_bundle_on_the_board_refuses_the_same(exported, tmp_path, change: dict, message: str) -> None:
    """run_bundle.py has no vitedge to lean on: it makes the same checks itself, one line, exit 2."""
    bundle = build_bundle(exported["onnx"], tmp_path / "bundle")
    shutil.copyfile(bundle / "model.onnx", tmp_path / "model.onnx")
    shutil.copyfile(bundle / "model.onnx", bundle / "copy.onnx")
    assert run_bundle_here(bundle, "info", "--json").returncode == 0  # the control: untouched, it runs
    edit_manifest(bundle, **change)
    done = run_bundle_here(bundle, "info", "--json")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and "rebuild the bundle" in line
