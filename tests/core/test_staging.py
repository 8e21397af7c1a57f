"""The atomic folder writer cleans up after killed runs and writes what a user's umask allows:
a staging folder whose owner process is gone is removed by the next write of the same output,
one whose owner is alive is left alone, and the finished folder (and its files) get the mode
the umask gives, not the 0700/0600 of a temporary folder."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vitedge.core.errors import VitedgeError
from vitedge.core.io import _owner_tag, _temp_stem, atomic_folder, claimed_folder, write_bytes_atomic
from vitedge.core.manifest import MANIFEST


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging(parent: Path, name: str, owner: str) -> Path:
    folder = parent / f".{name}.{owner}.abcd_123.partial"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x" * 1000)
    return folder


@pytest.fixture()
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


def test_stale_staging_of_a_dead_run_is_removed_and_a_live_one_kept(tmp_path, sleeper):
    host = _owner_tag().split("@")[1]
    dead = _staging(tmp_path, "art", f"{_dead_pid()}@{host}")
    live = _staging(tmp_path, "art", f"{sleeper.pid}@{host}")
    other_output = _staging(tmp_path, "art2", f"{_dead_pid()}@{host}")
    with pytest.warns(UserWarning, match=r"removed 1 staging folder\(s\) of .*art left by killed runs"):
        with atomic_folder(tmp_path / "art", marker=MANIFEST) as staging:
            assert staging.name.startswith(f".art.{os.getpid()}@{host}.")
            (staging / "model.onnx").write_bytes(b"new")
    assert not dead.exists()
    assert live.is_dir() and (live / "model.onnx").read_bytes() == b"x" * 1000
    assert other_output.is_dir()
    assert (tmp_path / "art" / "model.onnx").read_bytes() == b"new"


def test_staging_of_another_host_is_never_judged_by_a_local_pid(tmp_path):
    elsewhere = _staging(tmp_path, "art", f"{_dead_pid()}@00000000")
    with atomic_folder(tmp_path / "art", marker=MANIFEST) as staging:
        (staging / "f").write_text("ok")
    assert elsewhere.is_dir()


def test_final_folder_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "art", marker=MANIFEST) as staging:
            assert stat.S_IMODE(staging.stat().st_mode) == 0o700  # private while it is written
            write_bytes_atomic(staging / "manifest.json", b"{}")
            (staging / "sub").mkdir()
            (staging / "sub" / "weights.bin").write_bytes(b"w")
        folder = tmp_path / "art"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o644
        assert stat.S_IMODE((folder / "sub").stat().st_mode) == 0o755
        assert stat.S_IMODE((folder / "sub" / "weights.bin").stat().st_mode) == 0o644
        os.umask(0o077)
        write_bytes_atomic(tmp_path / "report.json", b"{}")
        assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def _artifact(folder: Path, content: bytes) -> Path:
    folder.mkdir()
    (folder / MANIFEST).write_text("{}")
    (folder / "model.onnx").write_bytes(content)
    return folder


@pytest.mark.parametrize("out", [".", "", ".."])
def test_the_working_folder_is_never_replaced(tmp_path, monkeypatch, out):
    """`--out . --force` inside an old artifact folder deleted it, then failed to move the new
    one into place (a traceback, both lost); the working folder or one above it is refused."""
    from vitedge.core.errors import VitedgeError

    inner = _artifact(_artifact(tmp_path / "old", b"outer") / "inner", b"inner")
    monkeypatch.chdir(inner)
    with pytest.raises(VitedgeError, match="is the folder this command runs in"):
        with atomic_folder(Path(out), marker=MANIFEST, force=True) as staging:
            (staging / "model.onnx").write_bytes(b"new")
    assert (inner / "model.onnx").read_bytes() == b"inner"
    assert (tmp_path / "old" / "model.onnx").read_bytes() == b"outer"
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == sorted([MANIFEST, "inner", "model.onnx"])


def test_a_replacement_that_cannot_be_moved_into_place_keeps_the_old_folder(tmp_path, monkeypatch):
    import vitedge.core.io as io

    old = _artifact(tmp_path / "art", b"old")
    moves: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(source, target):  # noqa: ANN001 - os.replace's
        moves.append((Path(source).name, Path(target).name))
        if Path(source).name.endswith(".partial") and Path(target) == old and "-replaced" not in str(source):
            raise OSError(5, "Input/output error")  # the new folder's move fails
        real_replace(source, target)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        with atomic_folder(old, marker=MANIFEST, force=True) as staging:
            (staging / "model.onnx").write_bytes(b"new")
    assert (old / "model.onnx").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # nothing aside, no staging left
    assert len(moves) == 3  # aside, the failed move, back
    monkeypatch.setattr(io.os, "replace", real_replace)
    with atomic_folder(old, marker=MANIFEST, force=True) as staging:
        (staging / "model.onnx").write_bytes(b"new")
    assert (old / "model.onnx").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_write_that_fails_inside_the_output_is_one_line_and_other_errors_pass(tmp_path):
    """A writer's OSError about a file in the staging folder (OpenVINO's failed stream, say)
    is this output's write failing: one line naming the output, the staging folder gone. An
    OSError about any other file (an input that could not be read) is not called a write
    failure: it passes as it was."""
    import errno

    from vitedge.core.errors import VitedgeError

    with pytest.raises(VitedgeError, match=r"cannot write .*art: the stream failed"):
        with atomic_folder(tmp_path / "art", marker=MANIFEST) as staging:
            raise OSError(errno.EIO, "the stream failed", str(staging / "model.xml"))
    elsewhere = tmp_path / "input.bin"
    with pytest.raises(OSError, match="unreadable") as raised:
        with atomic_folder(tmp_path / "art", marker=MANIFEST):
            raise OSError(errno.EIO, "unreadable", str(elsewhere))
    assert not isinstance(raised.value, VitedgeError)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- two commands, one output


def test_an_output_written_meanwhile_is_kept_and_this_one_goes_beside_it(tmp_path):
    """Two `vitedge export … --out art` started together (a script's loop, two terminals): the
    second to finish replaced the first's artifact without --force and both exited 0."""
    target = tmp_path / "art"
    with pytest.raises(VitedgeError) as info:
        with atomic_folder(target, marker=MANIFEST) as staging:
            (staging / MANIFEST).write_text("mine")
            target.mkdir()  # the other command finishes first
            (target / MANIFEST).write_text("theirs")
    assert f"{target} was written by another command" in info.value.message
    assert f"output is in {tmp_path / 'art-2'}" in info.value.message
    assert (target / MANIFEST).read_text() == "theirs"
    assert (tmp_path / "art-2" / MANIFEST).read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "art-2"]  # no staging left
    with atomic_folder(target, marker=MANIFEST, force=True) as staging:  # asked to replace: replaced
        (staging / MANIFEST).write_text("forced")
    assert (target / MANIFEST).read_text() == "forced"


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_a_file_written_meanwhile_is_kept_and_this_one_goes_beside_it(tmp_path, monkeypatch, links):
    """The same for `vitedge compress/train/distill --out small.safetensors`; on a file system
    without hard links (FAT on a memory card) the same outcome by a check then a rename."""
    if links == "no hard links":

        def no_link(*args, **kwargs):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "small.safetensors"
    write_bytes_atomic(path, b"first", replace=False)
    with pytest.raises(VitedgeError) as info:
        write_bytes_atomic(path, b"second", replace=False)
    assert f"output is in {tmp_path / 'small-2.safetensors'}" in info.value.message
    assert path.read_bytes() == b"first" and (tmp_path / "small-2.safetensors").read_bytes() == b"second"
    write_bytes_atomic(path, b"third")  # --force
    assert path.read_bytes() == b"third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-2.safetensors", "small.safetensors"]


def test_a_default_output_name_is_never_shared_and_a_refused_run_leaves_no_folder(tmp_path):
    """`vitedge run` with no --out names its folder by the second: two runs started in the same
    second shared it, the second to finish replacing the first's results."""
    base = tmp_path / "vitedge-out" / "run-20261207-081500"
    with claimed_folder(base) as first, claimed_folder(base) as second:
        assert (first, second) == (base, tmp_path / "vitedge-out" / "run-20261207-081500-2")
        assert first.is_dir() and second.is_dir()
    with pytest.raises(VitedgeError), claimed_folder(tmp_path / "new" / "run-1"):
        raise VitedgeError("refused", "")
    assert not (tmp_path / "new").exists()


def test_a_long_output_name_is_written_and_its_dead_staging_removed(tmp_path):
    """`--out` of 230 bytes is a legal name, but the temp name beside it (name, owner, random
    part, suffix) passed 255 bytes: `cannot write to .: File name too long`."""
    name = "a" * 230
    host = _owner_tag().split("@")[1]
    dead = _staging(tmp_path, _temp_stem(name), f"{_dead_pid()}@{host}")
    other = _staging(tmp_path, _temp_stem("a" * 229 + "b"), f"{_dead_pid()}@{host}")  # another long name's
    with pytest.warns(UserWarning, match=r"removed 1 staging folder"):
        with atomic_folder(tmp_path / name, marker=MANIFEST) as staging:
            (staging / MANIFEST).write_text("x")
    assert (tmp_path / name / MANIFEST).read_text() == "x" and not dead.exists() and other.is_dir()
    write_bytes_atomic(tmp_path / f"{name}.onnx", b"x", replace=False)
    assert (tmp_path / f"{name}.onnx").read_bytes() == b"x"
