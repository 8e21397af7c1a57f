"""benchmarks/openvino_profile.py: the IR is compiled as the product compiles it (its precision
read back), and the counters it sums are the model's own nodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support import make_tiny_vit
from vitedge.exporter.export import export_artifact

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import openvino_profile  # noqa: E402


def test_profile_of_an_fp32_ir_reads_back_f32_and_its_kernels(tmp_path: Path) -> None:
    folder = export_artifact(make_tiny_vit(), to="openvino", precision="fp32", out=tmp_path / "ov")
    out = tmp_path / "profile.json"
    assert openvino_profile.main([str(folder), "--out", str(out), "--threads", "1", "--calls", "3"]) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == "fp32" and result["compiled"]["inference_precision"] == "f32"
    assert result["compiled"]["threads"] == 1
    kernels = result["by_kernel_ms"]
    assert any(name.startswith("FullyConnected ") for name in kernels)  # the tiny ViT's Linears
    assert any(name.startswith("Convolution ") for name in kernels)  # its patch embedding
    assert abs(sum(kernels.values()) - result["last_call_node_ms"]) < 1e-6 and result["median_call_ms"] > 0
    assert "| node type and kernel |" in out.with_suffix(".md").read_text()
