"""Simulated CPUs and OpenVINO CPU plugins, whatever this machine is: the bf16 decisions read
only `core.cpu.probe_cpu` and `core.precision.openvino_capabilities`, so a test can be any CPU."""

from __future__ import annotations

import pytest

import vitedge.core.cpu
import vitedge.core.precision
from vitedge.core.cpu import CpuInfo
from vitedge.core.precision import bf16_missing

AVX2_ONLY = CpuInfo("x86_64", "AVX2-only test CPU", 2, frozenset({"avx2", "fma"}))
X86_BF16 = CpuInfo(
    "x86_64", "AMX test CPU", 2, frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_int8"})
)
ARM_BF16 = CpuInfo("aarch64", "ARM bf16 test CPU", 4, frozenset({"asimd", "asimddp", "bf16"}))
# What OpenVINO's CPU plugin reports (OPTIMIZATION_CAPABILITIES): with bf16 kernels (x86 with
# AVX512-BF16 or AMX), and without (its ARM plugin, whatever the ARM CPU has).
OPENVINO_BF16 = ("BF16", "FP32", "FP16", "INT8", "BIN", "EXPORT_IMPORT")
OPENVINO_NO_BF16 = ("FP32", "FP16", "INT8", "BIN", "EXPORT_IMPORT")
# Where OpenVINO computes bf16 on this machine: its bf16 artifacts run here, else they are refused.
OPENVINO_BF16_HERE = bf16_missing("openvino") is None


def simulate(monkeypatch: pytest.MonkeyPatch, cpu: CpuInfo, openvino: tuple[str, ...] | None = None) -> None:
    """This machine as `cpu`, its OpenVINO CPU plugin offering `openvino` (unchanged if None)."""
    monkeypatch.setattr(vitedge.core.cpu, "probe_cpu", lambda: cpu)
    if openvino is not None:
        monkeypatch.setattr(vitedge.core.precision, "openvino_capabilities", lambda: openvino)
