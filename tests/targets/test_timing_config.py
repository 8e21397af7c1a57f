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


def test_openvino_every_batch_is_timed_on_one_stream_with_every_thread(
    openvino_artifact: Path, inputs, monkeypatch
) -> None:
    """Each timing's configuration is read from the compile that ran it: a dynamic-batch IR is
    compiled static for each batch size, and the plugin chooses kernels for that shape."""
    import vitedge.targets.openvino

    read_from: list[int] = []  # the static batch of each compile a report was read from
    real = vitedge.targets.openvino.reported

    def reported(compiled):  # noqa: ANN001, ANN202 - the real report, noting which compile gave it
        read_from.append(compiled.input(0).get_partial_shape()[0].get_length())
        return real(compiled)

    monkeypatch.setattr(vitedge.targets.openvino, "reported", reported)
    spec = RunnerSpec("ov", "artifact", str(openvino_artifact), precision="fp32", threads=2)
    result = measure(MeasureRequest(spec, str(inputs[0]), str(inputs[1]), batches=(1, 8), runs=2, min_seconds=0.0))
    assert [t.batch for t in result.timings] == [1, 8] and read_from[-2:] == [1, 8]
    products = sum(result.detail["products"].values())
    for timing in result.timings:  # as the compiled model reported them, not as asked
        kernels = timing.config["kernels"]
        assert {**timing.config, "kernels": None} == {"threads": 2, "hint": "LATENCY", "streams": 1, "kernels": None}
        assert sum(kernels.values()) == products > 0, kernels
    assert result.execution_precision == "f32" and result.accuracy is not None and result.accuracy.samples == 16


def test_onnxruntime_timings_record_provider_and_threads(onnx_artifact: Path, inputs) -> None:
    spec = RunnerSpec("onnx", "artifact", str(onnx_artifact), precision="fp32", threads=1)
    result = measure(MeasureRequest(spec, str(inputs[0]), None, batches=(1, 4), runs=2, min_seconds=0.0))
    kernels = result.detail["kernels"]  # the operators ONNX Runtime ran the products in
    assert kernels.get("MatMul") and all(
        t.config == {"threads": 1, "provider": "CPUExecutionProvider", "kernels": kernels} for t in result.timings
    )
