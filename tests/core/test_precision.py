"""The precision an artifact is labelled with is the precision its runtime computes in: every
runner states it (never a runtime default, which is bf16 on AVX512-BF16/AMX CPUs and f16 on
ARM for OpenVINO) and records what the runtime reports back. These hold on any CPU: the
configuration is checked as data, the read-back on whatever this CPU is, and bf16 either runs
(native bf16 here) or is refused (no bf16 here), each branch with its own assertion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vitedge.core.precision
import vitedge.targets.detect
from tests.support.cpus import ARM_BF16, AVX2_ONLY, OPENVINO_BF16, OPENVINO_BF16_HERE, OPENVINO_NO_BF16, simulate
from vitedge.core.cpu import parse_cpuinfo
from vitedge.core.errors import VitedgeError
from vitedge.core.precision import float_precision
from vitedge.exporter.export import export_artifact
from vitedge.targets.detect import recommend
from vitedge.targets.onnxruntime import provider_options
from vitedge.targets.openvino import compile_config
from vitedge.targets.runners import open_artifact
from vitedge.targets.torch import open_torch
from vitedge.workflows.parity import tolerance_for, verify_artifact

HAS_BF16 = OPENVINO_BF16_HERE  # the bf16 artifacts here are OpenVINO's


@pytest.mark.parametrize(
    "precision,device,expected",
    [
        ("fp32", "cpu", "f32"),
        ("fp16", "cpu", "f32"),
        ("int8", "cpu", "f32"),
        ("bf16", "cpu", "bf16"),
        ("int8-bf16", "cpu", "bf16"),
        ("fp32", "openvino-gpu", "f32"),
        ("fp16", "openvino-gpu", "f16"),
    ],
)
def test_every_openvino_compile_states_its_precision(precision: str, device: str, expected: str) -> None:
    config = compile_config(precision, device, threads=2)
    assert config["INFERENCE_PRECISION_HINT"] == expected
    assert config["PERFORMANCE_HINT"] == "LATENCY"  # a synchronous caller at any batch: see test_timing_config
    assert config.get("INFERENCE_NUM_THREADS") == (2 if device == "cpu" else None)


def test_unknown_precision_has_no_execution_precision() -> None:
    with pytest.raises(VitedgeError, match="no execution precision"):
        float_precision("int4")


def test_onnxruntime_cuda_fp32_turns_tf32_off(tmp_path: Path) -> None:
    """ORT's CUDA provider runs fp32 MatMuls in TF32 unless told otherwise."""
    assert dict(provider_options("cuda", "fp32", tmp_path))["CUDAExecutionProvider"] == {"use_tf32": "0"}
    assert dict(provider_options("cuda", "int8-dynamic", tmp_path))["CUDAExecutionProvider"] == {"use_tf32": "0"}


@pytest.fixture(scope="module")
def openvino_fp32(tmp_path_factory) -> tuple[Path, object]:
    from tests.support import make_tiny_vit

    loaded = make_tiny_vit()
    return export_artifact(loaded, to="openvino", precision="fp32", out=tmp_path_factory.mktemp("ov") / "fp32"), loaded


def test_openvino_fp32_artifact_computes_in_f32_as_reported(openvino_fp32, monkeypatch) -> None:
    """The product's runner (open_artifact) asks for f32 through compile_config and records
    what the compiled model reports, on this CPU whatever its default would have been."""
    import vitedge.targets.openvino

    folder, _ = openvino_fp32
    asked: list[tuple[str, str]] = []
    real = vitedge.targets.openvino.compile_config
    monkeypatch.setattr(
        vitedge.targets.openvino,
        "compile_config",
        lambda precision, device, **kw: asked.append((precision, device)) or real(precision, device, **kw),
    )
    runner = open_artifact(folder, threads=1)
    assert asked == [("fp32", "cpu")]
    assert runner.info.execution_precision == "f32" and runner.info.detail["inference_precision"] == "f32"
    assert runner.info.detail["hint"] == "LATENCY" and runner.info.threads == 1
    assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()) == "f32"


def _board_model(artifact: Path, precision: str, scratch: Path):  # noqa: ANN202 - the bundle's own Model
    """The board bundle's runner of `artifact`, told its manifest says `precision`."""
    import importlib.util
    import json

    from vitedge.targets.bundle_build import build_bundle

    bundle = build_bundle(artifact, scratch / f"bundle-{artifact.parent.name}-{artifact.name}")
    spec = importlib.util.spec_from_file_location(
        f"runner_{artifact.parent.name}_{artifact.name}", bundle / "run_bundle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = {**json.loads((bundle / module.MANIFEST).read_text()), "precision": precision}
    return module.Model(bundle, manifest, threads=1)


def test_openvino_names_int8_only_for_kernels_that_ran_int8(openvino_fp32, tmp_path: Path) -> None:
    """The int8 in a row's label is read back from the compiled model's runtime graph, kernel by
    kernel, in vitedge's runner and in the board bundle alike: an int8 IR's products run in int8
    kernels; a float IR handed over as int8 (what a plugin that ran every product in float would
    amount to) is labelled by the precision it computed in."""
    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.targets.openvino import open_openvino

    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 16, cache=False)
    int8 = export_artifact(loaded, to="openvino", precision="int8", out=tmp_path / "int8", calibration=calibration)
    runner = open_openvino(int8 / "model.xml", precision="int8", threads=1)
    products = runner.info.detail["products"]
    assert products.get("i8", 0) + products.get("u8", 0) > 0 and runner.info.execution_precision == "int8+f32"
    floats = open_openvino(openvino_fp32[0] / "model.xml", precision="int8", threads=1)
    assert set(floats.info.detail["products"]) == {"f32"}
    assert floats.info.execution_precision == "f32 (no int8 kernel ran)"

    board = _board_model(int8, "int8", tmp_path)
    assert board.detail["products"] == products and board.detail["execution_precision"] == "int8+f32"
    board_floats = _board_model(openvino_fp32[0], "int8", tmp_path)
    assert board_floats.detail["execution_precision"] == "f32 (no int8 kernel ran)"


def test_onnxruntime_names_int8_only_for_operators_that_ran_int8(onnx_artifact, cifar_batch, tmp_path: Path) -> None:
    """ONNX Runtime's int8 is its fusions' work: a QDQ or dynamic-int8 file runs in int8 only
    where they turned its products into int8 operators. Which operators ran is read back from
    the session's own profile of its first call, in vitedge's runner and in the board bundle
    alike, and a float file handed over as int8 (what a graph whose int8 fusions did not apply
    amounts to) is labelled by the precision it computed in, and fails its check."""
    import json
    import shutil
    import tempfile

    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.targets.bundle.run_bundle import ORT_INT8_OPS
    from vitedge.targets.onnxruntime import open_onnx

    loaded = make_tiny_vit()
    images = cifar_batch[0][:2]
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 16, cache=False)
    profiles = sorted(Path(tempfile.gettempdir()).glob("vitedge-ort-profile-*"))
    for precision in ("int8-dynamic", "int8-static"):
        folder = export_artifact(
            loaded, to="onnx", precision=precision, out=tmp_path / precision, calibration=calibration
        )
        runner = open_onnx(folder / "model.onnx", precision=precision, threads=1)
        assert "kernels" not in runner.info.detail  # read from the first call: no call is added for it
        runner(images)
        kernels = runner.info.detail["kernels"]
        assert set(kernels) & set(ORT_INT8_OPS) and runner.info.execution_precision == "int8+f32", kernels
        board = _board_model(folder, precision, tmp_path)
        board(images)
        assert board.detail["kernels"] == kernels and board.detail["execution_precision"] == "int8+f32"
    floats = open_onnx(onnx_artifact / "model.onnx", precision="int8-dynamic", threads=1)
    floats(images)
    assert floats.info.detail["kernels"].get("MatMul") and not set(floats.info.detail["kernels"]) & set(ORT_INT8_OPS)
    assert floats.info.execution_precision == "f32 (no int8 kernel ran)"
    board_floats = _board_model(onnx_artifact, "int8-dynamic", tmp_path)
    board_floats(images)
    assert board_floats.detail["execution_precision"] == "f32 (no int8 kernel ran)"
    assert sorted(Path(tempfile.gettempdir()).glob("vitedge-ort-profile-*")) == profiles  # each profile removed
    relabelled = shutil.copytree(onnx_artifact, tmp_path / "relabelled")
    manifest = json.loads((relabelled / "manifest.json").read_text())
    (relabelled / "manifest.json").write_text(json.dumps({**manifest, "precision": "int8-dynamic"}))
    report = verify_artifact(relabelled, make_tiny_vit(), cifar_batch[0][:8], threads=1)
    assert not report.passed and report.kernels == floats.info.detail["kernels"]
    assert report.failures[-1] == (
        "execution precision f32 (no int8 kernel ran) (a int8-dynamic artifact must compute in int8+f32)"
    )


def test_openvino_fp32_meets_the_fp32_bound_on_this_cpu(openvino_fp32, cifar_batch) -> None:
    folder, loaded = openvino_fp32
    report = verify_artifact(folder, loaded, cifar_batch[0], threads=1)
    assert report.passed and report.max_abs <= tolerance_for("fp32")["max_abs"] and report.execution_precision == "f32"


def test_onnx_and_torch_runners_report_what_they_compute(onnx_artifact) -> None:
    from tests.support import make_tiny_vit
    from vitedge.compress.quantize import quantize_dynamic

    assert open_artifact(onnx_artifact, threads=1).info.execution_precision == "f32"
    module = make_tiny_vit().module
    assert open_torch(module, precision="fp32", threads=1).info.execution_precision == "f32"
    # read from the module: a float module asked for as int8 runs no int8 kernel, an int8 one is int8
    assert (
        open_torch(module, precision="int8-dynamic", threads=1).info.execution_precision == "f32 (no int8 kernel ran)"
    )
    int8 = quantize_dynamic(module).model
    assert open_torch(int8, precision="fp32", threads=1).info.execution_precision == "int8+f32"
    assert open_torch(int8, precision="int8-dynamic", threads=1).info.execution_precision == "int8+f32"


@pytest.mark.skipif(
    not HAS_BF16, reason="this CPU has no native bf16; test_bf16_is_refused_without_native_bf16 covers it"
)
def test_int8_bf16_computes_its_float_parts_in_bf16_where_the_cpu_has_it(tmp_path: Path, cifar_batch) -> None:
    """The same int8 IR as int8, its float parts in bf16: the compiled model says bf16, the gate
    is int8's, and the logits differ from the int8+f32 run of the same IR (bf16 really ran)."""
    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.core.manifest import read_manifest
    from vitedge.targets.openvino import open_openvino

    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 16, cache=False)
    folder = export_artifact(loaded, to="openvino", precision="int8-bf16", out=tmp_path / "a", calibration=calibration)
    assert read_manifest(folder)["quantization"]["float_parts"] == "bf16"
    # random weights tie their logits: int8 top-1 agreement is noise here (tests/exporter/test_export.py)
    report = verify_artifact(folder, loaded, cifar_batch[0], tolerances={"top1_agreement": 0.9}, threads=1)
    assert report.execution_precision == "int8+bf16" and report.passed, report.failures
    assert report.cosine_mean > 0.995
    runner = open_artifact(folder, threads=1)
    assert runner.info.detail["inference_precision"] == "bf16"
    f32_parts = open_openvino(folder / "model.xml", precision="int8", threads=1)
    assert f32_parts.info.execution_precision == "int8+f32"
    images = cifar_batch[0][:8]
    assert 0 < np.abs(runner(images) - f32_parts(images)).max() < 0.5


@pytest.mark.skipif(
    not HAS_BF16, reason="this CPU has no native bf16; test_bf16_is_refused_without_native_bf16 covers it"
)
def test_bf16_runs_and_passes_its_own_gate_where_the_cpu_has_it(tmp_path: Path, cifar_batch) -> None:
    from tests.support import make_tiny_vit

    loaded = make_tiny_vit()
    folder = export_artifact(loaded, to="openvino", precision="bf16", out=tmp_path / "bf16")
    report = verify_artifact(folder, loaded, cifar_batch[0], threads=1)
    assert report.execution_precision == "bf16" and report.passed, report.failures
    assert report.max_abs > tolerance_for("fp32")["max_abs"]  # it really is bf16: fp32's bound would fail
    runner = open_torch(loaded.module, precision="bf16", threads=1)
    assert runner.info.execution_precision == "bf16"
    reference = open_torch(loaded.module, precision="fp32", threads=1)(cifar_batch[0][:8])
    bf16 = runner(cifar_batch[0][:8])
    assert 0 < np.abs(bf16 - reference).max() < 0.1


@pytest.mark.parametrize(
    "cpu,openvino,refusal",
    [
        (AVX2_ONLY, OPENVINO_BF16, "this CPU has no native bf16"),
        (ARM_BF16, OPENVINO_NO_BF16, "OpenVINO [0-9.]+'s CPU plugin computes no bf16 on this CPU, though it has bf16"),
    ],
    ids=["cpu-without-bf16", "openvino-without-bf16"],
)
def test_bf16_is_refused_without_native_bf16(tmp_path: Path, monkeypatch, cpu, openvino, refusal: str) -> None:
    """Where the CPU has no bf16, or OpenVINO's plugin computes none on it (its ARM plugin on an
    ARM CPU with bf16), simulated whatever this one is: export and the OpenVINO runner refuse
    bf16 and int8-bf16 in one line before writing anything. PyTorch bf16 follows the CPU alone."""
    from tests.support import make_tiny_vit
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.targets.openvino import open_openvino

    simulate(monkeypatch, cpu, openvino)
    loaded = make_tiny_vit()
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 4, cache=False)
    for precision in ("bf16", "int8-bf16"):
        with pytest.raises(VitedgeError, match=f"openvino {precision}: {refusal}"):
            export_artifact(
                loaded, to="openvino", precision=precision, out=tmp_path / precision, calibration=calibration
            )
        assert not (tmp_path / precision).exists()
        with pytest.raises(VitedgeError, match=f"is a {precision} artifact: {refusal}"):
            open_openvino(tmp_path / "model.xml", precision=precision)
    if not cpu.bf16:
        with pytest.raises(VitedgeError, match="no native bf16"):
            open_torch(loaded.module, precision="bf16")


@pytest.mark.parametrize("openvino", [OPENVINO_BF16, OPENVINO_NO_BF16], ids=["openvino-bf16", "openvino-no-bf16"])
def test_targets_recommends_bf16_only_where_the_cpu_has_it(monkeypatch, openvino: tuple[str, ...]) -> None:
    """OpenVINO's bf16 rows only where its plugin offers bf16 here; PyTorch's wherever the CPU has it."""
    monkeypatch.setattr(vitedge.core.precision, "openvino_capabilities", lambda: openvino)
    amx = parse_cpuinfo(
        "processor : 0\nmodel name : Xeon\nflags : avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
    )
    assert amx.bf16 == ("AVX512-BF16", "AMX")
    advice = recommend(vitedge.targets.detect.Machine(amx))[0]
    assert "torch bf16" in advice.recommend and "AVX512-BF16 and AMX compute bf16 natively" in advice.why
    assert ("openvino int8-bf16" in advice.recommend) == ("BF16" in openvino)
    assert ("CPU plugin computes no bf16" in advice.why) == ("BF16" not in openvino)
    plain = recommend(vitedge.targets.detect.Machine(AVX2_ONLY))[0]
    assert "bf16" not in plain.recommend and AVX2_ONLY.bf16 == ()


def test_verify_fails_an_artifact_computing_in_another_precision(openvino_fp32, cifar_batch, monkeypatch) -> None:
    """Whatever the logits say, a fp32 artifact whose runtime reports bf16 fails its gate:
    on a CPU without bf16 a wrong hint could not show in the numbers."""
    import vitedge.targets.openvino

    folder, loaded = openvino_fp32
    monkeypatch.setattr(vitedge.targets.openvino, "openvino_label", lambda precision, part, products=None: "bf16")
    report = verify_artifact(folder, loaded, cifar_batch[0][:8], threads=1)
    assert not report.passed and report.failures[-1] == "execution precision bf16 (a fp32 artifact must compute in f32)"
