from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support import key_names, label_numbers, overlapping_labels
from tests.support.cpus import (
    ARM_BF16,
    AVX2_ONLY,
    OPENVINO_BF16,
    OPENVINO_BF16_HERE,
    OPENVINO_NO_BF16,
    X86_BF16,
    simulate,
)
from vitedge.core.cpu import CpuInfo
from vitedge.core.errors import VitedgeError
from vitedge.models import save_checkpoint
from vitedge.targets.measure import Measurement, MeasureRequest, measure
from vitedge.workflows.pipeline import run_pipeline
from vitedge.workflows.recipe import DEFAULT_ROWS, Recipe
from vitedge.workflows.report import Parity


def quick_measure(request: MeasureRequest) -> Measurement:
    """In-process and short: the isolation itself is tested in test_measure."""
    return measure(dataclasses.replace(request, runs=3, min_seconds=0.0))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from tests.support import make_tiny_vit

    return save_checkpoint(make_tiny_vit(), tmp_path_factory.mktemp("model") / "tiny.safetensors")


# Bounds per row, from the product's gates (exporter.parity.DEFAULT_TOLERANCES) and what
# each precision really computes on the tiny ViT (logits up to ~0.6): fp32 rows agree to
# ~1e-6; fp16 weights computed in f32 give ~2e-4 (f16 compute ~4e-4); bf16 execution, a
# runtime default on AVX512-BF16/AMX CPUs, gives ~3e-3 and cosine_min ~0.99997, so it fails
# both the fp32 and the fp16 bounds here. int8 rows measure max_abs 5e-3..5e-2.
FP32_ROWS = ("ONNX fp32", "OpenVINO fp32")
FP16_ROWS = ("OpenVINO fp16",)
INT8_ROWS = ("PyTorch dynamic int8", "ONNX int8 dynamic", "ONNX int8 static", "OpenVINO int8")
INT8_BF16_ROW = "OpenVINO int8, bf16 float parts"  # a default row where this CPU computes bf16 natively
HAS_BF16 = OPENVINO_BF16_HERE


def check_parity(name: str, parity: Parity | None) -> None:
    assert parity is not None, name
    if name in FP32_ROWS:
        assert parity.passed and parity.max_abs < 1e-4 and parity.cosine_min > 0.9999, (name, parity)
    elif name in FP16_ROWS:
        assert parity.passed and 1e-6 < parity.max_abs < 1e-3 and parity.cosine_min > 0.99999, (name, parity)
    else:
        assert name in INT8_ROWS or name == INT8_BF16_ROW, name
        assert parity.cosine_mean > 0.995 and parity.max_abs < 0.15, (name, parity)
        # random weights tie their logits (mean top-2 gap 0.09), so top-1 agreement on 40
        # images is not asserted; the gate's verdict must still follow from its own bounds
        assert parity.passed == (parity.cosine_mean >= 0.995 and parity.top1_agreement >= 0.97), (name, parity)


def test_run_end_to_end_on_a_tiny_model(tiny_checkpoint: Path, tmp_path: Path, figures: dict[str, dict]) -> None:
    """The default rows of this CPU: OpenVINO int8-bf16 too where it computes bf16 natively."""
    recipe = dataclasses.replace(
        Recipe(), model=str(tiny_checkpoint), samples=40, calibration_samples=16, batches=(1, 4), threads=1, name="tiny"
    )
    rows = run_pipeline(recipe, tmp_path / "out", measure=quick_measure)
    names = [row.measurement.name for row in rows]
    assert (
        names
        == [
            "PyTorch fp32",
            "PyTorch dynamic int8",
            "ONNX fp32",
            "ONNX int8 dynamic",
            "ONNX int8 static",
            "OpenVINO fp32",
            "OpenVINO fp16",
            "OpenVINO int8",
        ]
        + [INT8_BF16_ROW] * HAS_BF16
    )
    assert rows[0].baseline and rows[0].parity is None
    for row in rows[1:]:
        assert row.measurement.accuracy.samples == 40
        check_parity(row.measurement.name, row.parity)
    by_name = {row.measurement.name: row for row in rows}
    assert by_name["ONNX fp32"].measurement.accuracy.top1 == pytest.approx(rows[0].measurement.accuracy.top1)
    assert by_name["ONNX int8 dynamic"].measurement.size_mb < 0.5 * by_name["ONNX fp32"].measurement.size_mb
    assert by_name["PyTorch dynamic int8"].measurement.size_mb < 0.6 * rows[0].measurement.size_mb
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == len(rows) and results["calibration"]["disjoint_from_eval"]
    assert results["recipe"]["rows"] == list(DEFAULT_ROWS) + ["openvino:int8-bf16"] * HAS_BF16
    assert ("computes bf16 natively" in results["recipe"]["rows_chosen"]) == HAS_BF16
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == 1 + len(rows)  # header + rows
    assert ("- rows: the defaults, with openvino:int8-bf16" in report) == HAS_BF16
    plotted = figures["pareto.png"]
    assert plotted["size"] == (1320, 660)  # figsize 11×5.5 in at 120 dpi, read back from the PNG
    np.testing.assert_allclose(
        plotted["scatters"][0], [(row.measurement.timing(1).it_per_s, row.measurement.accuracy.top1) for row in rows]
    )
    # every point numbered, every number named in the key, no two labels on top of each other
    assert sorted(label_numbers(plotted["labels"]), key=int) == [str(n) for n in range(1, len(rows) + 1)]
    assert key_names(plotted["key"]) == [row.measurement.name for row in rows]
    assert not overlapping_labels(plotted["label_boxes"])
    assert (
        sorted(p.name for p in (out / "artifacts").iterdir())
        == [
            "onnx-fp32",
            "onnx-int8-dynamic",
            "onnx-int8-static",
            "openvino-fp16",
            "openvino-fp32",
            "openvino-int8",
        ]
        + ["openvino-int8-bf16"] * HAS_BF16
    )
    assert not list(tmp_path.glob(".*"))  # nothing left from staging
    with pytest.raises(VitedgeError, match="already exists"):
        run_pipeline(recipe, out, measure=quick_measure)


def test_the_pytorch_int8_row_has_a_scale_per_output_channel(tiny_vit, tmp_path: Path) -> None:
    """`vitedge run`'s "PyTorch dynamic int8" row is the quantize-dynamic step's default, per
    channel (a random ViT-B per tensor falls to cosine 0.93); red with the row built per tensor."""
    from vitedge.compress.registry import load_model
    from vitedge.workflows.pipeline import runner_spec

    spec = runner_spec(tiny_vit, "torch:int8-dynamic", tmp_path, threads=1, target="cpu")
    fc1 = load_model(spec.path).module.get_submodule("blocks.0.mlp.fc1")
    assert fc1.state_dict()["weight_scale"].numel() == fc1.out_features == 128


@pytest.mark.parametrize("pretrained", [False, True])
def test_a_run_of_a_model_name_gates_logits_only_where_its_weights_are_random(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch, pretrained: bool
) -> None:
    """`vitedge run` on a model name without --pretrained (random weights, whose classes are
    near-ties) gates its rows' logits, not their top-1 agreement; a checkpoint's rows, and a
    name's with --pretrained, are gated on agreement too. The weights here are the checkpoint's:
    what is checked is which bounds each row is held to."""
    from vitedge.workflows import parity, pipeline

    held = []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003 - compare_logits' own
        report = compare_logits(*args, **kwargs)
        held.append(report.tolerance)
        return report

    compare_logits = parity.compare_logits
    monkeypatch.setattr(parity, "compare_logits", spy)
    loaded = pipeline.load_model(str(tiny_checkpoint))
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: loaded)
    for spec in ("vit_tiny_patch16_224", str(tiny_checkpoint)):
        recipe = dataclasses.replace(
            Recipe(),
            model=spec,
            pretrained=pretrained,
            rows=("torch:fp32", "onnx:int8-dynamic"),
            samples=16,
            batches=(1,),
            threads=1,
            name="tiny",
        )
        run_pipeline(recipe, tmp_path / f"out-{len(held)}", measure=quick_measure)
    gated = {"cosine_mean": 0.995, "top1_agreement": 0.97}
    assert held == [gated if pretrained else {"cosine_mean": 0.995}, gated]


@pytest.mark.parametrize("row", ["openvino:int8-bf16", "openvino:bf16", "torch:bf16"])
def test_run_refuses_a_bf16_row_before_any_work_on_a_cpu_without_bf16(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch, row: str
) -> None:
    """On a CPU without native bf16 (simulated, whatever this one is) a recipe with a bf16 row
    fails in one line before the model is loaded or any row is measured."""
    import vitedge.core.cpu
    import vitedge.workflows.pipeline
    from vitedge.core.cpu import CpuInfo

    monkeypatch.setattr(
        vitedge.core.cpu, "probe_cpu", lambda: CpuInfo("x86_64", "AVX2-only", 2, frozenset({"avx2", "fma"}))
    )
    loads: list[str] = []
    monkeypatch.setattr(vitedge.workflows.pipeline, "load_model", lambda *a, **k: loads.append("load"))
    recipe = dataclasses.replace(Recipe(), model=str(tiny_checkpoint), rows=("torch:fp32", "onnx:fp32", row))
    with pytest.raises(VitedgeError, match="no native bf16"):
        run_pipeline(recipe, tmp_path / "out", measure=lambda request: loads.append("measure"))
    assert loads == [] and not (tmp_path / "out").exists()


def test_a_torch_bf16_row_on_a_gpu_target_is_not_held_to_the_cpu(monkeypatch) -> None:
    """PyTorch bf16 on target cuda runs on the GPU (targets.torch refuses it on a CPU only), so
    the up-front check does not refuse it on a CPU without bf16; an OpenVINO bf16 export still is
    (its parity check runs on this CPU)."""
    import vitedge.core.cpu
    from vitedge.core.cpu import CpuInfo
    from vitedge.workflows.pipeline import check_rows

    monkeypatch.setattr(
        vitedge.core.cpu, "probe_cpu", lambda: CpuInfo("x86_64", "AVX2-only", 2, frozenset({"avx2", "fma"}))
    )
    check_rows(("torch:fp32", "torch:bf16"), "cuda")
    with pytest.raises(VitedgeError, match="no native bf16"):
        check_rows(("torch:fp32", "openvino:int8-bf16"), "cuda")


def test_pytorch_dynamic_int8_off_the_cpu_is_refused_before_any_work(monkeypatch, tiny_vit) -> None:
    """Its quantized Linears have CPU kernels only: a `torch:int8-dynamic` row on target cuda,
    and an int8 checkpoint opened for cuda (`vitedge bench FILE --target cuda`), are refused in
    one line before the module moves (before: torch's own error once earlier rows had run).
    Red without the check."""
    import torch

    from vitedge.compress.quantize import quantize_dynamic
    from vitedge.targets.torch import open_torch
    from vitedge.workflows.pipeline import check_rows

    check_rows(("torch:fp32", "torch:int8-dynamic"), "cpu")
    with pytest.raises(VitedgeError, match="PyTorch dynamic int8 runs on the CPU only, not on target cuda"):
        check_rows(("torch:fp32", "torch:int8-dynamic"), "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    int8 = quantize_dynamic(tiny_vit.module).model
    with pytest.raises(VitedgeError, match="CPU only"):
        open_torch(int8, precision="fp32", device="cuda")


@pytest.mark.parametrize("row", ["openvino:int8-bf16", "openvino:bf16"])
def test_an_openvino_bf16_row_is_refused_where_openvino_computes_no_bf16(monkeypatch, row: str) -> None:
    """An ARM CPU with bf16: PyTorch computes bf16 there, OpenVINO's plugin would run f32 under
    a bf16 label; the row is refused up front, naming OpenVINO and what its plugin offers."""
    from vitedge.workflows.pipeline import check_rows

    simulate(monkeypatch, ARM_BF16, OPENVINO_NO_BF16)
    check_rows(("torch:fp32", "torch:bf16"), "cpu")
    with pytest.raises(
        VitedgeError, match=r"CPU plugin computes no bf16 on this CPU, though it has bf16 \(the plugin offers FP32"
    ):
        check_rows(("torch:fp32", row), "cpu")


class Stop(Exception):
    """Ends a run at its first measurement: what it built before that is the test's."""


@pytest.mark.parametrize(
    "cpu,openvino,added",
    [
        (AVX2_ONLY, OPENVINO_NO_BF16, ()),
        (X86_BF16, OPENVINO_BF16, ("openvino:int8-bf16",)),
        (ARM_BF16, OPENVINO_NO_BF16, ()),
    ],
    ids=["no-bf16", "bf16", "arm-bf16"],
)
def test_run_builds_the_default_rows_of_the_cpu_it_runs_on(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch, cpu: CpuInfo, openvino: tuple[str, ...], added: tuple[str, ...]
) -> None:
    """A recipe without rows builds rows_for(recipe), as the simulated CPU and OpenVINO give them,
    not the recipe's field; nothing is exported or measured (runner_spec is stubbed), so it holds
    on any CPU."""
    import vitedge.workflows.pipeline

    simulate(monkeypatch, cpu, openvino)
    built: list[str] = []
    monkeypatch.setattr(vitedge.workflows.pipeline, "runner_spec", lambda loaded, kind, folder, **_: built.append(kind))
    recipe = dataclasses.replace(Recipe(), model=str(tiny_checkpoint), samples=8, calibration_samples=4)

    def stop(request: MeasureRequest) -> Measurement:
        raise Stop

    with pytest.raises(Stop):
        run_pipeline(recipe, tmp_path / "out", measure=stop)
    assert tuple(built) == DEFAULT_ROWS + added and not (tmp_path / "out").exists()


def test_run_needs_the_reference_row(tiny_checkpoint: Path, tmp_path: Path) -> None:
    recipe = dataclasses.replace(Recipe(), model=str(tiny_checkpoint), rows=("onnx:fp32",))
    with pytest.raises(VitedgeError, match="torch:fp32"):
        run_pipeline(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bench_labels_a_compressed_checkpoint_by_what_it_holds(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """`vitedge bench` of `vitedge compress` checkpoints: the int8 and fp16 ones are labelled by
    what the loaded module holds, and neither becomes the "fastest fp32" yardstick (before:
    every checkpoint was "f32", an int8 checkpoint the fp32 yardstick). Red with the runner's
    label or bench's precision taken from the request instead of the module."""
    from vitedge.compress.registry import apply_steps, load_model
    from vitedge.workflows.pipeline import bench
    from vitedge.workflows.report import fastest_fp32

    base = load_model(str(tiny_checkpoint))
    files = [str(tiny_checkpoint)]
    for step in ("quantize-dynamic", "fp16"):
        files.append(str(save_checkpoint(apply_steps(base, [(step, {})]), tmp_path / f"{step}.safetensors")))
    rows = bench(files, samples=8, batches=(1,), threads=1, measure=quick_measure)
    held = [(row.measurement.precision, row.measurement.execution_precision) for row in rows]
    assert held == [("fp32", "f32"), ("int8-dynamic", "int8+f32"), ("fp16", "f16")]
    assert fastest_fp32(rows) is rows[0]


def test_bench_takes_a_transformers_folder_as_a_model(tmp_path: Path) -> None:
    """A save_pretrained folder is a model to `vitedge bench`, as to every other command (before:
    every folder was read as an artifact, "not a vitedge artifact (no manifest.json)")."""
    from tests.support.families import hf_folder
    from vitedge.workflows.pipeline import bench

    folder = hf_folder(tmp_path / "hf")
    (row,) = bench([str(folder)], samples=8, batches=(1,), threads=1, measure=quick_measure)
    assert row.measurement.name == f"{folder} (PyTorch)"
    assert (row.measurement.precision, row.measurement.execution_precision) == ("fp32", "f32")
    assert row.measurement.accuracy is not None and row.measurement.accuracy.samples == 8


def test_cifar10_labels_scored_by_a_model_of_other_classes_are_warned_not_refused() -> None:
    """An ImageNet model on CIFAR-10: labels 0-9 are in its range, so they are scored, but 0 is
    "airplane" to the data and "tench" to the model; the top-1 is said to be no accuracy (before:
    printed as one). A model with CIFAR-10's names, or with no names, is not warned about."""
    import warnings

    from vitedge.calibration.preprocess import DataConfig
    from vitedge.calibration.sources import CIFAR10_CLASSES, array_image_set
    from vitedge.workflows.pipeline import prepare_eval_data

    images = array_image_set("c10", np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), CIFAR10_CLASSES)
    imagenet = DataConfig((3, 32, 32), labels=tuple(f"class {i}" for i in range(1000)))
    with pytest.warns(UserWarning, match="c10 has CIFAR-10's labels and the model has its own 1000 classes"):
        prepare_eval_data(images, imagenet, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_eval_data(images, DataConfig((3, 32, 32), num_classes=10, labels=CIFAR10_CLASSES), None)
        prepare_eval_data(images, DataConfig((3, 32, 32)), None)


def test_a_run_on_class_folders_with_a_loose_image_says_why_it_has_no_top1(tmp_path: Path) -> None:
    """`vitedge run`/`bench --data pets/` where pets/ holds cat/, dog/ and one stray image: the
    top-1 column was empty without a word."""
    from PIL import Image

    from vitedge.calibration.preprocess import DataConfig
    from vitedge.calibration.sources import open_source
    from vitedge.workflows.pipeline import prepare_eval_data

    for name in ("cat/a.png", "dog/b.png", "stray.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / name)
    images = open_source(str(tmp_path))
    with pytest.warns(UserWarning, match=r"has no labels \(1 image\(s\) lie beside .*stray.png\): no top-1"):
        assert prepare_eval_data(images, DataConfig((3, 32, 32)), None).labels is None
    with warnings.catch_warnings():  # a flat folder is unlabelled as meant: no warning
        warnings.simplefilter("error")
        prepare_eval_data(dataclasses.replace(images, unlabelled_because=""), DataConfig((3, 32, 32)), None)


def test_cli_run_and_eval_and_bench(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from vitedge.cli import app

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[model]\nspec = "{tiny_checkpoint}"\n[export]\nrows = ["torch:fp32", "onnx:fp32"]\n[data]\nsamples = 16\n[bench]\nbatches = [1]\nruns = 3\nthreads = 1\n'
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["measurement"]["name"] for r in rows] == ["PyTorch fp32", "ONNX fp32"]
    # a recipe without [run] name is titled by what it measured, not by the built-in run
    title = f"{tiny_checkpoint} on cifar10"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["title"] == title
    assert (tmp_path / "run" / "report.md").read_text().startswith(f"# {title}\n")
    result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--data", "cifar10", "--samples", "50", "--json"])
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.stdout)
    assert accuracy["samples"] == 50 and 0.0 <= accuracy["top1"] <= accuracy["top5"] <= 100.0
    artifact = tmp_path / "run" / "artifacts" / "onnx-fp32"
    result = runner.invoke(
        app,
        [
            "bench",
            str(artifact),
            str(tiny_checkpoint),
            "--samples",
            "20",
            "--batch",
            "1",
            "--runs",
            "3",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and rows[0]["measurement"]["accuracy"]["top1"] == pytest.approx(
        rows[1]["measurement"]["accuracy"]["top1"]
    )
    assert np.isfinite(rows[0]["measurement"]["timings"][0]["it_per_s"])


def test_a_folder_of_the_models_classes_scores_as_the_same_images_labelled_by_number(
    tmp_path: Path, cifar_test
) -> None:
    """`vitedge eval vitedge-cifar10 --data pets/` (pets/cat/*.png, pets/dog/*.png: real CIFAR-10
    test images) scored 0% top-1: the folders were numbered 0 and 1 (airplane, automobile). Now
    the folder scores exactly as a .npz of the same images with CIFAR-10's labels 3 and 5, and
    so do the held-out set `vitedge quantize`/`sensitivity` judge int8 on, a step's data and a
    distillation's."""
    from PIL import Image

    from vitedge.calibration.sources import open_source
    from vitedge.compress.pipeline import step_data
    from vitedge.compress.registry import load_model
    from vitedge.compress.train import images_to_tensors
    from vitedge.workflows.int8_eval import evaluation_set
    from vitedge.workflows.pipeline import evaluate

    chosen = [int(i) for c in (3, 5) for i in np.flatnonzero(cifar_test.labels == c)[:12]]
    for index in chosen:
        folder = tmp_path / "pets" / cifar_test.class_names[int(cifar_test.labels[index])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cifar_test.get(index)).save(folder / f"{index:05d}.png")
    np.savez(tmp_path / "pets.npz", x=np.stack([cifar_test.get(i) for i in chosen]), y=cifar_test.labels[chosen])
    by_folder = evaluate("vitedge-cifar10", str(tmp_path / "pets"), samples=None)
    by_number = evaluate("vitedge-cifar10", str(tmp_path / "pets.npz"), samples=None)
    assert by_folder.samples == by_number.samples == 24
    assert by_folder.top1 == by_number.top1 > 30, (by_folder, by_number)
    loaded = load_model("vitedge-cifar10")
    held_out = evaluation_set(loaded, str(tmp_path / "pets"), 24, {}, threads=1)
    assert sorted(held_out.labels.tolist()) == [3] * 12 + [5] * 12
    _, labels = step_data(open_source(str(tmp_path / "pets")), loaded.data_config)
    assert sorted(labels.tolist()) == [3] * 12 + [5] * 12
    _, labels = images_to_tensors(open_source(str(tmp_path / "pets")), loaded.data_config)  # a distillation's
    assert sorted(labels.tolist()) == [3] * 12 + [5] * 12


def test_a_folder_sent_to_a_board_is_the_draw_of_samples_asked_for(tmp_path: Path, cifar_test) -> None:
    """`vitedge bench ART --target ssh://… --data pets/ --samples 4` sent the whole folder (all
    its images evaluated on the board, --samples ignored); now a class-balanced draw of that
    many of its files, copied byte for byte into the same class subfolders; all of them sends
    the folder itself."""
    from PIL import Image

    from vitedge.workflows.pipeline import _image_folder

    source = tmp_path / "pets"
    for label in ("cat", "dog"):
        (source / label).mkdir(parents=True)
        for index in range(5):
            Image.fromarray(cifar_test.get(index)).save(source / label / f"{index}.png")
    sent = _image_folder(str(source), 4, tmp_path / "scratch")
    copies = sorted(p.relative_to(sent) for p in sent.rglob("*.png"))
    assert sent == tmp_path / "scratch" and len(copies) == 4
    assert sorted(p.parts[0] for p in copies) == ["cat", "cat", "dog", "dog"]
    assert all((sent / p).read_bytes() == (source / p).read_bytes() for p in copies)
    assert _image_folder(str(source), None, tmp_path / "unused") == source
    assert _image_folder(str(source), 10, tmp_path / "unused") == source


def test_two_runs_started_the_same_second_keep_both_results(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """`vitedge run` without --out names its folder by the second: a run started in the same
    second as another was refused ("already exists") or, finishing second, replaced it."""
    import datetime
    import types

    from vitedge.cli import app
    from vitedge.commands import run as run_command

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 8, 15, 0)

    monkeypatch.setattr(run_command, "dt", types.SimpleNamespace(datetime=Frozen))  # this module's clock only
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[model]\nspec = "{tiny_checkpoint}"\n[export]\nrows = ["torch:fp32"]\n[data]\nsamples = 8\n[bench]\nbatches = [1]\nruns = 1\nthreads = 1\n'
    )
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", str(recipe)])
        assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (tmp_path / "vitedge-out").iterdir())
    assert runs == ["run-20261207-081500", "run-20261207-081500-2"]
    assert all((tmp_path / "vitedge-out" / name / "results.json").is_file() for name in runs)
