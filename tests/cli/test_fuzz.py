"""Property-based fuzzing of everything that reads user bytes before a model is involved:
image decoding, preprocessing, and the recipe parser.

The contracts: `decode_image` either returns uint8 H×W×3 or raises ValueError (which the
folder source turns into "skipped: reason"); `preprocess_image` returns finite float32
3×H×W for any valid DataConfig and any image; `parse_recipe` either returns a Recipe or
raises VitedgeError (one red line), never anything else.

CI runs about 2,600 generated cases in well under a minute, derandomized so the run is the
same every time. For a longer, randomized hunt set VITEDGE_FUZZ_EXAMPLES (examples per
test), e.g. `VITEDGE_FUZZ_EXAMPLES=20000 python -m pytest tests/cli/test_fuzz.py`.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitedge.calibration.preprocess import (
    _PIL_INTERPOLATION,
    CROP_MODES,
    DataConfig,
    preprocess_image,
)
from vitedge.calibration.sources import decode_image
from vitedge.core.errors import VitedgeError
from vitedge.workflows.recipe import ROW_KINDS, SCHEMA, Recipe, parse_recipe, rows_for

LONG_RUN = os.environ.get("VITEDGE_FUZZ_EXAMPLES")


def fuzz(examples: int):  # noqa: ANN201 - a hypothesis settings decorator
    """CI: `examples` cases, derandomized (same cases every run). Long run: the env var's
    count per test, randomized."""
    return settings(
        max_examples=int(LONG_RUN) if LONG_RUN else examples,
        derandomize=not LONG_RUN,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- images

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "LAB", "HSV")
# Pillow >= 12 cannot write 32-bit mode "I" as PNG (it raises OSError while encoding), so
# mode I is covered through TIFF; PNG keeps its 16-bit grayscale.
FORMATS = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "BMP": ("1", "L", "P", "RGB"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"),
    "GIF": ("L", "P"),
}


@st.composite
def pil_images(draw, modes=MODES, max_side: int = 48) -> Image.Image:
    """A random image of a random mode and size, with random pixels."""
    mode = draw(st.sampled_from(modes))
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))  # RGBA
    if mode in ("I", "I;16"):  # uint16 arrays become I;16, int32 arrays I
        image = Image.fromarray(
            rng.integers(0, 65536, (height, width)).astype(np.uint16 if mode == "I;16" else np.int32)
        )
    elif mode == "F":
        image = Image.fromarray(
            (rng.random((height, width)) * draw(st.sampled_from([1.0, 255.0, 1e6]))).astype(np.float32)
        )
    elif mode in ("P", "PA"):
        image = base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=draw(st.integers(2, 256)))
        if mode == "PA":
            image = image.convert("PA")
        elif draw(st.booleans()):
            image.info["transparency"] = 0
    else:
        image = base.convert(mode)
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation, including invalid values
        image.info["exif"] = exif.tobytes()
    return image


@st.composite
def encoded_images(draw) -> bytes:
    """A random image encoded in a random format that supports its mode."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    image = draw(pil_images(modes=FORMATS[fmt]))
    buffer = io.BytesIO()
    options = {"exif": image.info["exif"]} if "exif" in image.info and fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}
    if fmt == "JPEG":
        options["quality"] = draw(st.integers(1, 95))
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def check_decoded(data: bytes) -> None:
    try:
        pixels = decode_image(data)
    except ValueError as exc:
        assert str(exc), "a refusal must say why"
        return
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.shape[0] >= 1 and pixels.shape[1] >= 1


@fuzz(500)
@given(st.binary(max_size=4096))
def test_decode_random_bytes(data: bytes) -> None:
    check_decoded(data)


@fuzz(300)
@given(
    st.sampled_from(
        [
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"BM",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"II*\x00",
            b"MM\x00*",
        ]
    ),
    st.binary(max_size=2048),
)
def test_decode_magic_numbers_with_garbage(magic: bytes, rest: bytes) -> None:
    """Random bytes behind each format's signature reach the format's own parser."""
    check_decoded(magic + rest)


@fuzz(400)
@given(encoded_images(), st.data())
def test_decode_valid_and_truncated_files(data: bytes, choice) -> None:  # noqa: ANN001 - st.data()
    check_decoded(data)
    cut = choice.draw(st.integers(0, max(0, len(data) - 1)), label="cut")
    check_decoded(data[:cut])
    flip = choice.draw(st.integers(0, max(0, len(data) - 1)), label="flip")
    damaged = bytearray(data)
    if damaged:
        damaged[flip] ^= 0xFF
    check_decoded(bytes(damaged))


# --------------------------------------------------------------------------- preprocessing


@st.composite
def data_configs(draw) -> DataConfig:
    unit = st.floats(0.0, 1.0, allow_nan=False)
    return DataConfig(
        input_size=(3, draw(st.integers(1, 64)), draw(st.integers(1, 64))),
        interpolation=draw(st.sampled_from(sorted(_PIL_INTERPOLATION))),
        mean=(draw(unit), draw(unit), draw(unit)),
        std=tuple(draw(st.floats(0.01, 2.0, allow_nan=False)) for _ in range(3)),
        crop_pct=draw(st.floats(0.05, 1.0, allow_nan=False, exclude_min=False)),
        crop_mode=draw(st.sampled_from(CROP_MODES)),
        num_classes=draw(st.integers(1, 1000)),
    )


@fuzz(500)
@given(
    data_configs(),
    st.one_of(
        pil_images(max_side=96),
        st.builds(
            lambda h, w, s: np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8),
            st.integers(1, 96),
            st.integers(1, 96),
            st.integers(0, 2**32 - 1),
        ),
    ),
)
def test_preprocess_gives_finite_float32_of_the_model_shape(config: DataConfig, image) -> None:  # noqa: ANN001 - PIL image or array
    result = preprocess_image(image, config)
    height, width = config.image_size
    assert result.dtype == np.float32 and result.shape == (3, height, width)
    assert np.isfinite(result).all()


# --------------------------------------------------------------------------- recipes

TABLES = sorted(SCHEMA) + ["compress", "modle", "exprot", "data.x", "bench", "Model", ""]
KEYS = sorted(
    {key for keys in SCHEMA.values() for key in keys}
    | {"step", "ratio", "rank", "r", "ratoi", "samples", "", "a b", "spec"}
)
STEP_NAMES = [
    "prune-heads",
    "prune-mlp",
    "lowrank",
    "tokens",
    "quantize-dynamic",
    "fp16",
    "nystrom",
    "distill",
    "prune-hedas",
    "",
    "🙂",
]

toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(list(ROW_KINDS) + ["all", "cifar10", "minmax", "cpu"] + STEP_NAMES),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=6,
)


def toml_value(value) -> str:  # noqa: ANN001 - any TOML value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else ("inf" if value > 0 else "-inf")
            if value in (float("inf"), float("-inf"))
            else repr(value)
        )
    if isinstance(value, str):
        return (
            '"'
            + value.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode().replace("\\\\", "\\\\")
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else '"' + key.replace('"', '\\"') + '"'


@st.composite
def recipes(draw) -> str:
    """Mostly-valid recipe text: real and misspelled tables, keys, steps and value types."""
    lines = []
    for table in draw(st.lists(st.sampled_from(TABLES), max_size=5, unique=True)):
        if table == "compress":
            for _ in range(draw(st.integers(0, 3))):
                lines.append("[[compress]]")
                lines.append(f"step = {toml_value(draw(st.one_of(st.sampled_from(STEP_NAMES), toml_scalars)))}")
                for key, value in draw(st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=3)).items():
                    if key != "step":
                        lines.append(f"{toml_key(key)} = {toml_value(value)}")
            continue
        if draw(st.integers(0, 9)) == 0:
            lines.append(f"{toml_key(table)} = {toml_value(draw(toml_values))}")  # a value where a table belongs
            continue
        lines.append(f"[{toml_key(table) if table != 'data.x' else table}]")
        known = sorted(SCHEMA.get(table, {})) or KEYS
        for key, value in draw(
            st.dictionaries(st.sampled_from(known + ["ratoi", "sampels"]), toml_values, max_size=4)
        ).items():
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    if draw(st.integers(0, 4)) == 0 and lines:  # damage one line
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
    return "\n".join(lines) + "\n"


def check_recipe(text: str) -> None:
    try:
        recipe = parse_recipe(text, "fuzz.toml")
    except VitedgeError as exc:
        assert exc.message.startswith("fuzz.toml"), exc.message  # names the file (and line)
        return
    assert isinstance(recipe, Recipe)
    assert all(kind in ROW_KINDS for kind in rows_for(recipe).kinds)
    assert all(isinstance(b, int) and b >= 1 for b in recipe.batches), recipe.batches
    assert recipe.samples is None or (isinstance(recipe.samples, int) and recipe.samples >= 1), recipe.samples
    assert isinstance(recipe.calibration_samples, int) and recipe.calibration_samples >= 1
    assert isinstance(recipe.threads, int) and recipe.threads >= 1 and isinstance(recipe.runs, int) and recipe.runs >= 1


@fuzz(500)
@given(recipes())
def test_recipe_parser_on_recipe_like_text(text: str) -> None:
    check_recipe(text)


TOML_PIECES = list("[]=\".\n #'{},0123456789abcdefgmnoprst_-") + [
    "model",
    "spec",
    "compress",
    "step",
    "rows",
    "\\u",
    '"""',
]


@fuzz(300)
@given(st.lists(st.sampled_from(TOML_PIECES), max_size=200).map("".join))
def test_recipe_parser_on_toml_punctuation(text: str) -> None:
    """Text glued from TOML punctuation and recipe words (st.text takes single characters
    only, so the multi-character pieces are joined from a list)."""
    check_recipe(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[bench]\nbatches = ["a"]\n', "fuzz.toml:2: [bench] batches must be a list of positive integers, got ['a']"),
        ("[bench]\nbatches = [[1]]\n", "fuzz.toml:2: [bench] batches must be a list of positive integers, got [[1]]"),
        ("[bench]\nbatches = [0]\n", "fuzz.toml:2: [bench] batches must be a list of positive integers, got [0]"),
        ("[bench]\nbatches = [true]\n", "fuzz.toml:2: [bench] batches must be a list of positive integers, got [True]"),
        ('[export]\nrows = [["onnx:fp32"]]\n', "fuzz.toml:2: unknown export row \"['onnx:fp32']\""),
        ("compress = 5\n", "fuzz.toml:1: compress must be an array of tables"),
        ("[data]\nsamples = -3\n", "fuzz.toml:2: [data] samples must be at least 1, got -3"),
        ("[data]\nsamples = true\n", "fuzz.toml:2: [data] samples has the wrong type (bool)"),
        ("[calibration]\nsamples = 0\n", "fuzz.toml:2: [calibration] samples must be at least 1, got 0"),
        ("[bench]\nthreads = 0\n", "fuzz.toml:2: [bench] threads must be at least 1, got 0"),
    ],
    ids=[
        "batch-string",
        "batch-nested",
        "batch-zero",
        "batch-bool",
        "row-nested",
        "compress-scalar",
        "samples-negative",
        "samples-bool",
        "calibration-zero",
        "threads-zero",
    ],
)
def test_recipe_values_found_by_the_fuzzer(text: str, message: str) -> None:
    """The inputs the fuzzer first tripped on, kept as plain regression cases: each must be
    refused with its own message (naming file, line and value), never fixed up silently
    (`samples = -3` must not become "all", `samples = true` must not become 1)."""
    with pytest.raises(VitedgeError) as error:
        parse_recipe(text, "fuzz.toml")
    assert error.value.message == message and error.value.hint
