"""Where images come from: a folder (flat or one subfolder per class), a `.npz` with `x`/`y`,
or CIFAR-10. Every source opens to the same `ImageSet`, so calibration, evaluation and parity
never care which one the user named."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import VitedgeError, first_line, printable
from ..core.io import shadowed_by_a_path
from .preprocess import DataConfig, to_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SPECS = ("cifar10", "cifar10:test", "cifar10:train")
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold, enforced as an error
SHOWN_SKIPPED = 3


@dataclass(frozen=True)
class ImageSet:
    """N RGB images, optionally labelled; images decode on demand so a folder costs no memory."""

    name: str
    count: int
    get: Callable[[int], np.ndarray]  # index -> uint8 H×W×3 RGB
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    identities: tuple[str, ...] = ()  # a stable name per image (file path or "name[index]")
    unlabelled_because: str = ""  # why a folder of class folders has no labels after all

    def __len__(self) -> int:
        return self.count

    def identity(self, index: int) -> str:
        return self.identities[index] if self.identities else f"{self.name}[{index}]"


def _class_indices(name: str, labels: np.ndarray) -> np.ndarray:
    """Labels as int64 class indices; anything else (negative, fractional, text, one-hot) is
    refused, where a cast would truncate it into some class and score it silently."""
    numeric = labels.dtype.kind in "iuf" and labels.ndim == 1
    if numeric and (not len(labels) or (labels.min() >= 0 and np.array_equal(labels, np.round(labels)))):
        return labels.astype(np.int64)
    span = f", from {labels.min()} to {labels.max()}" if numeric else ""
    raise VitedgeError(
        f"{name}: the labels are not class indices (0, 1, 2, …): {labels.dtype} {labels.shape}{span}",
        "save y as one whole number of at least 0 per image",
    )


def scores_other_classes(data_classes: Sequence[str], model_labels: Sequence[str]) -> bool:
    """CIFAR-10's labels scored against a model whose own class names are known and are not
    CIFAR-10's (an ImageNet model): in range, so scored, but label 0 is "airplane" to the data
    and the model's first class (ImageNet's "tench") to the model. Only CIFAR-10's names are
    trusted here: a folder's class names (ImageNet's synset ids) rarely spell the model's labels."""
    return has_cifar10_labels(data_classes) and bool(model_labels) and not has_cifar10_labels(model_labels)


def labels_for_model(images: ImageSet, model_labels: Sequence[str]) -> ImageSet:
    """`images` with its labels in the model's numbering. A folder's classes are numbered in
    sorted folder order (torchvision's ImageFolder); where every class folder is one of the
    model's labels they map by name instead, so `cat/` and `dog/` score as CIFAR-10's 3 and 5,
    not 0 and 1 — the rule the board runner applies (`run_bundle.image_folder`). Some classes
    named by the model's labels and some not (cat/, dog/ and other/; CIFAR-10 for a model
    trained on cat/ and dog/) is refused: neither numbering can be right."""
    if images.labels is None or not images.class_names or not model_labels:
        return images
    known = [name for name in images.class_names if name in model_labels]
    if not known:
        return images
    if len(known) < len(images.class_names):
        strangers = [name for name in images.class_names if name not in model_labels]
        raise VitedgeError(
            f"{images.name}: its classes {', '.join(known[:3])}{' …' if len(known) > 3 else ''} are the model's "
            f"labels but {', '.join(strangers[:3])}{' …' if len(strangers) > 3 else ''} "
            f"{'is' if len(strangers) == 1 else 'are'} not, so no numbering of them is the model's",
            "use images of the model's own classes (a folder's class subfolders named by its labels)",
        )
    numbering = np.array([list(model_labels).index(name) for name in images.class_names], dtype=np.int64)
    return replace(images, labels=numbering[images.labels], class_names=tuple(model_labels))


def require_labels_within(labels: np.ndarray, classes: int, name: str = "") -> None:
    """Labels that index no output of a `classes`-way model (a .npz or folder from another label
    set) would score 0% as if the model were wrong, or stop training mid-epoch: refused instead."""
    if classes and len(labels) and int(labels.max()) >= classes:
        raise VitedgeError(
            f"{name + ': ' if name else ''}the labels run from {labels.min()} to {labels.max()}, "
            f"but the model has {classes} classes (0 to {classes - 1})",
            "use labelled images of the model's own classes, labels 0 to the class count - 1",
        )


def in_model_numbering(images: ImageSet, config: DataConfig) -> ImageSet:
    """`images` with labels in the model's numbering (`labels_for_model`), refused where a label
    names no output of the model: a loss would stop training mid-epoch, top-1 would count it
    wrong on every image. Labels are known when a source opens, before an image is read."""
    images = labels_for_model(images, config.labels)
    if images.labels is not None:
        require_labels_within(images.labels, config.num_classes, images.name)
    return images


def array_image_set(name: str, pixels: np.ndarray, labels: np.ndarray | None, class_names: tuple[str, ...]) -> ImageSet:
    """An ImageSet over an in-memory uint8 N×H×W×3 array."""
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise VitedgeError(
            f"{name}: expected uint8 images shaped N×H×W×3, got {pixels.dtype} {pixels.shape}",
            "save the array as uint8 RGB in HWC order under the key 'x'",
        )
    if labels is not None and len(labels) != len(pixels):
        raise VitedgeError(
            f"{name}: {len(pixels)} images but {len(labels)} labels", "x and y must have the same length"
        )
    labels = None if labels is None else _class_indices(name, labels)
    return ImageSet(name, len(pixels), pixels.__getitem__, labels, class_names)


class ImageDecodeError(VitedgeError, ValueError):
    """An image file that cannot be decoded. A user error (one line, not a traceback, if an
    image breaks after the folder was scanned) and a ValueError, which is what the folder
    source catches to skip the file with its reason."""

    def __init__(self, reason: str, source: Path | None = None) -> None:
        super().__init__(
            f"cannot decode {source}: {reason}" if source else reason,
            "the file is damaged or not an image; re-save it or remove it",
        )
        self.reason = reason


def decode_image(data: bytes | Path, *, scaled_down: bool = False) -> np.ndarray:
    """Decode one image file to uint8 H×W×3 RGB; raises ImageDecodeError with a short reason.
    `scaled_down`: a JPEG decodes at 1/8 of its size, its whole stream still read, so a cut or
    damaged file fails as it would in full: the check of every file in a folder, at under a quarter of
    the cost for ImageNet-sized photos (the images a command uses are decoded in full later)."""
    source = None if isinstance(data, bytes) else Path(data)
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    f"{width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS} limit (decompression bomb guard)", source
                )
            if scaled_down and image.format == "JPEG":
                image.draft(image.mode, (1, 1))
            image.load()
            return np.asarray(to_rgb(image))
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
        raise ImageDecodeError(first_line(exc), source) from None


def _outside_reason(path: Path, root: Path) -> str | None:
    """Why `path` is not read as part of the folder `root` (already resolved), or None.
    A link is followed only while it stays inside the folder: the user named a folder, and
    vitedge reads nothing outside it. Links to folders are never followed (pathlib's walk
    does not enter them), so such a folder is named rather than taken for an empty class."""
    if path.is_symlink() and path.is_dir():
        return "a link to a folder, which vitedge does not follow"
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        return f"a link to {resolved}, outside the folder"
    return None


def not_read_because(path: Path) -> str:
    """Why a file with a suffix vitedge does not read is skipped: a TIFF scan or an iPhone's HEIC
    photo is an image, in a format vitedge leaves out, and saying "not an image" would send the
    user looking for a broken file."""
    suffix = path.suffix.lower()
    kind = Image.registered_extensions().get(suffix) or {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF"}.get(suffix)
    return f"a {kind} image (vitedge reads JPEG, PNG, WebP, BMP)" if kind else "not an image file"


def folder_image_set(folder: Path) -> ImageSet:
    """A folder of images: flat, or one subfolder per class (labels sorted by folder name)."""
    root = folder.resolve()
    entries = sorted(p for p in folder.rglob("*") if not p.name.startswith("."))
    skipped: list[tuple[str, str]] = []
    for path in entries:
        if (reason := _outside_reason(path, root)) is not None:
            skipped.append((str(path), reason))
    left_out = {path for path, _ in skipped}
    files = [p for p in entries if str(p) not in left_out and p.is_file()]
    subdirs = [p.name for p in entries if p.parent == folder and str(p) not in left_out and p.is_dir()]
    class_names = tuple(subdirs) if subdirs else ()
    good: list[Path] = []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(path), not_read_because(path)))
            continue
        try:
            decode_image(path, scaled_down=True)
        except ImageDecodeError as exc:
            skipped.append((str(path), exc.reason))
            continue
        good.append(path)
    if skipped:
        shown = "; ".join(f"{printable(Path(p).name)}: {why}" for p, why in skipped[:SHOWN_SKIPPED])
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        warnings.warn(f"skipped {len(skipped)} file(s) in {folder}: {shown}{more}", stacklevel=2)
    labels, because = None, ""
    if class_names:
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array(
            [index[p.relative_to(folder).parts[0]] if len(p.relative_to(folder).parts) > 1 else -1 for p in good]
        )
        if (labels < 0).any():  # loose images beside class folders: no trustworthy labels
            loose = [p for p, label in zip(good, labels, strict=True) if label < 0]
            because = f"{len(loose)} image(s) lie beside its class folders, e.g. {printable(loose[0].name)}"
            labels = None
    return ImageSet(
        name=str(folder),
        count=len(good),
        get=lambda i: decode_image(good[i]),
        labels=labels,
        class_names=class_names,
        skipped=tuple(skipped),
        identities=tuple(str(p) for p in good),
        unlabelled_because=because,
    )


LOOSE_IMAGES_HINT = "move those images into their class folders, or out of the folder"


def require_labels(images: ImageSet, needs: str, hint: str) -> None:
    """Labelled images, or one line saying what `needs` them; a folder of class folders that
    has none names the loose images that cost them, as "use a folder with one subfolder per
    class" would send its user looking for a fault they do not have."""
    if images.labels is not None:
        return
    if images.unlabelled_because:
        raise VitedgeError(f"{images.name} has no labels ({images.unlabelled_because}), {needs}", LOOSE_IMAGES_HINT)
    raise VitedgeError(f"{images.name} has no labels, {needs}", hint)


# What numpy raises for a .npz that is damaged or not one, by where the file breaks: a cut
# zip (BadZipFile), a cut member (EOFError, ValueError), pickled or foreign bytes (ValueError).
UNREADABLE_NPZ = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_npz_images(path: Path, hint: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The `x` (and `y`, when stored) of a .npz, or one line naming the file and `hint`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise VitedgeError(f"{path} has no array 'x' (found: {', '.join(data.files) or 'none'})", hint)
            return data["x"], (data["y"] if "y" in data else None)
    except UNREADABLE_NPZ as exc:
        raise VitedgeError(f"cannot read {path}: {first_line(exc)}", hint) from None


def npz_image_set(path: Path) -> ImageSet:
    pixels, labels = read_npz_images(
        path, "pass a .npz written by numpy.savez with x (uint8 N×H×W×3 images) and y (labels, optional)"
    )
    return array_image_set(str(path), pixels, labels, ())


def cifar10_search_paths() -> list[Path]:
    """Where the CIFAR-10 arrays (cifar10_test.npz, cifar10_train.npz) are looked for, in
    order: $VITEDGE_DATA (or its cifar10/ folder), then the user cache; the canonical archive
    is read from, or downloaded into, the user cache after that."""
    paths = []
    if os.environ.get("VITEDGE_DATA"):
        root = Path(os.environ["VITEDGE_DATA"]).expanduser()
        if not root.is_dir():
            raise VitedgeError(
                f"VITEDGE_DATA={os.environ['VITEDGE_DATA']} is not a folder",
                "point it at the folder that holds cifar10_test.npz (or its cifar10/ folder), or unset it",
            )
        paths += [root / "cifar10", root]
    return paths + [cache_dir() / "cifar10"]


def cache_dir() -> Path:
    return Path(os.environ.get("VITEDGE_CACHE", Path.home() / ".cache" / "vitedge"))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR-10 python batches are pickles; allow only what numpy arrays need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_cifar10_tarball(
    path: Path, split: str, expected_md5: str | None = CIFAR10_MD5
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical `cifar-10-python.tar.gz` → (uint8 N×32×32×3, int64 labels)."""
    if expected_md5 is not None and _md5(path) != expected_md5:
        raise VitedgeError(
            f"{path} is not the canonical CIFAR-10 archive (md5 mismatch)", f"download it again from {CIFAR10_URL}"
        )
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            for name in names:
                handle = archive.extractfile(members[name])
                batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    except (tarfile.TarError, KeyError, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise VitedgeError(
            f"cannot read CIFAR-10 archive {path}: {exc}", f"download it again from {CIFAR10_URL}"
        ) from None
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def download_cifar10(target: Path) -> Path:
    """Download the canonical archive to `target`, verify its md5, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(CIFAR10_URL, timeout=60) as response:  # noqa: S310
            shutil.copyfileobj(response, out)
        if _md5(Path(tmp)) != CIFAR10_MD5:
            raise VitedgeError(
                "downloaded CIFAR-10 archive failed its md5 check",
                "retry; if it persists, download it by hand and pass its path",
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise VitedgeError(
            f"CIFAR-10 not found locally and the download failed: {exc}",
            "set VITEDGE_DATA to a folder with cifar10_test.npz/cifar10_train.npz, or pass --data path/to/cifar-10-python.tar.gz",
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def cifar10_arrays(split: str = "test", *, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the first place that has it; download only as the last resort."""
    if split not in ("test", "train"):
        raise VitedgeError(f"unknown CIFAR-10 split {split!r}", "use cifar10 (test) or cifar10:train")
    for folder in cifar10_search_paths():
        npz = folder / f"cifar10_{split}.npz"
        if npz.is_file():
            hint = f"replace {npz.name} with CIFAR-10's arrays (x: uint8 N×32×32×3, y: labels) or remove it"
            pixels, labels = read_npz_images(npz, hint)
            if labels is None:
                raise VitedgeError(f"{npz} has no labels (array 'y')", hint)
            return pixels, labels
    tarball = cache_dir() / "cifar-10-python.tar.gz"
    if not tarball.is_file():
        if not download:
            looked = ", ".join(str(p) for p in cifar10_search_paths())
            raise VitedgeError(
                f"CIFAR-10 not found (looked in {looked} and {tarball})", "set VITEDGE_DATA or pass the archive's path"
            )
        download_cifar10(tarball)
    return read_cifar10_tarball(tarball, split)


def has_cifar10_labels(labels: Sequence[str]) -> bool:
    """Whether a model's labels are CIFAR-10's classes, in order: the one case where CIFAR-10
    images are the model's own domain (and so a fair default for checking it)."""
    return tuple(labels) == CIFAR10_CLASSES


def same_source(a: str | None, b: str | None) -> bool:
    """Whether two source specs name the same images (a path as typed or resolved)."""
    if a is None or b is None:
        return False
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def open_source(spec: str, *, opened: Sequence[ImageSet] = ()) -> ImageSet:
    """`cifar10`, `cifar10:train`, a folder, a `.npz`, or a `cifar-10-python.tar.gz` path;
    the one of `opened` that names the same source if there is one (a command opens each
    source once: listing a folder reads every image's header)."""
    for images in opened:
        if same_source(images.name, spec):
            return images
    if spec in CIFAR10_SPECS:
        split = spec.partition(":")[2] or "test"
        shadowed_by_a_path(spec, f"vitedge's CIFAR-10 {split} images")
        pixels, labels = cifar10_arrays(split)
        return array_image_set(spec, pixels, labels, CIFAR10_CLASSES)
    path = Path(spec).expanduser()
    if path.name.endswith(".tar.gz") and path.is_file():
        pixels, labels = read_cifar10_tarball(path, "test")
        return array_image_set(str(path), pixels, labels, CIFAR10_CLASSES)
    if path.suffix == ".npz" and path.is_file():
        return npz_image_set(path)
    if path.is_dir():
        images = folder_image_set(path)
        if images.count == 0:
            first = images.skipped[0] if images.skipped else None
            found = f"{len(images.skipped)} skipped, e.g. {Path(first[0]).name}: {first[1]}" if first else "no files"
            raise VitedgeError(
                f"no readable images in {path} ({found})",
                f"put JPEG/PNG/WebP/BMP files in it ({', '.join(IMAGE_SUFFIXES)}), not links to files elsewhere",
            )
        return images
    if path.is_file():
        what = "one image" if path.suffix.lower() in IMAGE_SUFFIXES else "a file vitedge does not read images from"
        raise VitedgeError(
            f"data source {spec!r} is {what}, not a set of images",
            "pass a folder of images (one image goes in a folder too), a .npz with x/y, cifar10 or cifar10:train",
        )
    raise VitedgeError(
        f"data source {spec!r} does not exist", "pass cifar10, cifar10:train, a folder of images, or a .npz with x/y"
    )


def as_image_set(source: str | ImageSet) -> ImageSet:
    """`source` opened, or as it is when the caller opened it already (to refuse a typo before
    a model loads): a folder is listed and its images' headers read once per command."""
    return open_source(source) if isinstance(source, str) else source


def subset_indices(images: ImageSet, count: int | None, *, seed: int = 0) -> np.ndarray:
    """`count` indices drawn reproducibly; class-balanced when labels exist; all when None."""
    if count is None or count >= images.count:
        return np.arange(images.count)
    rng = np.random.default_rng(seed)
    if images.labels is None:
        return np.sort(rng.choice(images.count, size=count, replace=False))
    classes = np.unique(images.labels)
    per_class = [rng.permutation(np.flatnonzero(images.labels == c)) for c in classes]
    picked: list[int] = []
    round_index = 0
    while len(picked) < count:
        for members in per_class:
            if round_index < len(members) and len(picked) < count:
                picked.append(int(members[round_index]))
        round_index += 1
    return np.sort(np.array(picked))
