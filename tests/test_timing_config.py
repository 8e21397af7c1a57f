"""Each batch size is timed on a runner configured for it: OpenVINO compiles batch 1 with the
LATENCY hint (one stream, every thread) and larger batches with THROUGHPUT; a batch-1 figure
timed on a throughput compile ran 27% slower on a 2-core CPU. Every timing records the hint,
streams and threads the runtime reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter.export import export_artifact
from targets.measure import MeasureRequest, RunnerSpec, measure


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cifar_batch) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    np.save(folder / "inputs.npy", cifar_batch[0][:16])
    np.save(folder / "labels.npy", cifar_batch[1][:16])
    return folder / "inputs.npy", folder / "labels.npy"


@pytest.fixture(scope="module")
def openvino_artifact(tmp_path_factory) -> Path:
    from conftest import make_tiny_vit

    return export_artifact(make_tiny_vit(), to="openvino", precision="fp32", out=tmp_path_factory.mktemp("ov") / "fp32")


def test_openvino_batch_one_is_timed_on_a_latency_compile(openvino_artifact: Path, inputs) -> None:
    spec = RunnerSpec("ov", "artifact", str(openvino_artifact), precision="fp32", threads=2)
    result = measure(MeasureRequest(spec, str(inputs[0]), str(inputs[1]), batches=(1, 8), runs=2, min_seconds=0.0))
    one, eight = result.timing(1), result.timing(8)
    assert [t.batch for t in result.timings] == [1, 8]
    assert one.config["hint"] == "LATENCY" and one.config["streams"] == 1 and one.config["threads"] == 2
    assert eight.config["hint"] == "THROUGHPUT" and eight.config["streams"] >= 1
    assert result.execution_precision == "f32" and result.accuracy is not None and result.accuracy.samples == 16


def test_runners_that_take_any_batch_are_opened_once(onnx_artifact: Path, inputs, monkeypatch) -> None:
    """ONNX Runtime's session does not depend on the batch: one session serves every timing
    (a second would double peak RSS for nothing)."""
    import targets.measure

    opened: list[int] = []
    real = targets.measure.open_spec
    monkeypatch.setattr(targets.measure, "open_spec", lambda spec, batch=1: opened.append(batch) or real(spec, batch))
    spec = RunnerSpec("onnx", "artifact", str(onnx_artifact), precision="fp32", threads=1)
    result = measure(MeasureRequest(spec, str(inputs[0]), None, batches=(1, 4), runs=2, min_seconds=0.0))
    assert opened == [4]
    assert all(t.config == {"threads": 1, "provider": "CPUExecutionProvider"} for t in result.timings)
