"""Simulated CPUs and OpenVINO CPU plugins, whatever this machine is: the bf16 decisions read
only `core.cpu.probe_cpu` and `core.precision.openvino_capabilities`, so a test can be any CPU."""

from __future__ import annotations

import platform
import shutil

import pytest

import vitedge.core.cpu
import vitedge.core.precision
from vitedge.core.cpu import X86_CPUID, X86_ISA, CpuInfo, arch_family, probe_cpu
from vitedge.core.precision import bf16_missing

# qemu user emulation of another x86 CPU (the set-up installs qemu-user): for the tests that run
# a board bundle as that CPU, on an x86 machine only, since the emulated Python is this one.
QEMU_X86 = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
needs_qemu_x86 = pytest.mark.skipif(
    arch_family(platform.machine()) != "x86" or QEMU_X86 is None,
    reason="needs an x86 machine and qemu-x86_64 (scripts/setup.sh installs qemu-user)",
)
# qemu CPU model -> the ISA vitedge must report for it when emulated (core.cpu.X86_ISA names)
EMULATED_X86 = {"Haswell-v4": ("AVX2", "FMA"), "Nehalem-v2": ()}
# the extensions numpy's CPUID probe sees, by which vitedge tells an emulated x86 CPU
X86_PROBED = frozenset(display for display, needed in X86_ISA if needed[0] in X86_CPUID)


def emulation_told(model: str, host: CpuInfo) -> bool:
    """Whether vitedge can tell `model` emulated on `host`: only if the host has a probed
    extension the model lacks (an AVX2 Haswell on an AVX2-only host looks like the host)."""
    return bool((set(host.isa) & X86_PROBED) - set(EMULATED_X86[model]))


def x86_model_below_this_cpu() -> str | None:
    """The first emulated model whose emulation vitedge can tell on this machine, if any."""
    return next((model for model in EMULATED_X86 if emulation_told(model, probe_cpu())), None)


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
