"""Every file vitedge writes appears whole or not at all: text, JSON and figures go to a temp
file beside the target and are renamed into place; folders (artifacts, run outputs, bundles)
are staged in a hidden temp folder beside the target and renamed at the end.

Temp files and folders are created private (mode 0600/0700); what is renamed into place gets
the mode the user's umask gives any new file, so a colleague or a web server can read an
artifact wherever they could read the user's other files. A staging folder's name carries its
owner (pid and host), so one left by a killed run is recognised and removed by the next.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import VitedgeError

STAGING_SUFFIX = ".partial"
TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)  # what a rename onto an existing output raises
LEGACY_STALE_S = 24 * 3600  # a staging folder without an owner in its name, untouched this long, is a dead run's


def current_umask() -> int:
    """The process umask, read from /proc where it can be (setting it to read it is racy with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask_mode(path: Path, umask: int | None = None) -> None:
    """Give `path` (and, for a folder, everything in it) the mode a plain create would have had:
    0666 (0777 for folders and executables) less the umask. Temp files and folders are 0600/0700."""
    mask = current_umask() if umask is None else umask
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        info = item.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        executable = stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR
        os.chmod(item, (0o777 if executable else 0o666) & ~mask)


FULL_BELOW_BYTES = 64 << 10  # a write that failed with less than this left on its file system ran out of space


def ran_out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space. Python's own writers say so (ENOSPC, EDQUOT);
    others do not: numpy's `np.save` raises "N requested and M written" with no errno, and
    OpenVINO's `save_model` "basic_ios::clear: iostream error". So where the error does not
    say, the file system `folder` is on is asked: a partial write fills it to the last block.
    Checked before the partial files are removed, which would free the space again."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return _nearly_full(folder)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A temp folder for a command's intermediate files (a float model to quantize, the images
    a row is timed on), removed after. It lies in the temp folder (TMPDIR), not in --out, so a
    write that runs out of space in it says so in one line naming that place, whatever wrote.
    ENOSPC alone does not say which disk is full (an --out written inside this block raises it
    too): only a failure while this folder's own file system is full is called its."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            yield Path(tmp)
        except (VitedgeError, KeyboardInterrupt):
            raise
        except Exception as exc:
            named = getattr(exc, "filename", None)
            elsewhere = bool(named) and not Path(named).resolve().is_relative_to(Path(tmp).resolve())
            if not elsewhere and _nearly_full(Path(tmp)):
                raise VitedgeError(
                    f"disk full in the temp folder {tempfile.gettempdir()}",
                    "free some space there, or point TMPDIR at a folder with room",
                ) from None
            raise


def write_bytes_atomic(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write `data` to a temp file beside `path` and rename it into place: a reader never sees
    half a file, a full disk or an unwritable folder becomes one line, and no partial file is
    left either way. Without `replace` (an output the user did not ask to --force), a file
    another command wrote at `path` meanwhile is kept: this one goes to the first free
    `NAME-N.SUFFIX` and the command ends in one line naming both."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_temp_stem(path.name)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        apply_umask_mode(Path(tmp))
        if replace:
            os.replace(tmp, path)
        else:
            _link_without_replacing(Path(tmp), path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise VitedgeError(f"disk full while writing {path}", "free some space or choose another --out") from None
        raise VitedgeError(f"cannot write {path}: {_why_not(path, exc)}", "choose a writable --out folder") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _link_without_replacing(tmp: Path, path: Path) -> None:
    """A hard link fails where a file is (atomically, unlike a check then a rename); where
    the file system has no hard links (FAT on a memory card), the check then the rename."""

    def link(candidate: Path) -> None:
        try:
            os.link(tmp, candidate)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if candidate.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(candidate)) from None
            os.replace(tmp, candidate)

    kept = _first_free(itertools.chain((path,), _numbered(path, keep_suffix=True)), link)
    if kept != path:
        raise _written_meanwhile(path, kept)


def _written_meanwhile(target: Path, kept: Path) -> VitedgeError:
    return VitedgeError(
        f"{target} was written by another command while this one ran; this one's output is in {kept}",
        "compare the two and keep one, or give each command its own --out",
    )


def _why_not(path: Path, exc: OSError) -> str:
    """Why `path` could not be written: a file where a folder of its path should be is named
    ("File exists" said nothing of which), else the OS's reason."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and not (found := _nearest_existing(Path(path))).is_dir():
        return f"{found} is a file, not a folder"
    return str(exc.strerror or exc)


def _nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists ("." for a relative path)."""
    return next((place for place in (path, *path.parents) if place.exists()), Path("."))


def write_text_atomic(path: Path, text: str) -> None:
    """`write_bytes_atomic` of `text` in UTF-8."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_figure_atomic(figure: Any, path: Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG via temp file + rename, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_temp_stem(path.name)}.", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=dpi)
        apply_umask_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)
    return path


def _temp_stem(name: str) -> str:
    """`name` as a temp file or staging folder beside it spells it: whole, or, where the temp
    name would pass the file system's 255 bytes (a 230-byte --out is a legal name), its first
    100 bytes and 8 hex digits of its hash, so two long names keep temp names of their own."""
    if len(name.encode()) <= 150:
        return name
    head = name.encode()[:100].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _host_tag() -> str:
    """8 hex digits naming this machine: a pid means nothing on another host sharing the folder."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    return f"{os.getpid()}@{_host_tag()}"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts: signalling it is refused, not unknown)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # cannot tell: keep the folder
    return True


def _is_stale(folder: Path, name: str) -> bool:
    """Whether `folder` is a staging folder of output `name` whose run is over: its owner pid (on
    this host) is gone, or, named before owners were recorded, it has not changed in a day."""
    owned = re.fullmatch(rf"\.{re.escape(name)}\.(\d+)@([0-9a-f]{{8}})\.[^.]+{re.escape(STAGING_SUFFIX)}", folder.name)
    if owned:
        return owned.group(2) == _host_tag() and not _pid_alive(int(owned.group(1)))
    legacy = re.fullmatch(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(STAGING_SUFFIX)}", folder.name)
    try:
        return bool(legacy) and time.time() - folder.stat().st_mtime > LEGACY_STALE_S
    except OSError:
        return False


def _folder_bytes(folder: Path) -> int:
    total = 0
    for item in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += item.lstat().st_size if item.is_file() else 0
    return total


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders a killed run left beside `target` (never a live run's: two
    concurrent writes of one output must not delete each other's work); one warning line says so."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    stem = _temp_stem(target.name)
    try:
        candidates = [p for p in parent.glob(f".{glob.escape(stem)}.*{STAGING_SUFFIX}") if p.is_dir()]
    except OSError:
        return []
    stale = [p for p in candidates if _is_stale(p, stem)]
    freed = 0
    for folder in stale:
        freed += _folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
    if stale:
        warnings.warn(
            f"removed {len(stale)} staging folder(s) of {target} left by killed runs ({freed / 1e6:.1f} MB freed)",
            stacklevel=3,
        )
    return stale


def shadowed_by_a_path(name: str, meaning: str) -> None:
    """A built-in name (`cifar10`, `vitedge-cifar10`) stays that name where a file or folder of
    the same name lies in the working folder, as every script using it expects; the user who
    meant their own folder of CIFAR-10 images is told, not scored silently on other images."""
    if Path(name).exists():
        warnings.warn(
            f"{name} is read as {meaning}, not the {'folder' if Path(name).is_dir() else 'file'} {name} "
            f"in the working folder: pass ./{name} to read that",
            stacklevel=3,
        )


def refuse_an_unwritable_place(path: Path, option: str) -> None:
    """Before any work (a training run's first epoch, say): the folder `path` goes into exists
    or can be made, and can be written (`os.access` knows read-only mounts too)."""
    path = Path(path)
    above = _nearest_existing(path.parent)
    if not above.is_dir():
        raise VitedgeError(f"cannot write {option} {path}: {above} is a file, not a folder", f"choose another {option}")
    if not os.access(above, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(above).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else "is not writable for this user"
        raise VitedgeError(f"cannot write {option} {path}: {above} {why}", f"choose another {option}")


def refuse_a_file_as_folder(target: Path) -> None:
    """An output folder named where a file is: refused before any work, the file untouched."""
    if target.exists() and not target.is_dir():
        raise VitedgeError(f"--out {target} is a file, not a folder", "choose another --out, e.g. a new folder name")


def _move_into_place(staging: Path, target: Path, *, force: bool) -> None:
    """The old folder (a `--force` replacement) is renamed aside first and deleted only once
    the new one is in place: if the move fails, the old one is put back, so it is never lost to
    an output that was not written. The aside name is a staging name, so what a killed run
    leaves there the next write removes. Without `force`, an output another command wrote at
    `target` while this one ran (two scripts given one --out) is never replaced: this one's
    output goes to the first free `target-N` and the command ends in one line naming both."""
    if not target.exists():
        try:
            os.rename(staging, target)
            return
        except OSError as exc:
            if exc.errno not in TAKEN:
                raise
    if not force:
        free = (name for name in _numbered(target) if not name.exists())  # an empty folder there is left as it is
        raise _written_meanwhile(target, _first_free(free, lambda name: os.rename(staging, name)))
    aside = staging.with_name(staging.name[: -len(STAGING_SUFFIX)] + "-replaced" + STAGING_SUFFIX)
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _numbered(base: Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """`base-2`, `base-3`, … (a file's `NAME-2.SUFFIX`): the names an output takes beside one
    already there."""
    stem, suffix = (base.stem, base.suffix) if keep_suffix else (base.name, "")
    return (base.with_name(f"{stem}-{number}{suffix}") for number in itertools.count(2))


def _first_free(candidates: Iterable[Path], place: Callable[[Path], None]) -> Path:
    """The first of `candidates` that `place` (a link, rename or mkdir: each fails atomically
    where something is) puts an output at."""
    for candidate in candidates:
        try:
            place(candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in TAKEN:
                raise
    raise AssertionError("unreachable: the candidates are endless")


@contextlib.contextmanager
def claimed_folder(base: Path) -> Iterator[Path]:
    """`base`, or `base-2`, `base-3`… whichever this process creates first (mkdir is atomic),
    for a default output name (a time to the second) that two commands started together must
    not share. It is empty; the output written there with `force` replaces it. On any error it
    is removed, with the parents made for it, so a refused command leaves no empty folders."""
    made = [folder for folder in (base.parent, *base.parent.parents) if not folder.exists()]
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        folder = _first_free(itertools.chain((base,), _numbered(base)), Path.mkdir)
    except OSError as exc:
        where = _nearest_existing(base)
        raise VitedgeError(
            f"cannot write to {where}: {_why_not(where, exc)}", "run it from a writable folder, or pass --out"
        ) from None
    try:
        yield folder
    except BaseException:
        for empty in (folder, *made):
            with contextlib.suppress(OSError):
                empty.rmdir()
        raise


def check_output_folder(target: Path, *, marker: str, force: bool = False) -> None:
    """Why the output folder `target` may not be written, raised before any work (a command
    checks it before loading a model, so a taken --out costs no wait) and again by
    `atomic_folder`: the folder the command runs in, an existing output without --force, a
    file, a folder of the user's own (no `marker` in it)."""
    target = Path(target)
    here, resolved = Path.cwd().resolve(), target.resolve()
    if resolved in (here, *here.parents):  # checked first: "pass --force" would be the wrong hint
        raise VitedgeError(
            f"--out {target} is the folder this command runs in{'' if resolved == here else ' (or one above it)'}: "
            "an output goes to a new folder, or replaces one vitedge wrote elsewhere",
            "name a new folder, e.g. --out out",
        )
    if target.exists() and not force:
        raise VitedgeError(
            f"output folder {target} already exists", "pass --force to replace it, or choose another --out"
        )
    refuse_a_file_as_folder(target)
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise VitedgeError(
            f"--out {target} holds files vitedge did not write (no {marker}): --force replaces only a folder it wrote",
            "choose another --out, or move those files away first",
        )


@contextlib.contextmanager
def atomic_folder(target: Path, *, marker: str, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target` (with the mode the
    umask gives), on any error (Ctrl-C included) it is deleted, so no half-written artifact is
    ever left behind; what a killed run could not delete, the next write of `target` removes.
    `marker` is the file every output of this kind holds (manifest.json, results.json): `force`
    replaces only such a folder, or an empty one, never a file or a folder of the user's own."""
    target = Path(target)
    check_output_folder(target, marker=marker, force=force)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = Path(
            tempfile.mkdtemp(dir=parent, prefix=f".{_temp_stem(target.name)}.{_owner_tag()}.", suffix=STAGING_SUFFIX)
        )
    except OSError as exc:
        raise VitedgeError(
            f"cannot write to {parent}: {_why_not(parent, exc)}", "choose a writable --out folder"
        ) from None
    try:
        yield staging
        apply_umask_mode(staging)
        _move_into_place(staging, target, force=force)
    except (VitedgeError, KeyboardInterrupt):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException as exc:
        full = isinstance(exc, Exception) and ran_out_of_space(exc, staging)
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise VitedgeError(f"disk full while writing {target}", "free some space or choose another --out") from None
        if isinstance(exc, OSError) and exc.filename and Path(exc.filename).resolve().is_relative_to(staging.resolve()):
            raise VitedgeError(
                f"cannot write {target}: {exc.strerror or exc}", "choose a writable --out folder"
            ) from None
        raise
