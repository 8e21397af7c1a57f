"""OpenVINO int8 keeps its parity on an x86 CPU without VNNI, checked on this one by capping
oneDNN at AVX2 (`ONEDNN_MAX_CPU_ISA`, read by OpenVINO's CPU plugin when it starts).

Without VNNI the CPU plugin multiplies u8 activations by s8 weights with 16-bit saturating sums
(vpmaddubsw): full-range int8 weights overflow them. NNCF's overflow fix (7-bit weights,
exporter/openvino.py `OVERFLOW_FIX`) is what keeps such artifacts right there. Measured on
vitedge-cifar10, 10,000 test images, this Xeon capped at AVX2: overflow fix on all layers cosine
0.99947 / top-1 agreement 98.74%; on the first layer only 0.99930 / 98.63%; off 0.970 / 90.4%
(natively, with VNNI, all three pass at 0.9996 / 99%). The second test is the check that the cap
takes effect: without the fix the gate must fail."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from vitedge.calibration.calibset import build_calibration_set
from vitedge.calibration.sources import open_source
from vitedge.compress.registry import load_model
from vitedge.core.cpu import probe_cpu
from vitedge.exporter.export import ExportOptions, export_artifact
from vitedge.targets.runners import open_artifact

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's x86 ISA cap; ARM runs other kernels"
)


@pytest.fixture(scope="module")
def cifar_model():
    return load_model("vitedge-cifar10")


def _export(loaded, folder: Path, overflow_fix: str) -> Path:  # noqa: ANN001 - LoadedModel
    calibration = build_calibration_set(open_source("cifar10:train"), loaded.data_config, 64, seed=0, cache=False)
    options = ExportOptions(overflow_fix=overflow_fix)
    return export_artifact(
        loaded, to="openvino", precision="int8", out=folder, calibration=calibration, options=options
    )


def _verify_as_avx2(folder: Path) -> dict:
    """`vitedge verify` in a process whose oneDNN is capped at AVX2 (an AVX2-only CPU's kernels)."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = [sys.executable, "-m", "vitedge", "verify", str(folder), "--samples", "500", "--threads", "2", "--json"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)["parity"]


def test_default_int8_passes_its_gate_on_avx2_kernels(cifar_model, tmp_path):
    folder = _export(cifar_model, tmp_path / "default", ExportOptions().overflow_fix)
    parity = _verify_as_avx2(folder)
    assert parity["passed"], parity["failures"]
    assert parity["cosine_mean"] > 0.999 and parity["top1_agreement"] >= 0.97
    # what ran is read back from the plugin: every product in a kernel of AVX2 or less, and the
    # report says the check ran under the cap wherever the CPU has more than AVX2
    native = open_artifact(folder, threads=2).info.detail["kernels"]
    capped = parity["kernels"]
    assert sum(native.values()) >= 25 and sum(capped.values()) >= 25, (native, capped)  # 24 Linears, head, patches
    assert not [k for k in capped if "avx512" in k.lower() or "amx" in k.lower()], capped
    above_avx2 = set(probe_cpu().isa) - {"AVX2", "FMA"}
    cap_notes = [n for n in parity["notes"] if n.startswith("ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN")]
    assert len(cap_notes) == (1 if above_avx2 else 0), parity["notes"]


def test_without_the_overflow_fix_avx2_kernels_saturate(cifar_model, tmp_path):
    parity = _verify_as_avx2(_export(cifar_model, tmp_path / "nofix", "disable"))
    assert not parity["passed"] and parity["cosine_mean"] < 0.99, parity
