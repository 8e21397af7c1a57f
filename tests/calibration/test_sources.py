from __future__ import annotations

import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitedge.calibration.sources import (
    CIFAR10_CLASSES,
    cifar10_arrays,
    decode_image,
    open_source,
    read_cifar10_tarball,
    require_labels,
    subset_indices,
)
from vitedge.core.errors import VitedgeError


def _real_pixels(cifar_test, index: int, size: int = 48) -> np.ndarray:
    return np.asarray(Image.fromarray(cifar_test.get(index)).resize((size, size), Image.Resampling.BICUBIC))


def make_messy_folder(folder: Path, cifar_test) -> dict[str, np.ndarray]:
    """One good image of each awkward kind plus a broken JPEG and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _real_pixels(cifar_test, 0)
    Image.fromarray(rgb).save(folder / "plain.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    gray16 = rgb[..., 0].astype(np.uint16) * 257
    Image.fromarray(gray16).save(folder / "gray16.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    wide = _real_pixels(cifar_test, 1)[:, :32]  # 48 tall, 32 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(wide).save(folder / "rotated.jpg", exif=exif, quality=95)
    good = (folder / "plain.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image")
    return {"rgb": rgb, "gray16": gray16, "wide": wide}


def test_messy_folder_loads_good_images_and_reports_bad_ones(tmp_path: Path, cifar_test) -> None:
    made = make_messy_folder(tmp_path / "imgs", cifar_test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = open_source(str(tmp_path / "imgs"))
    assert images.count == 5
    skipped = {Path(p).name for p, _ in images.skipped}
    assert skipped == {"broken.jpg", "notes.txt"}
    assert any("skipped 2 file(s)" in str(w.message) for w in caught)
    by_name = {Path(images.identity(i)).name: images.get(i) for i in range(images.count)}
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in by_name.values())
    assert by_name["rotated.jpg"].shape == (32, 48, 3)  # EXIF orientation applied
    assert by_name["gray16.png"][..., 0].tolist() == made["rgb"][..., 0].tolist()  # 16-bit scaled, not clipped
    np.testing.assert_array_equal(by_name["rgba.png"], made["rgb"])
    assert np.abs(by_name["cmyk.jpg"].astype(int) - made["rgb"].astype(int)).mean() < 6


def test_an_image_in_a_format_vitedge_leaves_out_is_named_as_that_image(tmp_path: Path, cifar_test) -> None:
    """A scanner's TIFF, a GIF and an iPhone's HEIC photo are images in formats vitedge does not
    read: the skip names the format and the ones it reads (before: "not an image file", which
    sends the user looking for a broken file); a file of no image format is still "not an image"."""
    rgb = _real_pixels(cifar_test, 0)
    Image.fromarray(rgb).save(tmp_path / "scan.tiff")
    Image.fromarray(rgb).save(tmp_path / "anim.gif")
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (tmp_path / "Thumbs.db").write_bytes(bytes(64))
    Image.fromarray(rgb).save(tmp_path / "kept.png")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        images = open_source(str(tmp_path))
    assert images.count == 1
    assert {Path(p).name: why for p, why in images.skipped} == {
        "scan.tiff": "a TIFF image (vitedge reads JPEG, PNG, WebP, BMP)",
        "anim.gif": "a GIF image (vitedge reads JPEG, PNG, WebP, BMP)",
        "IMG_0001.HEIC": "a HEIC image (vitedge reads JPEG, PNG, WebP, BMP)",
        "Thumbs.db": "not an image file",
    }


def test_a_folder_is_checked_at_an_eighth_of_each_jpegs_size_and_cut_ones_still_skipped(
    tmp_path: Path, cifar_test, monkeypatch
) -> None:
    """Listing a folder decodes every file to skip the broken ones; a JPEG is decoded at 1/8 of
    its size for that (the whole stream is still read: 0.37 against 1.62 ms per 500×375 photo,
    so an ImageNet-sized folder of 50,000 lists in about 20 s, not 80). A cut JPEG is skipped as
    before, and the images used are decoded in full."""
    from PIL.JpegImagePlugin import JpegImageFile

    photo = Image.fromarray(_real_pixels(cifar_test, 0)).resize((400, 304))
    photo.save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    loaded: list[tuple[int, int]] = []
    load = JpegImageFile.load

    def recorded(self):  # noqa: ANN001, ANN202 - Pillow's own method
        loaded.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImageFile, "load", recorded)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        images = open_source(str(tmp_path))
    assert [Path(p).name for p, _ in images.skipped] == ["cut.jpg"]
    assert "truncated" in images.skipped[0][1]
    assert set(loaded) == {(50, 38)}, loaded
    assert images.get(0).shape == (304, 400, 3)


def test_a_folder_named_like_a_built_in_name_is_said_not_read_silently(tmp_path: Path, cifar_test, monkeypatch) -> None:
    """A user's own `cifar10/` folder of images (or a file named `vitedge-cifar10`) in the working
    folder: the built-in name keeps its meaning, as scripts expect, and the user is told how to
    read their own (before: their folder was passed over without a word); ./cifar10 reads it."""
    from vitedge.models import load_model

    (tmp_path / "cifar10" / "cat").mkdir(parents=True)
    Image.fromarray(_real_pixels(cifar_test, 0)).save(tmp_path / "cifar10" / "cat" / "mine.png")
    (tmp_path / "vitedge-cifar10").write_bytes(b"notes")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning) as said:
        builtin = open_source("cifar10")
        load_model("vitedge-cifar10")
    assert builtin.count == 10000
    assert [str(w.message) for w in said] == [
        "cifar10 is read as vitedge's CIFAR-10 test images, not the folder cifar10 in the working folder: "
        "pass ./cifar10 to read that",
        "vitedge-cifar10 is read as vitedge's embedded model, not the file vitedge-cifar10 in the working "
        "folder: pass ./vitedge-cifar10 to read that",
    ]
    assert open_source("./cifar10").count == 1


def test_class_subfolders_give_labels(tmp_path: Path, cifar_test) -> None:
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.fromarray(cifar_test.get(0)).save(tmp_path / label / "a.png")
    images = open_source(str(tmp_path))
    assert images.class_names == ("cat", "dog")
    assert images.labels.tolist() == [0, 1]


def test_loose_images_beside_class_folders_are_named_as_why_there_are_no_labels(tmp_path: Path, cifar_test) -> None:
    """cat/, dog/ and one stray.png beside them: "has no labels … use a folder with one
    subfolder per class" sent a user who has exactly that looking for a fault elsewhere."""
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.fromarray(cifar_test.get(0)).save(tmp_path / label / "a.png")
    Image.fromarray(cifar_test.get(1)).save(tmp_path / "stray.png")
    images = open_source(str(tmp_path))
    assert images.labels is None and images.count == 3  # still three images to calibrate on
    assert images.unlabelled_because == "1 image(s) lie beside its class folders, e.g. stray.png"
    with pytest.raises(VitedgeError) as info:
        require_labels(images, "so accuracy cannot be measured", "use labelled images")
    assert info.value.message.endswith(f"({images.unlabelled_because}), so accuracy cannot be measured")
    assert "into their class folders" in info.value.hint
    (tmp_path / "stray.png").unlink()
    require_labels(open_source(str(tmp_path)), "so", "use labelled images")  # labelled now: no error
    (tmp_path / "cat" / "a.png").rename(tmp_path / "a.png")
    (tmp_path / "cat").rmdir()
    (tmp_path / "dog" / "a.png").rename(tmp_path / "b.png")
    (tmp_path / "dog").rmdir()
    flat = open_source(str(tmp_path))  # a flat folder: no labels, and nothing to blame
    assert flat.unlabelled_because == ""
    with pytest.raises(VitedgeError) as info:
        require_labels(flat, "so", "use labelled images")
    assert info.value.message.endswith("has no labels, so") and info.value.hint == "use labelled images"


def test_class_folders_named_by_the_models_labels_are_numbered_by_name(tmp_path: Path, cifar_test) -> None:
    """cat/ and dog/ are CIFAR-10's 3 and 5 for a CIFAR-10 model (sorted folder order said 0
    and 1, airplane and automobile: a folder of its own classes scored 0%); folders none of
    which is a model label keep the sorted order (ImageNet's synset folders); a mix is refused."""
    from vitedge.calibration.sources import labels_for_model

    for label in ("cat", "dog"):
        (tmp_path / "named" / label).mkdir(parents=True)
        Image.fromarray(cifar_test.get(0)).save(tmp_path / "named" / label / "a.png")
    named = labels_for_model(open_source(str(tmp_path / "named")), CIFAR10_CLASSES)
    assert named.labels.tolist() == [3, 5] and named.class_names == CIFAR10_CLASSES
    unnamed = labels_for_model(open_source(str(tmp_path / "named")), ("n01440764", "n01443537"))
    assert unnamed.labels.tolist() == [0, 1]
    assert labels_for_model(open_source(str(tmp_path / "named")), ()).labels.tolist() == [0, 1]
    (tmp_path / "named" / "other").mkdir()
    Image.fromarray(cifar_test.get(1)).save(tmp_path / "named" / "other" / "b.png")
    with pytest.raises(VitedgeError, match="its classes cat, dog are the model's labels but other is not"):
        labels_for_model(open_source(str(tmp_path / "named")), CIFAR10_CLASSES)


def test_a_skipped_file_named_with_a_line_break_stays_on_the_one_line(tmp_path: Path, cifar_test) -> None:
    """The skipped-files note is one line (the CLI prints a warning's first line only): a file
    named "line\nbreak.png" is shown escaped, not cut at its line break."""
    Image.fromarray(cifar_test.get(0)).save(tmp_path / "good.png")
    (tmp_path / "line\nbreak.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning) as caught:
        open_source(str(tmp_path))
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and "line\\nbreak.png: " in message, message


def test_links_that_leave_the_folder_are_not_read(tmp_path: Path, cifar_test) -> None:
    """The user named a folder: a link to an image elsewhere, or to a folder (a class of images
    kept elsewhere), is named and not read; a link between the folder's own files is."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(cifar_test.get(1)).save(elsewhere / "secret.png")
    folder = tmp_path / "data"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        Image.fromarray(cifar_test.get(0)).save(folder / label / "a.png")
    (folder / "cat" / "alias.png").symlink_to(folder / "dog" / "a.png")
    (folder / "dog" / "secret.png").symlink_to(elsewhere / "secret.png")
    (folder / "bird").symlink_to(elsewhere, target_is_directory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = open_source(str(folder))
    assert images.class_names == ("cat", "dog")
    assert sorted(Path(i).relative_to(folder).as_posix() for i in images.identities) == [
        "cat/a.png",
        "cat/alias.png",
        "dog/a.png",
    ]
    reasons = {Path(p).name: why for p, why in images.skipped}
    assert reasons == {
        "secret.png": f"a link to {(elsewhere / 'secret.png').resolve()}, outside the folder",
        "bird": "a link to a folder, which vitedge does not follow",
    }
    assert any("skipped 2 file(s)" in str(w.message) for w in caught)
    only_links = tmp_path / "only_links"
    only_links.mkdir()
    (only_links / "x.png").symlink_to(elsewhere / "secret.png")
    with pytest.raises(VitedgeError, match=r"no readable images in .*only_links \(1 skipped, e.g. x.png: a link to"):
        open_source(str(only_links))


def test_empty_and_missing_sources_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitedgeError, match="no readable images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(VitedgeError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"))


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (12000, 8000)).save(path, optimize=True)
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(path)


def test_cifar10_is_the_real_data_set(cifar_test) -> None:
    assert cifar_test.count == 10_000
    assert np.bincount(cifar_test.labels).tolist() == [1000] * 10
    assert cifar_test.class_names == CIFAR10_CLASSES
    x, _ = cifar10_arrays("test")
    assert x.shape == (10_000, 32, 32, 3) and x.dtype == np.uint8


def test_canonical_tarball_reader(tmp_path: Path, cifar_test) -> None:
    """A tarball in the canonical layout (python pickles, CHW rows) decodes to HWC pixels."""
    x, y = cifar10_arrays("test")
    rows = x[:20].transpose(0, 3, 1, 2).reshape(20, -1)
    member = tmp_path / "test_batch"
    member.write_bytes(pickle.dumps({b"data": rows, b"labels": y[:20].tolist()}, protocol=2))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(member, arcname="cifar-10-batches-py/test_batch")
    pixels, labels = read_cifar10_tarball(archive, "test", expected_md5=None)
    np.testing.assert_array_equal(pixels, x[:20])
    assert labels.tolist() == y[:20].tolist()
    with pytest.raises(VitedgeError, match="md5"):
        read_cifar10_tarball(archive, "test")


def test_tarball_with_code_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    member = tmp_path / "test_batch"
    member.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(member, arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(VitedgeError, match="refusing"):
        read_cifar10_tarball(archive, "test", expected_md5=None)
    assert not sentinel.exists()


def test_subset_is_reproducible_and_class_balanced(cifar_test) -> None:
    first = subset_indices(cifar_test, 100, seed=3)
    assert first.tolist() == subset_indices(cifar_test, 100, seed=3).tolist()
    assert np.bincount(cifar_test.labels[first], minlength=10).tolist() == [10] * 10
    assert first.tolist() != subset_indices(cifar_test, 100, seed=4).tolist()
