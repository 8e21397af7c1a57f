"""Target detection from real-world /proc/cpuinfo texts and on this machine, and the GPU
targets' clear errors where there is no GPU (this CI machine has none)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.support.cpus import AVX2_ONLY, X86_BF16, emulation_told
from vitedge.cli import app
from vitedge.core.cpu import (
    CpuInfo,
    arch_family,
    board_cpu,
    fastest_cpus,
    onednn_denied,
    parse_cpuinfo,
    pinned_text,
    probe_cpu,
    read_core_speeds,
    read_cpu_features,
    read_kernel_arch,
    read_onednn_cap,
)
from vitedge.core.errors import VitedgeError
from vitedge.targets.detect import Machine, detect_targets, probe_machine, recommend
from vitedge.targets.onnxruntime import open_onnx
from vitedge.targets.openvino import open_openvino
from vitedge.targets.runners import open_artifact
from vitedge.targets.torch import open_torch

# Abbreviated from real machines: two processors each, fields as the kernel prints them.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor abm sse4a bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt vaes vpclmulqdq rdpid fsrm

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor abm sse4a bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt vaes vpclmulqdq rdpid fsrm
"""
XEON_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 fma avx f16c avx2 avx512f avx512_vnni avx512_bf16 avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8
"""
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

processor\t: 2
CPU part\t: 0xd0b

processor\t: 3
CPU part\t: 0xd0b

Revision\t: d04170
Serial\t\t: 3e1f9a2b7c6d5e4f
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Revision\t: c03112
Model\t\t: Raspberry Pi 4 Model B Rev 1.2
"""


def cpu_target(text: str, machine: str | None = None):
    return recommend(Machine(parse_cpuinfo(text, machine)))[0]


def test_x86_without_vnni_names_the_runtime_and_says_to_time_int8_beside_fp32():
    cpu = parse_cpuinfo(EPYC_AVX2)
    assert (cpu.arch, cpu.model, cpu.cores, cpu.isa, cpu.int8_dot) == ("x86_64", "AMD EPYC", 2, ("AVX2", "FMA"), ())
    target = cpu_target(EPYC_AVX2)
    assert target.target == "cpu" and target.available
    assert target.recommend == "onnx int8-dynamic or onnx fp32" and "openvino" not in target.recommend
    assert len(target.warnings) == 1 and "no VNNI or AMX" in target.warnings[0]
    assert "beside onnx fp32" in target.warnings[0] and "openvino int8 is for size only" in target.warnings[0]


def test_x86_with_vnni_or_amx_recommends_int8():
    cpu = parse_cpuinfo(XEON_VNNI)
    assert cpu.isa == ("AVX2", "FMA", "AVX512F", "AVX512-VNNI") and cpu.int8_dot == ("AVX512-VNNI",)
    target = cpu_target(XEON_VNNI)
    assert "int8" in target.recommend.split(" or ")[0] and not target.warnings and "AVX512-VNNI" in target.why
    amx = parse_cpuinfo(XEON_AMX)
    assert (
        amx.isa == ("AVX2", "FMA", "AVX512F", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")
        and amx.cores == 1
    )
    assert "AMX" in cpu_target(XEON_AMX).why and not cpu_target(XEON_AMX).warnings


def test_raspberry_pi_5_has_dotprod_and_pi_4_does_not():
    pi5 = parse_cpuinfo(PI5)
    assert pi5.arch == "aarch64" and pi5.cores == 4
    assert pi5.model == "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"
    assert pi5.isa == ("NEON", "fp16", "dotprod") and pi5.int8_dot == ("dotprod",)  # the A76 has no i8mm
    target = cpu_target(PI5)
    assert target.recommend == "onnx int8-dynamic" and "dotprod" in target.why and not target.warnings
    pi4 = parse_cpuinfo(PI4)
    assert pi4.model == "Raspberry Pi 4 Model B Rev 1.2 (Cortex-A72)" and pi4.isa == ("NEON",)
    target = cpu_target(PI4)
    assert target.recommend.startswith("onnx fp32") and "no ARM dotprod" in target.warnings[0]
    assert "i8mm" in parse_cpuinfo(PI5.replace("asimddp", "asimddp i8mm")).int8_dot
    # part numbers are per implementer: Qualcomm's 0xd0b is no Cortex-A76
    assert parse_cpuinfo(PI5.replace("0x41", "0x51")).model == "Raspberry Pi 5 Model B Rev 1.0 (Qualcomm part 0xd0b)"


# /proc/cpuinfo of a Raspberry Pi 4 under 32-bit Raspberry Pi OS (an armv7l kernel): one block
# of four, and the board lines
PI4_ARMV7L = """processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2711
Revision\t: c03112
Model\t\t: Raspberry Pi 4 Model B Rev 1.2
"""


def test_a_32_bit_arm_kernel_names_the_same_extensions_by_its_own_flags():
    """A 32-bit ARM kernel (and an arm64 one, to a 32-bit process) names NEON `neon` and bf16
    `asimdbf16` where aarch64 says asimd and bf16; fp16, dotprod and i8mm keep their names. The
    ISA is the CPU's, whichever the kernel."""
    pi4 = board_cpu(PI4_ARMV7L, "armv7l", "Raspberry Pi 4 Model B Rev 1.2", None, "armv7l")
    assert pi4.arch == "armv7l" and not pi4.emulated and pi4.isa == ("NEON",)
    newer = PI4_ARMV7L.replace("crc32", "crc32 asimdhp asimddp i8mm asimdbf16")
    assert parse_cpuinfo(newer, "armv7l").isa == ("NEON", "fp16", "dotprod", "i8mm", "bf16")
    assert parse_cpuinfo(newer, "armv7l").isa == parse_cpuinfo(PI5.replace("asimddp", "asimddp i8mm bf16")).isa


def test_an_emulated_arm_board_is_read_from_its_hwcaps_not_the_hosts_cpuinfo():
    """qemu-user (an arm64 container on an x86 laptop, say) passes the host's /proc/cpuinfo
    through: the hwcaps the board reports are what its Python may use."""
    pi5_hwcaps = [1 << 1 | 1 << 10 | 1 << 20, 0]  # asimd, asimdhp, asimddp (A76: no i8mm, no bf16)
    board = board_cpu(XEON_AMX, "aarch64", "", pi5_hwcaps)
    assert (
        board.model == "aarch64 CPU, emulated (its /proc/cpuinfo describes the host's Intel(R) Xeon(R) Platinum 8480+)"
    )
    assert board.isa == ("NEON", "fp16", "dotprod") and board.int8_dot == ("dotprod",) and not board.bf16
    assert board_cpu(XEON_AMX, "aarch64").isa == ()  # an older bundle, no hwcaps: nothing claimed
    neoverse_v2 = [1 << 1 | 1 << 10 | 1 << 20 | 1 << 22, 1 << 13 | 1 << 14]
    assert board_cpu(XEON_AMX, "aarch64", "", neoverse_v2).isa == ("NEON", "fp16", "dotprod", "i8mm", "bf16", "SVE")
    # on real ARM hardware cpuinfo and hwcaps agree, and the board's own description stands
    pi5 = board_cpu(PI5, "aarch64", "", pi5_hwcaps)
    assert pi5 == parse_cpuinfo(PI5, "aarch64")
    assert board_cpu(XEON_AMX, "x86_64", "", [6, 2]) == parse_cpuinfo(XEON_AMX)  # x86: hwcaps not read


# what newer qemu-user makes up for an emulated Cortex-A76 (Debian trixie's qemu 10.0)
QEMU_A76 = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 100.00
Features\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""


def test_an_emulated_board_whose_cpuinfo_is_made_up_is_told_by_its_kernel():
    """A newer qemu (10.0) writes an ARM /proc/cpuinfo for the CPU it emulates, so nothing in it says
    "emulated"; the kernel's architecture (kernel.arch, passed through) does."""
    board = board_cpu(QEMU_A76, "aarch64", "", [1 << 1 | 1 << 10 | 1 << 20, 0], "x86_64")
    assert board.emulated and board.model == "ARMv8 Processor rev 1 (v8l), emulated (the kernel is x86_64)"
    assert board.isa == ("NEON", "fp16", "dotprod")  # the emulated CPU's ISA stands
    assert not board_cpu(QEMU_A76, "aarch64", "", None, None).emulated  # a kernel without kernel.arch: not told
    # native: an arm64 kernel under a 64-bit or a 32-bit userland (Raspberry Pi OS), an x86 one under i686
    assert not board_cpu(PI5, "aarch64", "", None, "aarch64").emulated
    assert not board_cpu(PI5.replace("asimd", "neon"), "armv7l", "", None, "aarch64").emulated
    assert not board_cpu(XEON_AMX, "i686", "", None, "x86_64").emulated
    # an x86 Python on an ARM kernel (qemu-x86_64, FEX, Rosetta in a Linux VM)
    rosetta = board_cpu(PI5, "x86_64", "", None, "aarch64")
    assert rosetta.emulated and rosetta.model.endswith("emulated (the kernel is aarch64)")


def test_an_emulated_x86_cpu_claims_only_what_its_process_can_run():
    """qemu-x86_64 as a Haswell on an AMX host (or Intel SDE): cpuinfo is the host's, numpy's
    CPUID probe is the emulated CPU's. What the process cannot run is not claimed, and the
    int8 advice follows the CPU that runs (u8×s8 saturates without VNNI)."""
    haswell = {
        "AVX2": True,
        "FMA3": True,
        "AVX512F": False,
        "AVX512VNNI": False,
        "AVX512BF16": False,
        "AVX512FP16": False,
    }
    cpu = board_cpu(XEON_AMX, "x86_64", "", None, "x86_64", haswell)
    assert cpu.emulated and cpu.isa == ("AVX2", "FMA") and cpu.u8s8_saturates and not cpu.bf16
    assert cpu.model == (
        "x86_64 CPU, emulated (its /proc/cpuinfo describes the host's Intel(R) Xeon(R) Platinum 8480+;"
        " this process cannot run AVX512F, AVX512-VNNI, AVX512-BF16, AVX512-FP16)"
    )
    native = {name: True for name in haswell}
    assert board_cpu(XEON_AMX, "x86_64", "", None, "x86_64", native) == parse_cpuinfo(XEON_AMX)
    assert board_cpu(XEON_AMX, "x86_64", "", None, "x86_64", {"AVX2": True}) == parse_cpuinfo(XEON_AMX)  # unknown: kept
    assert not board_cpu(PI5, "aarch64", "", None, "aarch64", {"ASIMD": True, "AVX2": False}).emulated  # x86 only


def test_which_emulated_x86_cpu_can_be_told_depends_on_the_host():
    """An emulated Haswell on an AVX2-only host shows what the host shows, so the emulated-CPU
    tests pick a Nehalem there (tests/support/cpus.py); on an AVX-512 host a Haswell is told."""
    assert not emulation_told("Haswell-v4", AVX2_ONLY) and emulation_told("Nehalem-v2", AVX2_ONLY)
    assert emulation_told("Haswell-v4", X86_BF16) and emulation_told("Haswell-v4", parse_cpuinfo(XEON_VNNI))


def test_this_machines_kernel_is_of_its_own_family():
    """Read here for real: this process runs natively, and says so."""
    kernel = read_kernel_arch()
    if kernel is not None:  # a kernel with kernel.arch
        assert arch_family(kernel) == arch_family(platform.machine())
    assert not probe_cpu().emulated
    features = read_cpu_features()
    if features is not None and arch_family(platform.machine()) == "x86":  # numpy agrees with cpuinfo here
        assert probe_cpu() == board_cpu(Path("/proc/cpuinfo").read_text(), platform.machine(), "", None, kernel)


def test_gpu_targets_follow_devices_and_providers():
    cpu = parse_cpuinfo(EPYC_AVX2)
    none = {t.target: t for t in recommend(Machine(cpu, ("CPUExecutionProvider",), {"CPU": "AMD EPYC"}, ()))}
    assert not any(none[t].available for t in ("cuda", "tensorrt", "openvino-gpu"))
    assert "PyTorch sees no CUDA device" in none["cuda"].why
    gpu = Machine(
        cpu,
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        {"CPU": "x", "GPU.0": "Intel(R) Arc(TM) A770 Graphics (dGPU)"},
        ("NVIDIA H100 80GB HBM3 (sm_90)",),
    )
    found = {t.target: t for t in recommend(gpu)}
    assert (
        found["cuda"].available
        and found["cuda"].runtimes == ("torch", "onnxruntime")
        and found["cuda"].device == "NVIDIA H100 80GB HBM3 (sm_90)"
    )
    assert found["tensorrt"].available and "int8" in found["tensorrt"].recommend
    assert found["openvino-gpu"].available and "Arc" in found["openvino-gpu"].device
    torch_only = {t.target: t for t in recommend(Machine(cpu, ("CPUExecutionProvider",), {}, ("NVIDIA T4 (sm_75)",)))}
    assert (
        torch_only["cuda"].available
        and "onnxruntime-gpu" in torch_only["cuda"].why
        and not torch_only["tensorrt"].available
    )


def test_this_machine():
    machine = probe_machine()
    real = Path("/proc/cpuinfo").read_text()
    assert machine.cpu == probe_cpu() and machine.cpu.cores == real.count("processor\t:")
    for flag in ("avx2", "avx512f", "avx512_vnni", "asimd", "asimddp"):
        assert (flag in machine.cpu.flags) == (f" {flag}" in real), flag
    assert "CPUExecutionProvider" in machine.ort_providers and "CPU" in machine.openvino_devices
    targets = detect_targets(machine)
    assert [t.target for t in targets] == ["cpu", "cuda", "tensorrt", "openvino-gpu"]
    assert targets[0].available
    if not machine.cpu.int8_dot and machine.cpu.arch == "x86_64":
        assert targets[0].warnings  # this CI machine: AVX2 only, so int8 gets its warning


def test_targets_command_json_and_table():
    runner = CliRunner()
    done = runner.invoke(app, ["targets", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["cpu"]["model"] == probe_cpu().model and data["targets"][0]["target"] == "cpu"
    done = runner.invoke(app, ["targets"])
    assert done.exit_code == 0 and "openvino-gpu" in done.stdout and "ONNX Runtime providers" in done.stdout


no_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA device is present: the no-GPU errors cannot happen here"
)


@no_gpu
def test_torch_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(VitedgeError, match="PyTorch sees no CUDA device") as caught:
        open_torch(torch.nn.Linear(2, 2), precision="fp16", device="cuda")
    assert "--target cpu" in caught.value.hint


@no_gpu
@pytest.mark.parametrize(
    "device, provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
)
def test_onnxruntime_gpu_providers_without_gpu_are_clear_errors(onnx_artifact, device, provider):
    with pytest.raises(VitedgeError, match=f"target {device}: ONNX Runtime has no {provider}") as caught:
        open_onnx(onnx_artifact / "model.onnx", precision="fp32", device=device)
    assert "onnxruntime-gpu" in caught.value.hint
    with pytest.raises(VitedgeError, match=provider):
        open_artifact(onnx_artifact, target=device)


def test_openvino_gpu_without_gpu_is_a_clear_error(onnx_artifact):
    import openvino as ov

    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("OpenVINO sees a GPU here")
    with pytest.raises(VitedgeError, match="target openvino-gpu: OpenVINO sees no GPU device"):
        open_openvino(onnx_artifact / "model.onnx", precision="fp32", device="openvino-gpu")


def test_cpu_runner_still_works_beside_the_gpu_errors(onnx_artifact):
    logits = open_artifact(onnx_artifact, target="cpu")(np.zeros((1, 3, 32, 32), np.float32))
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def test_cpuinfo_without_flags_or_features():
    cpu = parse_cpuinfo("processor\t: 0\n", "riscv64")
    assert (
        cpu == CpuInfo("riscv64", "riscv64", 1, frozenset())
        and cpu_target("processor\t: 0\n", "riscv64").recommend == "onnx fp32"
    )


def measured_row(runtime: str, fmt: str, precision: str, rate: float, passed: bool | None, where: str = "cpu"):
    """A ResultRow as a bench or run makes it: batch-1 timing at `rate` it/s, parity `passed`
    (None: not checked)."""
    from vitedge.targets.measure import Measurement, Timing
    from vitedge.workflows.report import Parity, ResultRow

    p50 = 1000.0 / rate
    timing = Timing(1, 100, p50 / 1000, p50, 1.1 * p50, 1.3 * p50, rate, rate)
    measurement = Measurement(
        f"{fmt}-{precision}", runtime, where, precision, 1, None, (timing,), 6.0, 80.0, {}, {},
        detail={"format": fmt}, execution_precision="int8+f32", first_inference_ms=900.0,
    )  # fmt: skip
    return ResultRow(measurement, None if passed is None else Parity(0.999, 0.99, 0.99, 0.3, passed))


def keep_board(cpu: CpuInfo, model: str, where: str, openvino_parity: bool | None = False) -> None:
    """Three runtimes measured on a board, kept as `vitedge bench` keeps them (workflows.board):
    OpenVINO the fastest but, by default, outside its parity bounds."""
    from vitedge.workflows.board import _keep

    def row(runtime: str, fmt: str, precision: str, rate: float, passed: bool | None) -> tuple:
        return measured_row(runtime, fmt, precision, rate, passed, where), {"format": fmt, "source": {"spec": model}}

    _keep(
        cpu,
        [
            row("onnxruntime", "onnx", "int8-dynamic", 41.0, True),
            row("executorch", "executorch", "int8", 57.5, True),
            row("openvino", "openvino", "int8", 70.2, openvino_parity),
        ],
        where=where,
    )


RUN_KINDS = ("torch:fp32", "onnx:fp32", "onnx:int8-dynamic", "openvino:int8")


def run_rows() -> list:
    """The rows of a `vitedge run`: the PyTorch reference (no parity of its own), the fastest
    row outside its parity bounds."""
    return [
        measured_row("torch", "torch", "fp32", 3.4, None),
        measured_row("onnxruntime", "onnx", "fp32", 4.3, True),
        measured_row("onnxruntime", "onnx", "int8-dynamic", 7.5, True),
        measured_row("openvino", "openvino", "int8", 9.0, False),
    ]


def test_any_cpu_recommends_from_its_last_vitedge_run(own_cache):
    """Not only ARM: once `vitedge run` measured this machine, `vitedge targets` names the
    fastest row that passed parity there, with the figures, instead of its ISA rule."""
    from vitedge.targets import measured
    from vitedge.workflows.board import record_run

    here = Machine(probe_cpu())
    rule = recommend(here, measured.load_store())[0]
    assert "measure it instead: vitedge " + ("bench" if here.cpu.arch in measured.ARM else "run here") in rule.why
    record_run(run_rows(), RUN_KINDS, "vitedge-cifar10")
    target = recommend(here, measured.load_store())[0]
    assert target.recommend == "onnx int8-dynamic on onnxruntime" and target.available
    assert "(local, vitedge run) on vitedge-cifar10, batch 1" in target.why
    assert "onnx int8-dynamic on onnxruntime 7.5 it/s (p50 133.33 ms, parity passed)" in target.why
    assert target.warnings == ("failed parity here, not recommended: openvino int8 on openvino",)
    assert [t.target for t in recommend(here, measured.load_store())].count("cpu") == 1  # not listed twice
    other = Machine(parse_cpuinfo(XEON_VNNI if "VNNI" not in " ".join(here.cpu.isa) else EPYC_AVX2))
    assert "measure it instead: vitedge run here" in recommend(other, measured.load_store())[0].why  # its own rule


def test_one_models_advice_is_not_given_as_every_models(own_cache):
    """On an AVX2-only EPYC (Zen 3) `vitedge run`'s 3 MB default model ran fastest in ONNX fp32 at
    batch 1, while ViT-B's ONNX int8 ran 1.7× its fp32 there: `vitedge targets` advised fp32 for
    every model, naming only the model measured. Now it says another model can differ, compares
    the models measured here, and gives one model's advice with --model."""
    from vitedge.targets import measured
    from vitedge.workflows.board import record_run

    here = Machine(probe_cpu())
    record_run(run_rows(), RUN_KINDS, "vitedge-cifar10")
    first = recommend(here, measured.load_store())[0]
    assert first.recommend == "onnx int8-dynamic on onnxruntime"
    assert "another model's fastest row can differ: vitedge run --model MODEL measures yours" in first.why
    fp32_fastest = [
        measured_row("torch", "torch", "fp32", 3.4, None),
        measured_row("onnxruntime", "onnx", "fp32", 9.5, True),
        measured_row("onnxruntime", "onnx", "int8-dynamic", 7.5, True),
        measured_row("openvino", "openvino", "int8", 9.0, False),
    ]
    record_run(fp32_fastest, RUN_KINDS, "tiny_vit")
    latest = recommend(here, measured.load_store())[0]
    day = measured.load_store()[measured.board_key(here.cpu)]["models"]["vitedge-cifar10"]["measured"][:10]
    assert latest.recommend == "onnx fp32 on onnxruntime" and "on tiny_vit, batch 1" in latest.why
    assert latest.warnings[-1] == (
        f"other models measured here ran fastest otherwise (vitedge-cifar10: onnx int8-dynamic on onnxruntime ({day})): "
        "`vitedge targets --model NAME` gives one model's advice"
    )
    assert "another model's fastest row can differ" not in latest.why  # said once, by the comparison
    one = recommend(here, measured.load_store(), model="vitedge-cifar10")[0]
    assert one.recommend == "onnx int8-dynamic on onnxruntime" and "on vitedge-cifar10, batch 1" in one.why
    assert not any("other models" in warning for warning in one.warnings)
    record_run(run_rows(), RUN_KINDS, "vitedge-cifar10")  # measured again: the two now disagree the other way
    assert "(tiny_vit: onnx fp32 on onnxruntime" in recommend(here, measured.load_store())[0].warnings[-1]
    record_run(fp32_fastest, RUN_KINDS, "vitedge-cifar10")  # all agree: nothing to compare
    assert not any("other models" in w for w in recommend(here, measured.load_store())[0].warnings)
    unmeasured = recommend(here, measured.load_store(), model="vit_base_patch16_224")[0]
    assert unmeasured.recommend == recommend(Machine(here.cpu), {})[0].recommend  # the ISA rule, not another model's
    if here.cpu.arch not in measured.ARM:
        assert "vit_base_patch16_224 was not measured here: vitedge run --model vit_base_patch16_224" in unmeasured.why
    done = CliRunner().invoke(app, ["targets", "--json", "--model", "tiny_vit"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["targets"][0]["recommend"] == "onnx fp32 on onnxruntime"


def test_a_run_measured_by_another_runtime_version_says_so(own_cache):
    """`pip install -U onnxruntime` after `vitedge run`: `vitedge targets` went on naming the
    old version's fastest row with its figures, as if measured with the kernels installed now."""
    import dataclasses

    from vitedge.targets import measured
    from vitedge.workflows.board import record_run

    then = {"torch": "2.14.1", "onnxruntime": "1.31.0", "openvino": "2026.3.0"}
    rows = [
        dataclasses.replace(row, measurement=dataclasses.replace(row.measurement, versions={runtime: then[runtime]}))
        for row, runtime in zip(run_rows(), ("torch", "onnxruntime", "onnxruntime", "openvino"), strict=True)
    ]
    record_run(rows, RUN_KINDS, "vitedge-cifar10")
    same = recommend(Machine(probe_cpu(), versions=then), measured.load_store())[0]
    assert same.recommend == "onnx int8-dynamic on onnxruntime"
    assert not any("runtime version" in warning for warning in same.warnings)
    now = recommend(Machine(probe_cpu(), versions={**then, "onnxruntime": "1.32.0"}), measured.load_store())[0]
    assert now.recommend == "onnx int8-dynamic on onnxruntime"  # still the advice, with its caveat
    assert now.warnings[-1] == (
        "measured with another runtime version (onnxruntime 1.31.0, installed now 1.32.0): "
        "the figures may not hold until `vitedge run` measures again"
    )
    board = measured.board_for(probe_cpu(), measured.load_store())
    board["models"]["vitedge-cifar10"]["where"] = "ssh://pi@board"  # a board's versions are its own
    assert measured.runtimes_changed(board, {"onnxruntime": "1.32.0"}) == ()


def test_a_run_timed_under_a_cpu_quota_says_so_beside_its_advice(own_cache, monkeypatch):
    """`vitedge run` in a container allowed half a CPU: its rows are kept (a small board's default
    run is remembered too) and `vitedge targets` says, beside the advice, that they were timed
    throttled (before: the figures were given as the CPU's). The rows are timed at 1 thread."""
    from vitedge.targets import measured
    from vitedge.workflows.board import record_run

    record_run(run_rows(), RUN_KINDS, "vitedge-cifar10")
    target = recommend(Machine(probe_cpu()), measured.load_store())[0]
    assert not any("when measured" in warning for warning in target.warnings)
    monkeypatch.setattr("vitedge.core.cpu.cpu_quota", lambda root="/": 0.5)
    record_run(run_rows(), RUN_KINDS, "vitedge-cifar10")
    target = recommend(Machine(probe_cpu()), measured.load_store())[0]
    assert target.recommend == "onnx int8-dynamic on onnxruntime"
    assert target.warnings[-1] == (
        "when measured, threads 1 is more than this process's cgroup CPU quota of 0.5 CPUs: the kernel stops them "
        "for part of every period, and the timings measure that, not the runtime"
    )


def test_this_machines_runtime_versions_are_the_ones_its_runners_name(onnx_artifact):
    """What `vitedge targets` compares with is spelled as a measurement records it."""
    import openvino

    versions = probe_machine().versions
    assert open_artifact(onnx_artifact, target="cpu").info.versions == {"onnxruntime": versions["onnxruntime"]}
    assert versions["openvino"] == openvino.get_version() and versions["torch"] == torch.__version__


def test_one_cpu_name_is_not_one_cpu_kind(own_cache):
    """A cloud VM names a Zen 3 without AVX-512 and a Zen 5 with it alike, "AMD EPYC" on 2
    logical CPUs: what was measured on one is never the other's advice, nor a Zen 4's that
    has the Zen 5's ISA, nor a Zen 5's whose VM hides AVX-512; the same kind again gets it, and
    the others list it by generation."""
    from vitedge.targets import measured

    avx512 = "fsrm avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 avx_vnni"

    def epyc(family: int, model: int, flags: str = "fsrm") -> CpuInfo:
        text = EPYC_AVX2.replace("cpu family\t: 25", f"cpu family\t: {family}").replace(
            "model\t\t: 1", f"model\t\t: {model}"
        )
        return parse_cpuinfo(text.replace("fsrm", flags))

    zen3, zen4, zen5 = epyc(25, 1), epyc(25, 17, avx512), epyc(26, 2, avx512)
    assert {cpu.model for cpu in (zen3, zen4, zen5)} == {"AMD EPYC"} and zen3.cores == zen5.cores == 2
    assert (zen3.generation, zen5.generation) == ("family 25 model 1", "family 26 model 2")
    keep_board(zen3, "vitedge-cifar10", "local")
    assert recommend(Machine(zen3), measured.load_store())[0].recommend == "executorch int8 on executorch"
    for other in (zen5, zen4):
        target = recommend(Machine(other), measured.load_store())[0]
        assert "measure it instead: vitedge run here" in target.why and "executorch" not in target.recommend
    keep_board(zen5, "vitedge-cifar10", "local", openvino_parity=True)
    assert recommend(Machine(zen5), measured.load_store())[0].recommend == "openvino int8 on openvino"
    for other in (zen4, epyc(26, 2)):  # a Zen 4 with the Zen 5's ISA, a Zen 5 whose VM hides AVX-512
        assert "measure it instead: vitedge run here" in recommend(Machine(other), measured.load_store())[0].why
    listed = [t.device for t in recommend(Machine(zen4), measured.load_store())[1:] if t.target.startswith("elsewhere")]
    assert sorted(listed) == [
        "AMD EPYC (2 logical CPUs; family 25 model 1; AVX2, FMA)",
        "AMD EPYC (2 logical CPUs; family 26 model 2; AVX2, FMA, AVX512F, AVX512-VNNI, AVX-VNNI, AVX512-BF16)",
    ]


def test_vitedge_run_records_what_it_measured(own_cache, monkeypatch):
    """The command itself keeps its rows: `vitedge targets --json` then recommends from them."""
    from vitedge.workflows import pipeline
    from vitedge.workflows.recipe import Recipe, rows_for

    kinds = rows_for(Recipe()).kinds  # the rows `vitedge run` measures on this CPU
    by_kind = dict(zip(RUN_KINDS, run_rows(), strict=True))
    rows = [by_kind.get(kind, measured_row("openvino", "openvino", "fp16", 1.0, True)) for kind in kinds]
    monkeypatch.setattr(pipeline, "run_pipeline", lambda recipe, folder, **_: rows)
    done = CliRunner().invoke(app, ["run", "--json", "--out", str(own_cache.parent / "run")])
    assert done.exit_code == 0, done.output
    listed = CliRunner().invoke(app, ["targets", "--json"])
    cpu = json.loads(listed.stdout)["targets"][0]
    assert cpu["recommend"] == "onnx int8-dynamic on onnxruntime" and f"on {Recipe().model}, batch 1" in cpu["why"]
    blocked = own_cache.parent / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("VITEDGE_CACHE", str(blocked))  # no cache can be made there
    with pytest.warns(UserWarning, match="will not recommend from these measurements"):  # one line, no traceback
        done = CliRunner().invoke(app, ["run", "--json", "--out", str(own_cache.parent / "run2")])
    assert done.exit_code == 0 and done.exception is None, done.output


def test_a_board_bench_with_an_unwritable_cache_warns_and_keeps_its_rows(own_cache, monkeypatch):
    """`vitedge bench` on a board (and on an ARM machine itself) records through the same path
    as `vitedge run`: a cache that cannot be made is one warning, not an OSError."""
    blocked = own_cache.parent / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("VITEDGE_CACHE", str(blocked))
    with pytest.warns(UserWarning, match="will not recommend from these measurements"):
        keep_board(parse_cpuinfo(PI5, "aarch64"), "vitedge-cifar10", "pi@board")


def test_arm_targets_recommend_from_what_was_measured_on_the_board(own_cache):
    """On a Pi 5 that `vitedge bench` measured, the recommendation is the row that bench chose
    (the fastest that passed parity there; not the dotprod rule), with the figures it comes
    from; a faster row outside its bounds is named and never chosen; the latest model wins."""
    from vitedge.targets import measured

    pi5 = parse_cpuinfo(PI5, "aarch64")
    assert cpu_target(PI5).recommend == "onnx int8-dynamic"  # the rule, before any measurement
    assert "measure it instead: vitedge bench" in cpu_target(PI5).why
    keep_board(pi5, "older.safetensors", "local", openvino_parity=True)
    keep_board(pi5, "vitedge-cifar10", "local")
    target = recommend(Machine(pi5), measured.load_store())[0]
    assert target.recommend == "executorch int8 on executorch"
    assert "on vitedge-cifar10, batch 1, threads 1" in target.why
    assert "executorch int8 on executorch 57.5 it/s (p50 17.39 ms, parity passed)" in target.why
    assert "openvino int8 on openvino 70.2 it/s (p50 14.25 ms, parity FAILED)" in target.why
    assert target.warnings[0] == "failed parity here, not recommended: openvino int8 on openvino"
    assert target.warnings[1].startswith(
        "other models measured here ran fastest otherwise (older.safetensors: openvino"
    )
    keep_board(pi5, "older.safetensors", "local", openvino_parity=True)  # measured again: now the latest
    assert recommend(Machine(pi5), measured.load_store())[0].recommend == "openvino int8 on openvino"


def test_two_runs_recording_at_once_keep_both_models(own_cache, monkeypatch):
    """Two `vitedge run`s (each in a folder of its own) finishing together: both read the
    store, then each wrote it with its own model added, the later dropping the other's rows.
    Here each read is held open long enough for the other run to write in between."""
    import threading
    import time

    from vitedge.targets import measured

    read = measured.load_store

    def slow_read(path=None):
        store = read(path)
        time.sleep(0.3)
        return store

    monkeypatch.setattr(measured, "load_store", slow_read)
    row = {"name": "a", "runtime": "onnxruntime", "format": "onnx", "precision": "int8-dynamic", "threads": 2,
           "it_per_s_b1": 50.0, "p50_ms_b1": 20.0, "parity_passed": True}  # fmt: skip
    runs = [
        threading.Thread(target=measured.record, args=(probe_cpu(), model, [row]), kwargs={"where": "local"})
        for model in ("first.safetensors", "second.safetensors")
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    board = measured.board_for(probe_cpu(), read())
    assert sorted(board["models"]) == ["first.safetensors", "second.safetensors"]


def test_arm_measurements_without_parity_recommend_nothing(own_cache):
    """Speed alone (a local bench of artifacts checks no parity) is shown, not recommended."""
    from vitedge.targets import measured

    pi5 = parse_cpuinfo(PI5, "aarch64")
    measured.record(pi5, "m", [{"name": "a", "runtime": "executorch", "format": "executorch", "precision": "int8",
                                "threads": 4, "it_per_s_b1": 50.0, "p50_ms_b1": 20.0, "parity_passed": None}],
                    where="local")  # fmt: skip
    target = recommend(Machine(pi5), measured.load_store())[0]
    assert target.recommend == "onnx int8-dynamic"  # the rule stays, and says what was measured
    assert "no row passed parity" in target.why and "50.0 it/s (p50 20.00 ms, parity not checked)" in target.why


def test_boards_benched_over_ssh_get_rows_of_their_own(own_cache):
    """From the desktop: the board measured over SSH is listed (not available here), with its
    CPU facts and measured recommendation; this machine's own row keeps its ISA rule."""
    pi5 = parse_cpuinfo(PI5, "aarch64")
    keep_board(pi5, "vitedge-cifar10", "ssh://pi@raspberrypi.local")
    from vitedge.targets import measured

    targets = recommend(Machine(parse_cpuinfo(XEON_VNNI)), measured.load_store())
    boards = [t for t in targets if t.target.startswith("ssh://")]
    assert [t.target for t in boards] == ["ssh://pi@raspberrypi.local"] and not boards[0].available
    assert boards[0].recommend == "executorch int8 on executorch" and "dotprod" in boards[0].device
    assert "AVX512-VNNI" in targets[0].why  # the desktop's own row: its rule, untouched
    done = CliRunner().invoke(app, ["targets", "--json"])
    assert done.exit_code == 0, done.output
    listed = {t["target"]: t for t in json.loads(done.stdout)["targets"]}
    assert listed["ssh://pi@raspberrypi.local"]["recommend"] == "executorch int8 on executorch"


def test_a_store_entry_of_another_shape_is_left_out_not_a_crash(own_cache, capsys, monkeypatch):
    """boards.json is plain JSON in the user's cache: an entry edited by hand (or by another
    version) is skipped, the well-formed ones kept, and `vitedge targets` still answers (before:
    `AttributeError: 'int' object has no attribute 'get'`, exit 1)."""
    import json

    from tests.support.cli import cli
    from vitedge.targets import measured

    keep_board(board_cpu(PI5, "aarch64"), "vitedge-cifar10", "ssh://pi@raspberrypi.local")
    store = measured.load_store()
    (good,) = store
    rows = store[good]["models"]["vitedge-cifar10"]["rows"]
    damaged = {
        "not a board": 5,
        "models a list": {"cpu": {}, "models": [1, 2]},
        "a row without its runtime": {"cpu": {}, "models": {"m": {"rows": [{"format": "onnx", "precision": "fp32"}]}}},
        "a speed as text": {"cpu": {}, "models": {"m": {"rows": [{**rows[0], "it_per_s_b1": "fast"}]}}},
    }
    measured.store_path().write_text(json.dumps({**store, **damaged}))
    assert list(measured.load_store()) == [good]
    code, out, err = cli(capsys, monkeypatch, "targets")
    assert code == 0 and "raspberrypi.local" in out, out + err


def test_an_emulated_boards_speeds_are_not_kept_as_advice(own_cache):
    """A board under qemu-user (an arm64 container on an x86 laptop): `vitedge bench` still
    prints its rows, but says the speeds are the emulator's and keeps nothing for `targets`."""
    from vitedge.targets import measured

    emulated = board_cpu(XEON_AMX, "aarch64", "", [1 << 1 | 1 << 10 | 1 << 20, 0])
    assert emulated.emulated and not board_cpu(PI5, "aarch64").emulated
    made_up = board_cpu(QEMU_A76, "aarch64", "", [1 << 1 | 1 << 10 | 1 << 20, 0], "x86_64")
    with pytest.warns(UserWarning, match=r"the CPU is emulated \(ARMv8 Processor rev 1 \(v8l\), emulated \(the kernel"):
        keep_board(made_up, "vitedge-cifar10", "ssh://root@arm64-container")
    with pytest.warns(
        UserWarning, match=r"the CPU is emulated \(aarch64 CPU, emulated .*the emulator's, not a board's"
    ):
        keep_board(emulated, "vitedge-cifar10", "ssh://root@arm64-container")
    assert measured.load_store() == {}
    keep_board(board_cpu(PI5, "aarch64"), "vitedge-cifar10", "ssh://pi@raspberrypi.local")  # a real one is kept
    assert len(measured.load_store()) == 1


SAPPHIRE_RAPIDS_ISA = ("AVX2", "FMA", "AVX512F", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")


@pytest.mark.parametrize(
    ("cap", "ruled_out"),
    [
        ("AVX2", ("AVX512F", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")),
        ("avx2_vnni", ("AVX512F", "AVX512-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")),  # oneDNN takes any case
        ("AVX512_CORE_VNNI", ("AVX-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")),  # its mask lacks AVX2_VNNI's bit
        ("AVX512_CORE_BF16", ("AVX-VNNI", "AVX512-FP16", "AMX")),
        ("AVX512_CORE_FP16", ("AMX",)),
        ("AVX512_CORE_AMX", ()),
        ("ALL", ()),
        ("no-such-isa", ()),  # oneDNN ignores a value it does not know
    ],
)
def test_a_onednn_cap_rules_out_what_its_isa_mask_lacks(cap: str, ruled_out: tuple[str, ...]):
    """oneDNN's ISA masks (dnnl_cpu_isa_t) decide what a cap keeps from OpenVINO's CPU plugin."""
    assert onednn_denied(cap, SAPPHIRE_RAPIDS_ISA) == ruled_out
    assert onednn_denied(cap, ("AVX2", "FMA")) == ()  # nothing above AVX2 on an AVX2-only CPU to rule out


def test_a_onednn_cap_is_read_as_onednn_reads_it_and_kept_where_it_binds():
    assert read_onednn_cap({}) is None and read_onednn_cap({"ONEDNN_MAX_CPU_ISA": " "}) is None
    assert read_onednn_cap({"DNNL_MAX_CPU_ISA": "AVX2"}) == "DNNL_MAX_CPU_ISA=AVX2"  # the older name
    both = {"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"}
    assert read_onednn_cap(both) == "ONEDNN_MAX_CPU_ISA=ALL"  # the newer name wins, as in oneDNN
    capped = board_cpu(XEON_AMX, "x86_64", onednn_cap="ONEDNN_MAX_CPU_ISA=AVX2")
    assert capped.onednn_cap == "ONEDNN_MAX_CPU_ISA=AVX2" and capped.isa == board_cpu(XEON_AMX, "x86_64").isa
    assert capped.onednn_denied == ("AVX512F", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16", "AVX512-FP16", "AMX")
    assert not board_cpu(XEON_AMX, "x86_64", onednn_cap="ONEDNN_MAX_CPU_ISA=ALL").onednn_cap
    assert not board_cpu(PI5, "aarch64", onednn_cap="ONEDNN_MAX_CPU_ISA=AVX2").onednn_cap  # x86 masks only


def test_this_machines_onednn_cap_is_read_from_its_environment(monkeypatch):
    """Capped at SSE4.1, any x86 CPU with AVX2 or more is held below its ISA; no x86 cap binds on ARM."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    cpu = probe_cpu()
    binds = arch_family(cpu.arch) == "x86" and bool(cpu.isa)
    assert (cpu.onednn_cap == "ONEDNN_MAX_CPU_ISA=SSE41") == binds and cpu.onednn_denied == (cpu.isa if binds else ())
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert not probe_cpu().onednn_cap


def test_speeds_taken_under_a_onednn_cap_are_not_kept_as_advice(own_cache):
    """OpenVINO under ONEDNN_MAX_CPU_ISA=AVX2 ran 2.3x slower than on an AMX CPU's own kernels
    (vitedge-cifar10 int8, batch 1): kept, they would be `vitedge targets`' advice for this CPU."""
    from vitedge.targets import measured

    capped = board_cpu(XEON_AMX, "x86_64", onednn_cap="ONEDNN_MAX_CPU_ISA=AVX2")
    with pytest.warns(UserWarning, match=r"ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN .* from AVX512F, .*keeps nothing"):
        keep_board(capped, "vitedge-cifar10", "local, vitedge run")
    assert measured.load_store() == {}
    keep_board(board_cpu(XEON_AMX, "x86_64"), "vitedge-cifar10", "local, vitedge run")
    assert len(measured.load_store()) == 1


def test_a_run_under_a_onednn_cap_says_so_beside_its_figures():
    from vitedge.workflows.report import machine_line, recommendation_line

    row = measured_row("openvino", "openvino", "int8", 580.0, True)
    capped = replace(
        row.measurement,
        machine={"cpu": "Xeon", "isa": list(SAPPHIRE_RAPIDS_ISA), "onednn_cap": "ONEDNN_MAX_CPU_ISA=AVX2"},
    )
    row = replace(row, measurement=capped)
    assert "ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN (OpenVINO's CPU plugin) from AVX512F" in machine_line([row])
    pinned = {
        "cpus": [4, 5, 6, 7],
        "of": list(range(8)),
        "rated_by": "cpu_capacity",
        "ratings": {str(c): rate for c, rate in RK3588.items()},
    }
    row = replace(row, measurement=replace(row.measurement, machine={**row.measurement.machine, "timed_on": pinned}))
    assert "; timed on CPUs 4,5,6,7 of 8 (cpu_capacity: 4 at 1024, 4 at 414)" in machine_line([row])
    assert "OpenVINO under ONEDNN_MAX_CPU_ISA=AVX2: its speeds are an older CPU's kernels" in recommendation_line(
        [row], 1.0
    )


def test_tests_keep_out_of_the_users_cache(tmp_path_factory):
    """What a test's `vitedge run` records lands in pytest's temporary folder (conftest), not in
    ~/.cache/vitedge, where `vitedge targets` would recommend from the test's tiny model."""
    from vitedge.targets.measured import store_path

    assert store_path().is_relative_to(tmp_path_factory.getbasetemp())


def cpu_tree(root: Path, ratings: dict[int, int], name: str = "cpu_capacity") -> str:
    """A /sys/devices/system/cpu with each CPU rated in `name`."""
    for cpu, rating in ratings.items():
        (root / f"cpu{cpu}" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"cpu{cpu}" / name).write_text(f"{rating}\n")
    return str(root)


RK3588 = {**dict.fromkeys(range(4), 414), **dict.fromkeys(range(4, 8), 1024)}  # 4 Cortex-A55 + 4 Cortex-A76


@pytest.mark.parametrize(
    ("ratings", "threads", "chosen"),
    [
        (RK3588, 1, (4, 5, 6, 7)),
        (RK3588, 4, (4, 5, 6, 7)),
        (RK3588, 6, tuple(range(8))),  # more threads than big cores: the little ones join
        ({0: 1024, 1: 870, 2: 870, 3: 870, 4: 300, 5: 300}, 2, (0, 1, 2, 3)),  # prime + big + little
        (dict.fromkeys(range(4), 1024), 2, (0, 1, 2, 3)),  # alike: all
        # a favoured core (and its SMT sibling) 4% faster is the same kind as the other P-cores
        ({0: 5200000, 1: 5200000, 2: 5000000, 3: 5000000, 4: 3800000, 5: 3800000}, 2, (0, 1, 2, 3)),
    ],
)
def test_the_fastest_cpus_are_chosen_for_a_timing(ratings, threads, chosen):
    assert fastest_cpus(ratings, threads) == chosen


def test_core_speeds_are_read_from_the_kernels_ratings(tmp_path):
    assert read_core_speeds([0, 1, 2], cpu_tree(tmp_path / "arm", {0: 414, 1: 414, 2: 1024})) == (
        "cpu_capacity",
        {0: 414, 1: 414, 2: 1024},
    )
    hybrid = cpu_tree(tmp_path / "x86", {0: 5000000, 1: 5000000, 2: 3800000}, "cpufreq/cpuinfo_max_freq")
    assert read_core_speeds([0, 1, 2], hybrid) == ("cpufreq/cpuinfo_max_freq", {0: 5000000, 1: 5000000, 2: 3800000})
    partial = cpu_tree(tmp_path / "partial", {0: 1024})  # cpu1 unrated: no ratings at all
    assert read_core_speeds([0, 1], partial) == ("", {})
    assert read_core_speeds([0, 1], str(tmp_path / "none")) == ("", {})


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_process_is_kept_on_its_fastest_cpus(tmp_path):
    """For real, in a fresh process: the kernel rates this process's last CPU fastest, so from
    then on it (and any thread it starts) runs there alone, and the record says so."""
    allowed = sorted(os.sched_getaffinity(0))
    root = cpu_tree(tmp_path, {**dict.fromkeys(allowed, 400), allowed[-1]: 1024})
    script = (
        "import json, os, threading; from vitedge.core.cpu import pin_to_fastest;"
        f"pinned = pin_to_fastest(1, {root!r}); seen = [];"
        "t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0)))); t.start(); t.join();"
        "print(json.dumps([pinned, sorted(os.sched_getaffinity(0)), seen[0]]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pinned, process, thread = json.loads(done.stdout)
    assert process == thread == [allowed[-1]]
    assert pinned["cpus"] == [allowed[-1]] and pinned["of"] == allowed and pinned["rated_by"] == "cpu_capacity"
    assert pinned_text(pinned).startswith(f"timed on CPUs {allowed[-1]} of {len(allowed)} (cpu_capacity: 1 at 1024,")
    alike = cpu_tree(tmp_path / "alike", dict.fromkeys(allowed, 1024))
    script = (
        "from vitedge.core.cpu import pin_to_fastest; import os;"
        f"print(pin_to_fastest(1, {alike!r}), pin_to_fastest(None, {root!r}), len(os.sched_getaffinity(0)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # nothing to choose between, or no thread count to fit (the runtime's own): untouched
    assert done.stdout.split() == ["None", "None", str(len(allowed))]
