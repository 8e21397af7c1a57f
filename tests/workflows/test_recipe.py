from __future__ import annotations

from pathlib import Path

import pytest

import vitedge.core.cpu
from vitedge.core.cpu import CpuInfo
from vitedge.core.errors import VitedgeError
from vitedge.workflows.recipe import (
    DEFAULT_ROWS,
    RECIPES_DIR,
    Recipe,
    default_rows,
    load_recipe,
    parse_recipe,
    rows_for,
)

# Simulated CPUs, whatever this one is: the row decision reads only what probe_cpu reports.
AVX2_ONLY = CpuInfo("x86_64", "AVX2-only test CPU", 2, frozenset({"avx2", "fma"}))
X86_BF16 = CpuInfo(
    "x86_64", "AMX test CPU", 2, frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_int8"})
)
ARM_BF16 = CpuInfo("aarch64", "ARM bf16 test CPU", 4, frozenset({"asimd", "asimddp", "bf16"}))
INT8_BF16 = "openvino:int8-bf16"


def simulate(monkeypatch: pytest.MonkeyPatch, cpu: CpuInfo) -> None:
    monkeypatch.setattr(vitedge.core.cpu, "probe_cpu", lambda: cpu)


def test_shipped_default_recipe_equals_the_built_in_defaults() -> None:
    assert load_recipe(RECIPES_DIR / "default.toml") == Recipe() == load_recipe(None)
    assert Recipe().rows is None and len(DEFAULT_ROWS) == 8 and INT8_BF16 not in DEFAULT_ROWS


@pytest.mark.parametrize("cpu", [X86_BF16, ARM_BF16], ids=["x86", "arm"])
def test_default_rows_add_int8_bf16_on_a_cpu_with_native_bf16(monkeypatch, cpu: CpuInfo) -> None:
    simulate(monkeypatch, cpu)
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS + (INT8_BF16,) and chosen.added == (INT8_BF16,)
    assert f"{INT8_BF16}: this CPU computes bf16 natively ({', '.join(cpu.bf16)})" in chosen.why
    assert default_rows("cpu", cpu) == chosen  # the probe is only the default


def test_default_rows_are_todays_eight_on_a_cpu_without_native_bf16(monkeypatch) -> None:
    simulate(monkeypatch, AVX2_ONLY)
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS and not chosen.added and "no native bf16 (AVX2, FMA)" in chosen.why


@pytest.mark.parametrize("cpu", [AVX2_ONLY, X86_BF16], ids=["no-bf16", "bf16"])
def test_listed_rows_are_run_exactly_as_listed(monkeypatch, cpu: CpuInfo) -> None:
    """Also when the list is the defaults written out: what a recipe lists is never extended."""
    simulate(monkeypatch, cpu)
    listed = parse_recipe('[export]\nrows = ["torch:fp32", "openvino:int8"]\n')
    assert rows_for(listed).kinds == ("torch:fp32", "openvino:int8") and not rows_for(listed).added
    written_out = parse_recipe(f"[export]\nrows = {list(DEFAULT_ROWS)!r}\n".replace("'", '"'))
    assert written_out.rows == DEFAULT_ROWS and rows_for(written_out).kinds == DEFAULT_ROWS


@pytest.mark.parametrize("target", ["cuda", "tensorrt", "openvino-gpu"])
def test_another_target_keeps_the_defaults_on_a_cpu_with_native_bf16(monkeypatch, target: str) -> None:
    simulate(monkeypatch, X86_BF16)
    recipe = parse_recipe(f'[bench]\ntarget = "{target}"\n')
    assert rows_for(recipe).kinds == DEFAULT_ROWS and not rows_for(recipe).added
    assert INT8_BF16 in rows_for(parse_recipe('[bench]\ntarget = "cpu"\n')).kinds


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
