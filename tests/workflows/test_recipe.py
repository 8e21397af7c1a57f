from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.cpus import ARM_BF16, AVX2_ONLY, OPENVINO_BF16, OPENVINO_NO_BF16, X86_BF16, simulate
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

INT8_BF16 = "openvino:int8-bf16"


def test_shipped_default_recipe_equals_the_built_in_defaults() -> None:
    assert load_recipe(RECIPES_DIR / "default.toml") == Recipe() == load_recipe(None)
    assert Recipe().rows is None and len(DEFAULT_ROWS) == 8 and INT8_BF16 not in DEFAULT_ROWS


def test_a_run_is_titled_by_the_model_and_data_it_measured() -> None:
    """Without `[run] name`, "MODEL on DATA", whichever of recipe, `--model` or `--data` set them
    (before: every such run was titled "vitedge-cifar10 on CIFAR-10", a ViT-B run included)."""
    assert Recipe().title == "vitedge-cifar10 on cifar10"
    assert parse_recipe('[model]\nspec = "vit_base_patch16_224"\n').title == "vit_base_patch16_224 on cifar10"
    overridden = replace(Recipe(), model="m.safetensors", data="photos/")  # as `vitedge run --model --data`
    assert overridden.title == "m.safetensors on photos/"
    assert parse_recipe('[run]\nname = "mine"\n[model]\nspec = "x"\n').title == "mine"


def test_default_rows_add_int8_bf16_where_the_cpu_and_openvino_compute_bf16(monkeypatch) -> None:
    simulate(monkeypatch, X86_BF16, OPENVINO_BF16)
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS + (INT8_BF16,) and chosen.added == (INT8_BF16,)
    assert f"{INT8_BF16}: this CPU computes bf16 natively (AVX512-BF16, AMX)" in chosen.why
    assert default_rows("cpu", X86_BF16) == chosen  # the probe is only the default


@pytest.mark.parametrize("cpu", [X86_BF16, ARM_BF16], ids=["x86", "arm"])
def test_default_rows_leave_int8_bf16_out_where_openvino_computes_no_bf16(monkeypatch, cpu: CpuInfo) -> None:
    """OpenVINO's ARM plugin has no bf16 kernels on an ARM CPU with bf16: it would drop the hint
    and run f32, so the row would fail its own check; the run says why it is not there."""
    simulate(monkeypatch, cpu, OPENVINO_NO_BF16)
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS and not chosen.added
    assert "OpenVINO" in chosen.why and "CPU plugin computes no bf16 on this CPU" in chosen.why
    assert f"though it has {', '.join(cpu.bf16)} (the plugin offers FP32, FP16, INT8" in chosen.why


@pytest.mark.parametrize("cap", ["AVX2", "AVX512_CORE_VNNI"])
def test_default_rows_leave_int8_bf16_out_where_a_onednn_cap_rules_bf16_out(monkeypatch, cap: str) -> None:
    """ONEDNN_MAX_CPU_ISA below bf16: the plugin still offers BF16 but then fails to compile
    (AVX2) or emulates it (AVX512_CORE_VNNI), so the row is left out, saying why."""
    simulate(monkeypatch, replace(X86_BF16, onednn_cap=f"ONEDNN_MAX_CPU_ISA={cap}"), OPENVINO_BF16)
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS and not chosen.added
    assert f"ONEDNN_MAX_CPU_ISA={cap} keeps OpenVINO's CPU plugin from AVX512-BF16, AMX" in chosen.why
    simulate(monkeypatch, replace(X86_BF16, onednn_cap="ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX"), OPENVINO_BF16)
    assert rows_for(Recipe()).added == (INT8_BF16,)  # a cap that leaves bf16 alone changes nothing


def test_default_rows_are_todays_eight_on_a_cpu_without_native_bf16(monkeypatch) -> None:
    simulate(monkeypatch, AVX2_ONLY, OPENVINO_BF16)  # the CPU decides first
    chosen = rows_for(Recipe())
    assert chosen.kinds == DEFAULT_ROWS and not chosen.added and "no native bf16 (AVX2, FMA)" in chosen.why


@pytest.mark.parametrize("cpu", [AVX2_ONLY, X86_BF16], ids=["no-bf16", "bf16"])
def test_listed_rows_are_run_exactly_as_listed(monkeypatch, cpu: CpuInfo) -> None:
    """Also when the list is the defaults written out: what a recipe lists is never extended."""
    simulate(monkeypatch, cpu, OPENVINO_BF16)
    listed = parse_recipe('[export]\nrows = ["torch:fp32", "openvino:int8"]\n')
    assert rows_for(listed).kinds == ("torch:fp32", "openvino:int8") and not rows_for(listed).added
    written_out = parse_recipe(f"[export]\nrows = {list(DEFAULT_ROWS)!r}\n".replace("'", '"'))
    assert written_out.rows == DEFAULT_ROWS and rows_for(written_out).kinds == DEFAULT_ROWS


@pytest.mark.parametrize("target", ["cuda", "tensorrt", "openvino-gpu"])
def test_another_target_keeps_the_defaults_on_a_cpu_with_native_bf16(monkeypatch, target: str) -> None:
    simulate(monkeypatch, X86_BF16, OPENVINO_BF16)
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


RECIPE_WITH_PATHS = """\
[model]
spec = "student.safetensors"
[[compress]]
step = "distill"
teacher = "teacher.safetensors"
[data]
source = "imgs"
[calibration]
source = "cal.npz"
"""


def _beside_a_recipe(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """conf/ holding a recipe and the files it names (empty: only where they are matters)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in names:
        (conf / name).mkdir() if "." not in name else (conf / name).touch()
    return conf


def test_a_recipes_paths_are_read_from_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    """`vitedge run conf/pi.toml` whose recipe names `imgs` beside it read `imgs` from the folder
    the command started in ("data source 'imgs' does not exist"), or another folder of that name."""
    conf = _beside_a_recipe(tmp_path, ("student.safetensors", "teacher.safetensors", "imgs", "cal.npz"))
    (conf / "pi.toml").write_text(RECIPE_WITH_PATHS)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(Path("conf/pi.toml"))
    assert recipe.model == str(Path("conf/student.safetensors"))
    assert recipe.data == str(Path("conf/imgs"))
    assert recipe.calibration == str(Path("conf/cal.npz"))
    assert recipe.steps == (("distill", {"teacher": str(Path("conf/teacher.safetensors"))}),)
    monkeypatch.chdir(conf)  # started beside the recipe: the same files, named as written
    assert load_recipe(Path("pi.toml")).data == "imgs"


def test_names_and_paths_found_only_from_the_working_folder_are_kept(tmp_path: Path, monkeypatch) -> None:
    conf = _beside_a_recipe(tmp_path, ("cifar10", "vitedge-cifar10"))  # folders named like the built-in names
    (conf / "pi.toml").write_text(
        '[model]\nspec = "vitedge-cifar10"\n[data]\nsource = "cifar10"\n[calibration]\nsource = "here"\n'
    )
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(Path("conf/pi.toml"))
    assert (recipe.model, recipe.data, recipe.calibration) == ("vitedge-cifar10", "cifar10", "here")


def test_a_recipe_path_found_beside_it_and_in_the_working_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    conf = _beside_a_recipe(tmp_path, ("imgs",))
    (conf / "pi.toml").write_text(RECIPE_WITH_PATHS)
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VitedgeError) as info:
        load_recipe(Path("conf/pi.toml"))
    assert "conf/pi.toml:7" in info.value.message and "names both" in info.value.message
    assert "absolute path" in info.value.hint


def test_a_study_recipes_paths_are_read_from_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    from vitedge.workflows.study_recipe import load_study_recipe

    conf = _beside_a_recipe(tmp_path, ("small.safetensors", "imgs", "train", "student.safetensors"))
    quick = (RECIPES_DIR / "study-quick.toml").read_text()
    for key, value in (("model", "small.safetensors"), ("data", "imgs"), ("train_data", "train")):
        assert f'\n{key} = "' in quick
        quick = re.sub(rf'\n{key} = "[^"]*"', f'\n{key} = "{value}"', quick, count=1)
    (conf / "study.toml").write_text(quick.replace("[distill]\n", '[distill]\nstudent = "student.safetensors"\n'))
    monkeypatch.chdir(tmp_path)
    recipe = load_study_recipe(Path("conf/study.toml"))
    assert recipe.model == str(Path("conf/small.safetensors"))
    assert (recipe.data, recipe.train_data) == (str(Path("conf/imgs")), str(Path("conf/train")))
    assert recipe.distill.student == str(Path("conf/student.safetensors"))
    assert recipe.speed_model == load_study_recipe(quick=True).speed_model  # a timm name, kept
