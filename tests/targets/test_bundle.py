"""The board bundle: built from a real ONNX artifact, run by `run_bundle.py` in a fresh
virtualenv that holds only numpy, Pillow and onnxruntime (no torch, no vitedge), and
compared with vitedge's own runner on real CIFAR-10 images."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.boards import check_against_vitedge, one_line_error, run_bundle, vitedge_logits
from vitedge.calibration import preprocess
from vitedge.calibration.sources import CIFAR10_CLASSES
from vitedge.core import cpu, errors
from vitedge.core.errors import VitedgeError
from vitedge.core.manifest import read_manifest, verify_checksums
from vitedge.targets.bundle_build import build_bundle, is_bundle
from vitedge.targets.runners import open_artifact


def test_bundle_holds_artifact_runner_and_verbatim_preprocessing(onnx_artifact, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    assert is_bundle(bundle) and not is_bundle(onnx_artifact)
    assert sorted(p.name for p in bundle.iterdir()) == [
        "cpu.py",
        "errors.py",
        "labels.txt",
        "manifest.json",
        "model.onnx",
        "preprocess.py",
        "requirements.txt",
        "run_bundle.py",
    ]
    assert (bundle / "preprocess.py").read_bytes() == Path(preprocess.__file__).read_bytes()
    assert (bundle / "cpu.py").read_bytes() == Path(cpu.__file__).read_bytes()
    assert (bundle / "errors.py").read_bytes() == Path(errors.__file__).read_bytes()
    assert (bundle / "model.onnx").read_bytes() == (onnx_artifact / "model.onnx").read_bytes()
    assert (bundle / "labels.txt").read_text().split("\n")[:10] == list(CIFAR10_CLASSES)
    requirements = [
        line for line in (bundle / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert requirements == ["numpy>=1.24", "pillow>=10", "onnxruntime>=1.17"]
    manifest = read_manifest(bundle)
    verify_checksums(bundle, manifest)  # the bundle is itself a valid artifact
    assert manifest["bundle"]["runtime"] == "onnxruntime" and manifest["precision"] == "fp32"
    assert {e["path"] for e in manifest["files"]} == {
        "cpu.py",
        "errors.py",
        "labels.txt",
        "model.onnx",
        "preprocess.py",
        "requirements.txt",
        "run_bundle.py",
    }
    batch = np.zeros((2, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(open_artifact(bundle)(batch), open_artifact(onnx_artifact)(batch))


def test_build_refuses_existing_out_corrupt_artifact_and_out_inside(onnx_artifact, tmp_path):
    out = build_bundle(onnx_artifact, tmp_path / "bundle")
    with pytest.raises(VitedgeError, match="already exists"):
        build_bundle(onnx_artifact, out)
    assert build_bundle(onnx_artifact, out, force=True) == out
    with pytest.raises(VitedgeError, match="inside the artifact"):
        build_bundle(onnx_artifact, onnx_artifact / "bundle")
    with pytest.raises(VitedgeError, match="unknown bundle runtime"):
        build_bundle(onnx_artifact, tmp_path / "x", runtime="tflite")
    broken = tmp_path / "broken"
    shutil.copytree(onnx_artifact, broken)
    with (broken / "model.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(VitedgeError, match="sha256"):
        build_bundle(broken, tmp_path / "from-broken")
    assert not (tmp_path / "from-broken").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def bundle_with_cli(artifact: Path, out: Path) -> Path:
    """`vitedge bundle ARTIFACT --out OUT`, as a user types it (runtime: the artifact's own)."""
    from typer.testing import CliRunner

    from vitedge.cli import app

    done = CliRunner().invoke(app, ["bundle", str(artifact), "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out


@pytest.mark.parametrize(
    ("artifact_fixture", "precision"), [("default_int8_artifact", "int8-dynamic"), ("onnx_artifact", "fp32")]
)
def test_classify_in_fresh_venv_matches_vitedge_top5(
    artifact_fixture, precision, request, bundle_python, png_images, tmp_path
):
    """Acceptance (issue 6): `vitedge bundle` on the default model's ONNX int8 artifact, then
    `run_bundle.py classify` in a venv with only numpy, Pillow and onnxruntime gives the same
    top-5 (and the same probabilities) as vitedge's runner on real CIFAR-10 PNGs."""
    artifact = request.getfixturevalue(artifact_fixture)
    bundle = bundle_with_cli(artifact, tmp_path / "bundle")
    assert (
        read_manifest(bundle)["precision"] == precision and read_manifest(bundle)["bundle"]["runtime"] == "onnxruntime"
    )
    done = run_bundle(bundle_python, bundle, "classify", "--json", *map(str, png_images), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = vitedge_logits(artifact, png_images)
    for item, path in zip(result["images"], png_images, strict=True):
        assert item["image"] == str(path) and len(item["top"]) == 5
        assert [t["label"] for t in item["top"]] == [CIFAR10_CLASSES[t["index"]] for t in item["top"]]
        assert [t["probability"] for t in item["top"]] == sorted((t["probability"] for t in item["top"]), reverse=True)
    check_against_vitedge(bundle_python, bundle, png_images, expected, precision, tmp_path)
    text = run_bundle(bundle_python, bundle, "classify", str(png_images[0]), cwd=tmp_path)
    assert text.returncode == 0 and text.stdout.splitlines()[1].split()[1] == result["images"][0]["top"][0]["label"]


def test_bench_and_eval_in_fresh_venv(onnx_artifact, bundle_python, image_folder, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    done = run_bundle(
        bundle_python,
        bundle,
        "bench",
        "--batch",
        "2",
        "--seconds",
        "0.3",
        "--warmup",
        "2",
        "--threads",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    bench = json.loads(done.stdout)
    assert bench["batch"] == 2 and bench["runs"] >= 10 and bench["runtime"] == "onnxruntime"
    assert bench["it_per_s"] == pytest.approx(2000.0 / bench["latency_ms"]["p50"])
    assert bench["board"]["versions"]["onnxruntime"] and bench["board"]["machine"] and bench["board"]["cpu"]
    # --threads 1 as the session reports it, and as the process's CPU time shows: one thread
    # cannot spend more than one CPU second per second (the percentiles: test_bench_arithmetic)
    assert bench["detail"]["threads"] == 1 and 0 < bench["cpu_per_wall"] <= 1.05, bench
    default = json.loads(
        run_bundle(bundle_python, bundle, "bench", "--seconds", "0.1", "--warmup", "1", "--json", cwd=tmp_path).stdout
    )
    assert default["detail"]["threads"] == 0  # read back, not echoed: ORT's own default

    done = run_bundle(bundle_python, bundle, "eval", str(image_folder), "--batch", "16", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    paths = sorted(image_folder.rglob("*.png"))
    predicted = vitedge_logits(onnx_artifact, paths).argmax(axis=1)
    truth = np.array([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    assert scored["count"] == 40 and scored["skipped"] == 0
    assert scored["correct"] == int((predicted == truth).sum())
    assert scored["top1"] == pytest.approx(100.0 * scored["correct"] / 40)
    assert scored["classes"]["cat"] == 3  # folder names that are model labels map by name


def test_refuses_a_modified_model(onnx_artifact, bundle_python, png_images, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    done = run_bundle(bundle_python, bundle, "classify", str(png_images[0]), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "model.onnx does not match the sha256" in one_line_error(done)
    (bundle / "model.onnx").unlink()
    assert "missing" in one_line_error(run_bundle(bundle_python, bundle, "info", cwd=tmp_path))


def test_bad_input_gives_one_line_errors(onnx_artifact, bundle_python, png_images, tmp_path):
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    (tmp_path / "fake.png").write_text("not an image")
    cases = {
        ("classify", str(tmp_path / "absent.png")): "no such file",
        ("classify", str(tmp_path / "fake.png")): "not a readable image",
        ("classify", str(tmp_path)): "is a folder",
        ("bench", "--batch", "0"): "--batch must be",
        ("eval", str(png_images[0])): "is not a folder",
        ("eval", str(tmp_path / "bundle")): "no class subfolders",
        ("frobnicate",): "invalid choice",
        ("bench", "--seconds", "soon"): "invalid float value",
    }
    for args, expected in cases.items():
        done = run_bundle(bundle_python, bundle, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in one_line_error(done), args


def test_missing_runtime_names_the_pip_command(onnx_artifact, bundle_python, tmp_path):
    """An openvino bundle run by a Python without openvino: exit 3 and the pip line to run."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle", runtime="openvino")
    assert "openvino>=2024.4" in (bundle / "requirements.txt").read_text()
    done = run_bundle(bundle_python, bundle, "bench", "--seconds", "0.1", cwd=tmp_path)
    assert done.returncode == 3
    line = one_line_error(done)
    assert f"openvino is not installed for {bundle_python}" in line
    assert f"{bundle_python} -m pip install -r {bundle / 'requirements.txt'}" in line


def test_openvino_bundle_agrees_with_onnxruntime(onnx_artifact, png_images, tmp_path):
    """The same bundle code on the openvino runtime (this interpreter has it) computes what
    vitedge's ORT runner computes, within the fp32 gate: it must ask for f32, since the CPU
    plugin's own default is bf16 on AVX512-BF16/AMX CPUs (and f16 on ARM)."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle", runtime="openvino")
    check_against_vitedge(
        Path(sys.executable), bundle, png_images, vitedge_logits(onnx_artifact, png_images), "fp32", tmp_path
    )
    done = run_bundle(
        Path(sys.executable),
        bundle,
        "bench",
        "--seconds",
        "0.1",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        cwd=tmp_path,
    )
    bench = json.loads(done.stdout)
    assert bench["detail"]["inference_precision"] == "f32" and bench["detail"]["threads"] == 1, bench["detail"]


def test_openvino_bundle_compiles_a_static_shape_per_batch_size(onnx_artifact, tmp_path):
    """As vitedge's own runner: a dynamic batch runs through a compile for that batch size, its
    input static (OpenVINO's ARM plugin computes int8 wrong on a dynamic one), one kept at a time."""
    import importlib.util

    bundle = build_bundle(onnx_artifact, tmp_path / "bundle", runtime="openvino")
    spec = importlib.util.spec_from_file_location("bundle_runner", bundle / "run_bundle.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    model = runner.Model(bundle, json.loads((bundle / runner.MANIFEST).read_text()), threads=1)
    images = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    whole = model(images)
    for size in (1, 2, 3):
        np.testing.assert_allclose(model(images[:size]), whole[:size], rtol=0, atol=1e-5)
        (compiled,) = model.compiled_by_batch.values()
        assert list(compiled.input(0).get_partial_shape().to_shape()) == [size, 3, 32, 32]


class FakeTime:
    """perf_counter advances only when the fake model runs; process_time at half that rate."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.now / 2


def test_bench_arithmetic_on_a_fake_clock(monkeypatch, tmp_path):
    """run_bundle's bench on a fake model and clock: a first call of 500 ms (load + first
    answer, not timed with the rest), 20 calls of 10 ms, 4 of 100 ms, 1 of 300 ms; p50/p90/p99
    and it/s are numpy's linear percentiles of exactly those 25. On a board whose kernel rates
    CPU 7 fastest of 8 (a made-up sysfs), the process is kept there before the model loads."""
    from vitedge.targets.bundle import run_bundle as runner

    events: list = []
    for number in range(8):
        (tmp_path / f"cpu{number}").mkdir()
        (tmp_path / f"cpu{number}" / "cpu_capacity").write_text("1024" if number == 7 else "400")
    monkeypatch.setattr(cpu, "CPU_SYSFS", str(tmp_path))
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(cpu.os, "sched_setaffinity", lambda _pid, cpus: events.append(("pinned", tuple(cpus))))
    clock = FakeTime()
    durations = iter([0.500] + [0.0] * 2 + [0.010] * 20 + [0.100] * 4 + [0.300])

    class FakeModel:
        runtime, versions, detail = "fake", {}, {"threads": 1}

        def __init__(self, *args: object) -> None:
            events.append("model loaded")

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            clock.now += next(durations)
            return np.zeros((len(batch), 10), np.float32)

    monkeypatch.setattr(runner, "time", clock)
    monkeypatch.setattr(runner, "Model", FakeModel)
    # in a bundle preprocess.py and cpu.py sit beside the runner; here they are vitedge's own (the same files)
    monkeypatch.setattr(runner, "_import_base", lambda: (np, None, preprocess))
    monkeypatch.setattr(runner, "_vendored", {"cpu": cpu}.__getitem__)  # likewise cpu.py
    args = runner.parser().parse_args(
        ["bench", "--batch", "4", "--seconds", "0.5", "--warmup", "2", "--min-runs", "25", "--threads", "1"]
    )
    result = runner.bench(args, {"data_config": {"input_size": [3, 8, 8]}, "format": "onnx", "precision": "fp32"})
    sorted_ms = sorted([10.0] * 20 + [100.0] * 4 + [300.0])
    assert result["runs"] == 25 and result["warmup"] == 2
    assert result["first_inference_ms"] == pytest.approx(500.0)
    assert result["latency_ms"]["p50"] == pytest.approx(10.0)
    assert result["latency_ms"]["p90"] == pytest.approx(100.0)  # rank 21.6 of 0..24: inside the 100 ms block
    assert result["latency_ms"]["p99"] == pytest.approx(100.0 + 0.76 * 200.0)  # rank 23.76
    assert result["latency_ms"]["mean"] == pytest.approx(np.mean(sorted_ms))
    assert result["it_per_s"] == pytest.approx(4 * 1000.0 / 10.0)
    assert result["cpu_per_wall"] == pytest.approx(0.5)
    assert events == [("pinned", (7,)), "model loaded"]  # before the runtime starts its threads
    assert result["timed_on"]["cpus"] == [7] and result["timed_on"]["of"] == list(range(8))


def test_bundle_command(onnx_artifact, tmp_path):
    from typer.testing import CliRunner

    from vitedge.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["bundle", str(onnx_artifact), "--out", str(tmp_path / "b"), "--runtime", "onnxruntime"])
    assert done.exit_code == 0, done.output
    assert f"bundle {tmp_path / 'b'} (onnx fp32, onnxruntime" in " ".join(done.stdout.split())
    assert is_bundle(tmp_path / "b")
    again = runner.invoke(app, ["bundle", str(onnx_artifact), "--out", str(tmp_path / "b")])
    assert isinstance(again.exception, VitedgeError) and "already exists" in again.exception.message


def test_board_session_turns_off_the_graph_passes_the_host_runner_does(onnx_artifact, tmp_path, monkeypatch):
    """A board must run the graph vitedge verified and timed: the bundle's ONNX Runtime session
    turns off the same passes as the host's runner (common-subexpression elimination, which
    undoes static int8's fusable Q/DQ pairs), asked of the real InferenceSession."""
    import onnxruntime as ort

    from vitedge.targets.bundle import run_bundle
    from vitedge.targets.onnxruntime import open_onnx

    asked = []
    session = ort.InferenceSession

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asked.append(tuple(kwargs.get("disabled_optimizers") or ()))
        return session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    run_bundle.Model(bundle, read_manifest(bundle), threads=1)
    open_onnx(onnx_artifact / "model.onnx", precision="fp32", threads=1)
    assert asked == [("CommonSubexpressionElimination",)] * 2


def test_board_eval_reads_nothing_outside_its_folder(tmp_path):
    """The board runner's ImageFolder: a class folder that is a link, and an image that is a
    link to a file elsewhere, are left out and named; a link between the folder's own files is
    read. Without this, eval on a board scored images the user never put in the folder."""
    from vitedge.targets.bundle import run_bundle as runner

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(b"png")
    folder = tmp_path / "data"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        (folder / label / "a.png").write_bytes(b"png")
    (folder / "cat" / "alias.png").symlink_to(folder / "dog" / "a.png")
    (folder / "dog" / "x.png").symlink_to(elsewhere / "x.png")
    (folder / "bird").symlink_to(elsewhere, target_is_directory=True)
    files, targets, mapping, left_out = runner.image_folder(folder, ("bird", "cat", "dog"))
    assert [p.relative_to(folder).as_posix() for p in files] == ["cat/a.png", "cat/alias.png", "dog/a.png"]
    assert targets == [1, 1, 2] and mapping == {"cat": 1, "dog": 2}
    assert left_out == [
        f"{folder / 'bird'}: a link to a folder, which eval does not follow",
        f"{folder / 'dog' / 'x.png'}: a link to {(elsewhere / 'x.png').resolve()}, outside the folder",
    ]
    only_links = tmp_path / "only_links"
    (only_links / "cat").mkdir(parents=True)
    (only_links / "cat" / "x.png").symlink_to(elsewhere / "x.png")
    with pytest.raises(
        runner.BundleError, match=r"images in its class subfolders \(1 left out, e.g. .*outside the folder"
    ):
        runner.image_folder(only_links, ("cat",))


def test_board_eval_numbers_classes_as_the_desktop_does(tmp_path, cifar_test):
    """The board runner and the desktop number one folder's classes alike: by name where every
    class folder is a model label, in sorted order where none is, refused where some are (the
    board used sorted order for a mix, scoring cat/ as airplane) and where sorted order passes
    the model's outputs (the board scored the 11th folder's images as all wrong)."""
    from PIL import Image

    from vitedge.calibration.sources import in_model_numbering, labels_for_model, open_source, require_labels
    from vitedge.targets.bundle import run_bundle as runner

    folder = tmp_path / "data"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        Image.fromarray(cifar_test.get(0)).save(folder / label / "a.png")
    for labels in (CIFAR10_CLASSES, ("n01", "n02")):
        _, targets, _, _ = runner.image_folder(folder, labels)
        assert targets == labels_for_model(open_source(str(folder)), labels).labels.tolist()
    (folder / "other").mkdir()
    Image.fromarray(cifar_test.get(1)).save(folder / "other" / "b.png")
    with pytest.raises(VitedgeError, match="its classes cat, dog are the model's labels but other is not"):
        labels_for_model(open_source(str(folder)), CIFAR10_CLASSES)
    with pytest.raises(runner.BundleError, match="its classes cat, dog are the model's labels but other is not"):
        runner.image_folder(folder, CIFAR10_CLASSES)
    (folder / "other" / "b.png").rename(folder / "stray.png")  # an image beside the class folders
    (folder / "other").rmdir()
    loose = r"has no labels \(1 image\(s\) lie beside its class folders, e.g. stray.png\)"
    with pytest.raises(VitedgeError, match=loose):
        require_labels(open_source(str(folder)), "so", "")
    with pytest.raises(runner.BundleError, match=loose):
        runner.image_folder(folder, CIFAR10_CLASSES)
    numbered = tmp_path / "numbered"  # 11 class folders named by none of the 10 labels
    for number in range(11):
        (numbered / f"{number:02d}").mkdir(parents=True)
        Image.fromarray(cifar_test.get(number)).save(numbered / f"{number:02d}" / "a.png")
    ten = preprocess.DataConfig(num_classes=10, labels=CIFAR10_CLASSES)
    beyond = r"the labels run from 0 to 10.*but the model has 10 classes \(0 to 9\)"
    with pytest.raises(VitedgeError, match=beyond):
        in_model_numbering(open_source(str(numbered)), ten)
    with pytest.raises(runner.BundleError, match=beyond):
        runner.image_folder(numbered, CIFAR10_CLASSES, 10)
    shutil.rmtree(numbered / "10")
    _, targets, _, _ = runner.image_folder(numbered, CIFAR10_CLASSES, 10)
    assert targets == in_model_numbering(open_source(str(numbered)), ten).labels.tolist()


def test_a_board_batch_beyond_its_memory_is_refused_before_any_work(onnx_artifact, tmp_path):
    """The board runner refuses a `bench --batch` whose inputs alone outgrow the board's free
    memory (a 4 GB board's out-of-memory killer otherwise ends it minutes in, as exit 137)."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    done = run_bundle(Path(sys.executable), bundle, "bench", "--batch", "1000000000", "--seconds", "1", cwd=tmp_path)
    assert done.returncode != 0
    assert "batch 1000000000 needs" in one_line_error(done) and "time a smaller --batch" in done.stderr


def test_board_runner_shortens_a_runtime_error_to_its_reason(onnx_artifact, tmp_path):
    """The runner inside a built bundle (loaded from the bundle, with the errors.py shipped
    beside it) gives the line that says why: OpenVINO's errors open with where they were
    raised, and an error without a message was an IndexError before it."""
    import importlib.util

    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    spec = importlib.util.spec_from_file_location("bundled_runner", bundle / "run_bundle.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    located = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nIncorrect weights in bin file!\n")
    assert runner.reason(located) == "Incorrect weights in bin file!"
    assert runner.reason(RuntimeError()) == "RuntimeError"
    assert runner._vendored("errors").__file__ == str(bundle / "errors.py")


def test_a_board_runner_under_a_taskset_reports_the_cpus_it_may_use(onnx_artifact, bundle_python, tmp_path):
    """The bundle's `info` run on one CPU (a real affinity mask, as `taskset -c 0` or a container's
    cpuset gives a board's runner): it reports 1 usable CPU with the shipped `core/cpu.py`, the
    desktop names it on the machine line and warns for 2 threads against it, not against the
    board's core count; a quota reported by a board is named in the same words."""
    import json
    import os
    import subprocess

    from tests.support.boards import clean_env
    from vitedge.workflows.board import board_cpus, board_facts

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU allowed already: no smaller mask to set")
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    first = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [str(bundle_python), str(bundle / "run_bundle.py"), "info", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=120,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)["board"]
    assert board["usable_cpus"] == [1, None]
    cpu, machine = board_facts(board)
    assert (machine["usable_cpus"], machine["cpu_quota"]) == (1, None)
    assert board_cpus(cpu, machine) == (1, "the board's runner may use")
    assert board_cpus(cpu, {**machine, "usable_cpus": None}) == (cpu.cores, "the board has")  # an older bundle
    quota = board_cpus(cpu, {**machine, "usable_cpus": 1, "cpu_quota": 0.5})
    assert quota == (1, "the board's runner may use (a cgroup CPU quota of 0.5 CPUs)")
