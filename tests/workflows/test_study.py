"""`vitedge study`: the committed recipes hold every row the issue asks for, and the quick
recipe, run on the tiny ViT at both scales, yields a table whose every figure is a field of
the Measurement taken for that row (each measurement gets its own fake clock)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from typer.testing import CliRunner

from tests.support import count_openings, make_tiny_vit
from vitedge.core.errors import VitedgeError
from vitedge.models import count_weights, save_checkpoint
from vitedge.targets.measure import Measurement, MeasureRequest, measure
from vitedge.targets.stats import paired_delta
from vitedge.workflows.report import DASH, fmt, fmt_delta
from vitedge.workflows.study import run_study
from vitedge.workflows.study_recipe import DistillSpec, load_study_recipe, parse_study_recipe, with_overrides
from vitedge.workflows.study_report import COLUMNS, cells

PUBLISHED = [figure.point() for figure in load_study_recipe().published]


def _families(recipe) -> dict[str, list]:
    """Rows grouped as the issue lists them: by step names, else by runtime; "student …" for
    the distilled rows; "candidate" for the best-combination candidates."""
    found: dict[str, list] = {}
    for row in recipe.rows:
        names = "+".join(name for name, _ in row.steps)
        key = "candidate" if row.candidate else ("student " if row.student else "") + (names or row.runtime)
        found.setdefault(key, []).append(row)
    return found


def test_committed_study_recipe_has_every_row_of_the_issue() -> None:
    recipe = load_study_recipe()
    rows = _families(recipe)
    assert recipe.rows[0].label == "Vanilla fp32" and recipe.rows[0].is_baseline
    assert [r.label for r in rows["torch:int8-dynamic"]] == ["Dynamic Quantization (PyTorch)"]
    assert rows["openvino:fp16"][0].gpu_runtime == "torch:fp16"
    assert sorted(r.steps[0][1]["landmarks"] for r in rows["nystrom"]) == [4, 8, 16, 32]
    assert len(rows["prune-magnitude"]) == 3 and len(rows["prune-structured"]) == 3 and len(rows["tokens"]) == 3
    assert len({r.steps[0][1]["r"] for r in rows["tokens"]}) == 3
    assert len(rows["student torch:fp32"]) == 1 and len(rows["student torch:int8-dynamic"]) == 1
    assert len(rows["onnx:int8-static"]) == 1 and len(rows["openvino:int8"]) == 1
    assert rows["candidate"]
    assert (
        recipe.speed_model == "vit_base_patch16_224"
        and recipe.student_speed_model == "deit_small_patch16_224"
        and recipe.model == "vitedge-cifar10"
    )
    assert recipe.samples is None  # the whole CIFAR-10 test set


def test_quick_recipe_keeps_one_variant_per_family() -> None:
    full, quick = _families(load_study_recipe()), _families(load_study_recipe(quick=True))
    assert set(quick) == set(full)
    assert all(len(rows) == 1 for key, rows in quick.items() if key != "candidate")
    assert load_study_recipe(quick=True).speed_model == "deit_small_patch16_224"


BASE = '[[row]]\nlabel = "Vanilla fp32"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[study]\nspeed_modle = 'x'\n" + BASE, "did you mean 'speed_model'"),
        ('[[row]]\nlabel = "DQ"\nruntime = "torch:int8-dynamic"\n', "first \\[\\[row\\]\\] must be the plain fp32"),
        (BASE + '[[row]]\nlabel = "N"\nsteps = ["nystrom:landmark=4"]\n', "has no option 'landmark'"),
        (BASE + '[[row]]\nlabel = "O"\nruntime = "onnx:int4"\n', "unknown runtime 'onnx:int4'"),
        (BASE + BASE, "share the label"),
        ("[bench]\nruns = 'many'\n" + BASE, "wrong type"),
        ("[bench]\nthreads = -1\n" + BASE, "bad.toml:2: \\[bench\\] threads must be at least 1, got -1"),
        ("[bench]\nruns = 0\n" + BASE, "\\[bench\\] runs must be at least 1"),
        ("[calibration]\nsamples = 0\n" + BASE, "\\[calibration\\] samples must be at least 1"),
        ("[distill]\nepochs = 0\n" + BASE, "\\[distill\\] epochs must be at least 1"),
        ("[study]\ntrain_samples = -5\n" + BASE, "\\[study\\] train_samples must be at least 1"),
        ("[study]\nseed = -1\n" + BASE, "bad.toml:2: \\[study\\] seed must be at least 0, got -1"),
        (BASE + '[[published]]\nlabel = "X"\nrole = "worst"\nit_per_s_cpu = 1.0\nmb = 1.0\n', "unknown published role"),
        (BASE + '[[published]]\nlabel = "X"\nrole = "dq"\nit_per_s_cpu = 1.0\n', "has no mb"),
        (BASE + '[[published]]\nlabel = "X"\nrole = "dq"\nit_per_s_cpu = "fast"\nmb = 1.0\n', "wrong type"),
    ],
)
def test_recipe_mistakes_are_user_errors(text: str, message: str) -> None:
    with pytest.raises(VitedgeError, match=message):
        parse_study_recipe(text, "bad.toml")


class Ticks:
    """A clock that advances by `step` each time it is read: every timed call lasts `step`."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The quick recipe on the tiny ViT (both scales), measured in this process; the k-th
    measurement's clock ticks (k + 1) ms, so each figure can be traced to its measurement."""
    tmp_path = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITEDGE_CACHE", str(tmp_path / "cache"))
        yield _run_tiny_study(tmp_path, patch)


def _run_tiny_study(tmp_path, patch):
    """The committed quick recipe, every row of it, with the tiny ViT at both scales and its
    half-width counterpart as the distilled rows' speed model (as deit_small is to vit_base);
    few images, one fine-tune batch and three timed calls keep it to seconds of work."""
    from vitedge.compress.distill import make_student

    tiny = make_tiny_vit()
    path = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    half = save_checkpoint(
        make_student(tiny, student=None, width=0.5, distill_token=False), tmp_path / "tiny-half.safetensors"
    )
    recipe = with_overrides(
        load_study_recipe(quick=True),
        model=str(path),
        speed_model=str(path),
        student_speed_model=str(half),
        samples=64,
        train_samples=128,
        calibration_samples=8,
        speed_calibration_samples=8,
        distill=DistillSpec(epochs=1, samples=64, batch_size=64),
        threads=1,
        runs=3,
    )
    taken: list[tuple[MeasureRequest, Measurement, float]] = []

    def measured(request: MeasureRequest) -> Measurement:
        step = (len(taken) + 1) / 1000
        result = measure(request, clock=Ticks(step))
        taken.append((request, result, step))
        return result

    import vitedge.workflows.study

    opened = count_openings(patch, vitedge.workflows.study)
    study = run_study(recipe, tmp_path / "study", measure=measured, gpu=False)
    return recipe, study, taken, tmp_path / "study", opened


def test_quick_study_on_tiny_model_reports_only_measured_figures(tiny_study) -> None:
    recipe, study, taken, folder, opened = tiny_study
    assert [r.row.label for r in study.results] == [row.label for row in recipe.rows]
    assert len(taken) == 2 * len(recipe.rows)  # one accuracy and one speed measurement per row, no GPU
    base = study.baseline
    for number, result in enumerate(study.results):
        (acc_request, acc, _acc_step), (speed_request, speed, speed_step) = taken[2 * number], taken[2 * number + 1]
        assert result.accuracy is acc and result.speed is speed
        assert acc_request.labels_path is not None and speed_request.labels_path is None
        row = cells(result, base)
        assert len(row) == len(COLUMNS)
        delta = paired_delta(base.accuracy.accuracy.hits(), acc.accuracy.hits())
        assert row[1] == fmt(acc.accuracy.top1, "pct") and delta.delta == pytest.approx(
            acc.accuracy.top1 - base.accuracy.accuracy.top1
        )
        assert (
            row[2] == ("reference" if result is base else fmt_delta(delta)) and delta.low <= delta.delta <= delta.high
        )
        assert row[3] == speed.execution_precision and row[3] in ("f32", "int8+f32", "f16")
        assert row[4] == fmt(speed.size_mb, "mb") and speed.size_mb > 0
        # the clock of this row's own speed measurement, and nothing else, sets its speed
        assert speed.timing(1).it_per_s == pytest.approx(1 / speed_step) and row[6] == fmt(
            speed.timing(1).it_per_s, "rate"
        )
        assert speed.timing(8).images_per_s == pytest.approx(8 / speed_step) and row[7] == fmt(
            speed.timing(8).images_per_s, "rate"
        )
        assert row[8] == fmt(speed.timing(1).it_per_s / base.speed.timing(1).it_per_s, "ratio")
        assert row[9] == DASH  # no GPU in this run
        assert all(re.fullmatch(r"[+-]?\d+(\.\d+)?×?", cell) for cell in (row[1], *row[4:9])), row
    assert sum(r.best for r in study.results) == 1 and next(r for r in study.results if r.best).row.candidate
    tiny_params = count_weights(make_tiny_vit().module)
    assert base.params == tiny_params and base.accuracy_params == tiny_params
    assert study.result("Structured pruning 25%").params < tiny_params
    student = study.result("Distilled student")
    assert student.accuracy_params < tiny_params / 2  # the student trained in this run
    assert student.params < tiny_params / 2 and student.speed_model == recipe.student_speed_model
    assert study.result("Dynamic Quantization (PyTorch)").speed.size_mb < base.speed.size_mb
    assert 0 < base.accuracy.accuracy.samples == 64
    # the student, the steps and calibration at both scales draw from one opening of each source
    assert opened == [recipe.data, recipe.train_data] == ["cifar10", "cifar10:train"], opened


def test_study_files_come_from_the_same_rows(tiny_study) -> None:
    recipe, study, _, folder, _ = tiny_study
    data = json.loads((folder / "study.json").read_text())
    assert [row["label"] for row in data["rows"]] == [row.label for row in recipe.rows]
    for saved, result in zip(data["rows"], study.results, strict=True):
        assert saved["speed"]["timings"][0]["it_per_s"] == result.speed.timing(1).it_per_s
        assert saved["accuracy"]["accuracy"]["top1"] == result.accuracy.accuracy.top1
    text = (folder / "study.md").read_text()
    for result in study.results:
        assert "| " + " | ".join(cells(result, study.baseline)) + " |" in text
    assert "Accuracy scale" in text and "Speed and size scale" in text and "published" in text.lower()
    assert "2.34×" in text and "DQ on" in text and "best combination" in text
    assert (folder / "study.png").stat().st_size > 10_000
    assert data["student"]["trained"] is True


def test_run_and_study_recipes_share_one_validator() -> None:
    """The same mistake reads the same in both kinds of recipe: one checker, not two."""
    from vitedge.workflows.recipe import parse_recipe

    errors = []
    for parse in (parse_recipe, parse_study_recipe):
        with pytest.raises(VitedgeError) as caught:
            parse("[bench]\nruns = true\n" + BASE, "bad.toml")
        errors.append((caught.value.message, caught.value.hint))
    assert errors[0] == errors[1] == ("bad.toml:2: [bench] runs has the wrong type (bool)", "expected int")


def test_published_figures_come_from_the_recipe(tiny_study) -> None:
    """No published figure is code: change the recipe's and the comparison follows."""
    from vitedge.workflows.study_recipe import PublishedFigure
    from vitedge.workflows.study_report import comparison

    recipe, study, _, _, _ = tiny_study
    assert "Chen et al. 2024" in comparison(study)[0] and "2.34×" in comparison(study)[0]
    figures = (
        PublishedFigure("Base", "baseline", 1.0, 300.0, None, "elsewhere"),
        PublishedFigure("Best", "best", 3.0, 80.0, 90.0, "elsewhere"),
    )
    lines = comparison(dataclasses.replace(study, recipe=dataclasses.replace(recipe, published=figures)))
    assert lines[0] == "- Published (elsewhere, their CPU): Best 3.000 vs Base 1.000 it/s = 3.00×, 80.0 MB vs 300.0 MB."
    assert "published Best: 3.00×" in lines[-1]
    without = comparison(dataclasses.replace(study, recipe=dataclasses.replace(recipe, published=())))
    assert not any("ublished" in line for line in without)


def test_cli_reports_a_bad_recipe(tmp_path) -> None:
    import vitedge.commands.study  # noqa: F401 - registers `vitedge study`
    from vitedge.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text("[study]\nspeed_modle = 'x'\n" + BASE)
    result = CliRunner().invoke(app, ["study", "--recipe", str(bad), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, VitedgeError) and "speed_model" in result.exception.hint
    assert not (tmp_path / "out").exists()


def test_gpu_timing_without_a_device_is_a_dash_and_says_why(tmp_path) -> None:
    """--gpu on a machine without CUDA: the runner refuses, the cell is a dash, the notes say why."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tiny = str(save_checkpoint(make_tiny_vit(), tmp_path / "t.safetensors"))
    recipe = dataclasses.replace(parse_study_recipe(BASE), model=tiny, speed_model=tiny, samples=10, runs=1, threads=1)
    study = run_study(recipe, tmp_path / "out", measure=lambda r: measure(r, clock=Ticks(0.001)), gpu=True)
    assert study.baseline.gpu is None and cells(study.baseline, study.baseline)[COLUMNS.index("it/s GPU b1")] == DASH
    assert any("CUDA" in note for note in study.notes)


def test_plot_shows_published_points_without_top1_as_speed_only(tmp_path, figures) -> None:
    """The published Vanilla row has it/s but no top-1: a dotted line at its it/s, labelled so,
    never a cross at a made-up top-1; the others are crosses at their published figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitedge.workflows.report import _plot_published, pareto_plot

    figure, axes = plt.subplots()
    _plot_published(axes, PUBLISHED)
    crosses = axes.collections[0].get_offsets().tolist()
    assert crosses == [[p[1], p[2]] for p in PUBLISHED if p[2] is not None]
    speed_only = [(line.get_xdata()[0], line.get_label()) for line in axes.get_lines()]
    assert speed_only == [(p[1], f"{p[0]} (published it/s; no top-1 published)") for p in PUBLISHED if p[2] is None]
    plt.close(figure)
    pareto_plot([], tmp_path / "p.png", published=PUBLISHED)  # no measured rows yet: the published ones alone
    plot = figures["p.png"]
    assert plot["size"] == (1320, 660) and plot["scatters"] == [[tuple(c) for c in crosses]]
    assert [(label, x[0]) for _, label, x, _ in plot["lines"]] == [(label, x) for x, label in speed_only]


def test_study_plot_puts_only_comparable_things_on_its_axes(tiny_study, tmp_path, figures) -> None:
    """Item 9 of the first-hour issue: speedup over the same run's Vanilla against Δ top-1 (not
    absolute it/s beside published it/s of another model and machine); published rows as their
    own speedup ratios; every point numbered, named in the key, no two labels overlapping."""
    from tests.support import key_names, label_numbers, overlapping_labels
    from vitedge.workflows.study_report import cpu_b1_of, top1_of, write_study

    recipe, study, _, _, _ = tiny_study
    write_study(study, tmp_path)
    plot = figures["study.png"]
    base, rows = study.baseline, study.results[1:]
    assert plot["scatters"][0] == [(cpu_b1_of(r) / cpu_b1_of(base), top1_of(r) - top1_of(base)) for r in rows]
    ratios = {p.label: p.it_per_s_cpu / recipe.published_as("baseline").it_per_s_cpu for p in recipe.published[1:]}
    published = {label.split(":")[0]: x[0] for _, label, x, _ in plot["lines"] if "(published" in label}
    assert published == ratios and published["DeiT-B + DQ"] == pytest.approx(2.34)
    assert key_names(plot["key"]) == [r.row.label for r in rows]
    assert sorted(label_numbers(plot["labels"]), key=int) == [str(n) for n in range(1, len(rows) + 1)]
    assert not overlapping_labels(plot["label_boxes"])
    assert "speedup" in plot["titles"][0][1] and "Δ top-1" in plot["titles"][0][2]
