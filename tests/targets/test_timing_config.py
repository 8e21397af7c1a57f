"""Every batch size is timed on the configuration a synchronous caller needs, and every timing
records what the runtime reported. OpenVINO's THROUGHPUT hint splits the cores into streams
that only pay with that many requests in flight; one request at a time (the timing loop, a
board's `runner(batch)`) then runs on one stream's share. On 2 cores that halved ViT-B at
batch 8 and cost 27% at batch 1. So OpenVINO compiles with LATENCY (one stream, every
thread) at every batch, and the rows say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitedge.exporter.export import export_artifact
from vitedge.targets.measure import MeasureRequest, RunnerSpec, measure


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cifar_batch) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    np.save(folder / "inputs.npy", cifar_batch[0][:16])
    np.save(folder / "labels.npy", cifar_batch[1][:16])
    return folder / "inputs.npy", folder / "labels.npy"


@pytest.fixture(scope="module")
def openvino_artifact(tmp_path_factory) -> Path:
    from tests.support import make_tiny_vit

    return export_artifact(make_tiny_vit(), to="openvino", precision="fp32", out=tmp_path_factory.mktemp("ov") / "fp32")


def test_openvino_every_batch_is_timed_on_one_stream_with_every_thread(openvino_artifact: Path, inputs) -> None:
    spec = RunnerSpec("ov", "artifact", str(openvino_artifact), precision="fp32", threads=2)
    result = measure(MeasureRequest(spec, str(inputs[0]), str(inputs[1]), batches=(1, 8), runs=2, min_seconds=0.0))
    assert [t.batch for t in result.timings] == [1, 8]
    for timing in result.timings:  # as the compiled model reported them, not as asked
        assert timing.config == {"threads": 2, "hint": "LATENCY", "streams": 1}
    assert result.execution_precision == "f32" and result.accuracy is not None and result.accuracy.samples == 16


def test_onnxruntime_timings_record_provider_and_threads(onnx_artifact: Path, inputs) -> None:
    spec = RunnerSpec("onnx", "artifact", str(onnx_artifact), precision="fp32", threads=1)
    result = measure(MeasureRequest(spec, str(inputs[0]), None, batches=(1, 4), runs=2, min_seconds=0.0))
    assert all(t.config == {"threads": 1, "provider": "CPUExecutionProvider"} for t in result.timings)
