from __future__ import annotations

from pathlib import Path

import pytest

from vitedge.core.errors import VitedgeError
from vitedge.workflows.recipe import RECIPES_DIR, Recipe, load_recipe, parse_recipe


def test_shipped_default_recipe_equals_the_built_in_defaults() -> None:
    assert load_recipe(RECIPES_DIR / "default.toml") == Recipe() == load_recipe(None)
    assert len(Recipe().rows) == 8


def test_overrides_parse() -> None:
    recipe = parse_recipe(
        '[data]\nsamples = "all"\n[bench]\nbatches = [1]\nthreads = 1\n[export]\nrows = ["torch:fp32", "onnx:fp32"]\n'
    )
    assert recipe.samples is None and recipe.batches == (1,) and recipe.threads == 1
    assert recipe.rows == ("torch:fp32", "onnx:fp32")


@pytest.mark.parametrize(
    "text,line,needle",
    [
        ("[data]\nsource = 'cifar10'\nsampels = 10\n", 3, "did you mean 'samples'"),
        ("[modle]\nspec = 'x'\n", 1, "did you mean 'model'"),
        ("[export]\nrows = ['onnx:int4']\n", 2, "valid:"),
        ("[bench]\nthreads = 'two'\n", 2, "expected int"),
    ],
)
def test_typos_name_the_line_and_the_choices(text: str, line: int, needle: str) -> None:
    with pytest.raises(VitedgeError) as info:
        parse_recipe(text, "r.toml")
    assert f"r.toml:{line}" in info.value.message
    assert needle in info.value.hint or needle in info.value.message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VitedgeError, match="not valid TOML"):
        parse_recipe("[data\n", "bad.toml")
    with pytest.raises(VitedgeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
