"""This machine's CPU as the rest of vitedge sees it: architecture, model name and the
instruction-set extensions that decide what runs fast (int8 dot products, native bf16).
`/proc/cpuinfo` is parsed from text, so the same code reads a board's cpuinfo (e.g. one
fetched over SSH) as well as this machine's. On 64-bit ARM the kernel's hwcaps (`getauxval`)
are read too: they are what the process may actually use, and under user-mode emulation
(qemu-user, an arm64 container on an x86 host) they describe the emulated CPU while
/proc/cpuinfo describes the host's (qemu 7) or, made up by qemu, the emulated one (newer qemu:
10.0 does). Either way the kernel's own architecture (`/proc/sys/kernel/arch`, which qemu passes
through) tells emulation apart from a real board. On x86 the same holds within one family
(qemu-x86_64 as an AVX2 CPU, Intel SDE): numpy's own CPUID probe says what this process can
run, and a feature cpuinfo lists but the process cannot run marks the CPU as emulated.

The board bundle ships this file byte for byte (`read_hwcaps` runs there), so it imports
nothing outside the standard library at import time (numpy is asked where it is installed)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

X86_ARCHES = ("x86_64", "amd64", "i686")
X86_32 = ("i386", "i586")  # older 32-bit names, for telling architecture families apart
ARM_ARCHES = ("aarch64", "arm64", "armv6l", "armv7l", "armv8l", "arm")  # a 32-bit userland on an arm64 kernel is native
# (display name, cpuinfo flag(s) that must all be present)
X86_ISA = (
    ("AVX2", ("avx2",)),
    ("FMA", ("fma",)),
    ("AVX512F", ("avx512f",)),
    ("AVX512-VNNI", ("avx512_vnni",)),
    ("AVX-VNNI", ("avx_vnni",)),
    ("AVX512-BF16", ("avx512_bf16",)),
    ("AVX512-FP16", ("avx512_fp16",)),
    ("AMX", ("amx_tile", "amx_int8")),
)
ARM_ISA = (
    ("NEON", ("asimd",)),
    ("fp16", ("asimdhp",)),
    ("dotprod", ("asimddp",)),
    ("i8mm", ("i8mm",)),
    ("bf16", ("bf16",)),
    ("SVE", ("sve",)),
)
# 32-bit ARM names (an armv7l kernel's Features line, or an arm64 kernel's to a 32-bit
# process) for the extensions ARM_ISA names by their aarch64 flag; fp16, dotprod and i8mm
# keep their names (asimdhp, asimddp, i8mm)
ARM32_FLAGS = {"neon": "asimd", "asimdbf16": "bf16"}
# cpuinfo flag -> the name numpy's CPUID probe gives it; AMX and AVX-VNNI have none there, so
# on an emulated x86 CPU they are not claimed
X86_CPUID = {
    "avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16",
    "avx512_fp16": "AVX512FP16",
}  # fmt: skip
X86_UNPROBED = frozenset({"amx_tile", "amx_int8", "amx_bf16", "avx_vnni"})
ARM64_ARCHES = ("aarch64", "arm64")
# aarch64 AT_HWCAP / AT_HWCAP2 bits (Linux arch/arm64/include/uapi/asm/hwcap.h), by the name
# /proc/cpuinfo's Features line gives each: (0 for AT_HWCAP or 1 for AT_HWCAP2, bit)
AARCH64_HWCAPS = {
    "asimd": (0, 1), "asimdhp": (0, 10), "asimddp": (0, 20), "sve": (0, 22), "i8mm": (1, 13), "bf16": (1, 14),
}  # fmt: skip
AT_HWCAP, AT_HWCAP2 = 16, 26
# oneDNN (OpenVINO's CPU plugin, PyTorch's oneDNN ops) runs no kernel above the ISA these name;
# the newer name wins, and a value oneDNN does not know is ignored (as oneDNN ignores it)
ONEDNN_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN's dnnl_cpu_isa_t bit masks (dnnl_types.h): an ISA is allowed under a cap whose bits hold its own
ONEDNN_ISA_BITS = {
    "SSE41": 0x1, "AVX": 0x3, "AVX2": 0x7, "AVX2_VNNI": 0xF, "AVX2_VNNI_2": 0x1F, "AVX512_CORE": 0x27,
    "AVX512_CORE_VNNI": 0x67, "AVX512_CORE_BF16": 0xE7, "AVX10_1_512": 0x1EF, "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF, "AVX512_CORE_AMX": 0xFEF, "AVX10_1_512_AMX_FP16": 0x1FEF,
    "AVX512_CORE_AMX_FP16": 0x1FEF,
}  # fmt: skip
# the display names of X86_ISA as the oneDNN ISA that first includes each
X86_ONEDNN_BITS = {
    "AVX2": 0x7, "FMA": 0x7, "AVX512F": 0x27, "AVX512-VNNI": 0x67, "AVX-VNNI": 0xF, "AVX512-BF16": 0xE7,
    "AVX512-FP16": 0x1EF, "AMX": 0xFEF,
}  # fmt: skip
INT8_DOT = {"AVX512-VNNI", "AVX-VNNI", "AMX", "dotprod", "i8mm"}
BF16_NATIVE = {"AVX512-BF16", "AMX", "bf16"}  # bf16 dot products in hardware (x86, ARM)
# Part numbers are the implementer's own: these are Arm Ltd.'s (implementer 0x41), seen on boards
# and ARM servers; another implementer's parts are shown by number, under its name.
ARM_LTD = 0x41
IMPLEMENTERS = {
    0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA", 0x50: "Applied Micro",
    0x51: "Qualcomm", 0x61: "Apple", 0x6D: "Microsoft", 0xC0: "Ampere",
}  # fmt: skip
ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
    0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
    0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C", 0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520",
    0xD81: "Cortex-A720", 0xD82: "Cortex-X4",
}  # fmt: skip


@dataclass(frozen=True)
class CpuInfo:
    arch: str  # x86_64 | aarch64 | armv7l | ...
    model: str
    cores: int
    flags: frozenset[str]
    emulated: bool = False  # user-mode emulation (qemu-user): the ISA is real, its speed is not
    onednn_cap: str = ""  # "ONEDNN_MAX_CPU_ISA=AVX2" where the environment keeps oneDNN below this ISA
    # which design the cores are, where the model name may not say: x86 "family 26 model 2" (a
    # cloud VM names a Zen 3 and a Zen 5 alike "AMD EPYC"), ARM the cores' part names
    generation: str = ""

    @property
    def isa(self) -> tuple[str, ...]:
        """The instruction-set extensions that matter for inference, by display name."""
        if self.arch in X86_ARCHES:
            table, flags = X86_ISA, self.flags
        else:
            table, flags = ARM_ISA, self.flags | {ARM32_FLAGS[f] for f in self.flags if f in ARM32_FLAGS}
        return tuple(name for name, needed in table if all(f in flags for f in needed))

    @property
    def isa_text(self) -> str:
        """The ISA list as messages write it."""
        return ", ".join(self.isa) or "no SIMD extensions reported"

    @property
    def int8_dot(self) -> tuple[str, ...]:
        return tuple(name for name in self.isa if name in INT8_DOT)

    @property
    def u8s8_saturates(self) -> bool:
        """x86 without an int8 dot-product instruction: ONNX Runtime's u8×s8 products add pairs
        in 16 bits (VPMADDUBSW), which overflow when weights use the full int8 range; 7-bit
        weights (reduce_range) cannot. VNNI/AMX and ARM kernels accumulate in 32 bits."""
        return self.arch in X86_ARCHES and not self.int8_dot

    @property
    def bf16(self) -> tuple[str, ...]:
        """The extensions that compute bf16 natively (empty: bf16 would be emulated)."""
        return tuple(name for name in self.isa if name in BF16_NATIVE)

    @property
    def described(self) -> str:
        """Model and ISA as a result names the machine, with a oneDNN cap that binds."""
        capped = onednn_cap_note(self.onednn_cap, self.isa)
        return f"{self.model} ({self.isa_text}{'; ' + capped if capped else ''})"

    @property
    def onednn_denied(self) -> tuple[str, ...]:
        """The extensions of this CPU that `onednn_cap` keeps oneDNN's kernels from."""
        return cap_denies(self.onednn_cap, self.isa)


def onednn_denied(cap: str, isa: tuple[str, ...]) -> tuple[str, ...]:
    """Which of `isa` (display names) a oneDNN ISA cap such as "AVX2" rules out; () for a
    value oneDNN does not know (it ignores those) or a cap at or above the CPU."""
    bits = ONEDNN_ISA_BITS.get(cap.strip().upper())
    if bits is None:
        return ()
    return tuple(name for name in isa if X86_ONEDNN_BITS.get(name, 0) & ~bits)


def cap_denies(setting: str, isa: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`onednn_denied` for a setting as `read_onednn_cap` gives it ("ONEDNN_MAX_CPU_ISA=AVX2"; "" for none)."""
    return onednn_denied(setting.partition("=")[2], tuple(isa)) if setting else ()


def onednn_cap_note(cap: str, isa: tuple[str, ...] | list[str]) -> str:
    """What a binding cap (`CpuInfo.onednn_cap`) means, as messages write it; "" for none."""
    denied = cap_denies(cap, isa)
    return f"{cap} keeps oneDNN (OpenVINO's CPU plugin) from {', '.join(denied)}" if denied else ""


def read_onednn_cap(environ: dict[str, str] | None = None) -> str | None:
    """The oneDNN ISA cap this process's environment sets ("ONEDNN_MAX_CPU_ISA=AVX2"), or None.
    oneDNN reads it once, when it starts; OpenVINO's CPU plugin then runs the kernels of an
    older CPU here, while ONNX Runtime (MLAS) still runs this CPU's: a test of another CPU's
    kernels, whose speeds are not this CPU's."""
    environ = os.environ if environ is None else environ
    for name in ONEDNN_CAP_VARIABLES:
        value = (environ.get(name) or "").strip()
        if value:
            return f"{name}={value}"
    return None


def _core_name(implementer: int, part: int) -> str:
    """Arm Ltd.'s cores by name; any other core (or an Arm part not listed) by number, under its maker."""
    if implementer == ARM_LTD:
        return ARM_PARTS.get(part, f"Arm part {part:#x}")
    return f"{IMPLEMENTERS.get(implementer, f'implementer {implementer:#x}')} part {part:#x}"


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuInfo:
    """`/proc/cpuinfo` text (x86 or ARM) → CpuInfo. `machine` (platform.machine()) wins
    over the guess from the text when given."""
    fields: dict[str, str] = {}
    processors = 0
    parts: list[tuple[int, int]] = []  # (implementer, part) per processor
    implementer = ARM_LTD  # a block without the line: the one before it
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        if key in ("cpu implementer", "cpu part"):
            try:
                number = int(value, 16)
            except ValueError:
                continue
            if key == "cpu implementer":
                implementer = number
            else:
                parts.append((implementer, number))
        fields.setdefault(key, value)
    if "flags" in fields:
        arch, flags = machine or "x86_64", fields["flags"]
    else:
        arch, flags = (
            machine or ("aarch64" if "asimd" in fields.get("features", "").split() else "arm"),
            fields.get("features", ""),
        )
    model = fields.get("model name") or ""
    cores = sorted({_core_name(maker, part) for maker, part in parts})
    if "flags" in fields:
        family, number = fields.get("cpu family", ""), fields.get("model", "")
        generation = f"family {family} model {number}" if family.isdigit() and number.isdigit() else ""
    else:
        generation = ", ".join(cores)
    if not model or model.lower() in ("arm", "unknown"):
        board = fields.get("model") or fields.get("hardware") or ""
        model = " ".join(x for x in (board, f"({', '.join(cores)})" if cores else "") if x) or model or arch
    return CpuInfo(arch=arch, model=model, cores=processors or 1, flags=frozenset(flags.split()), generation=generation)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def read_kernel_arch() -> str | None:
    """The running kernel's architecture as the kernel.arch sysctl names it (`uname -m`, which
    qemu-user answers with the emulated one instead), or None where the kernel lacks it."""
    return _read("/proc/sys/kernel/arch").strip() or None


def arch_family(arch: str) -> str:
    """x86 or arm for the machine names one family's kernel runs natively; any other name as is."""
    return "x86" if arch in X86_ARCHES + X86_32 else "arm" if arch in ARM_ARCHES else arch


def read_cpu_features() -> dict[str, bool] | None:
    """What numpy's CPUID probe found this process can run (x86: the CPU's bits and the
    OS-enabled register state), by numpy's names; None without numpy or its probe."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found  # numpy 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as found  # numpy 1
        except ImportError:
            return None
    return {str(name): bool(value) for name, value in found.items()}


def read_hwcaps() -> tuple[int, int] | None:
    """This process's AT_HWCAP and AT_HWCAP2 from the C library's `getauxval` (glibc 2.16+,
    musl), or None where there is no such call."""
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))


def hwcap_flags(hwcaps: tuple[int, int] | list[int]) -> frozenset[str]:
    """aarch64 hwcaps → the Features names the ISA table reads."""
    return frozenset(name for name, (word, bit) in AARCH64_HWCAPS.items() if hwcaps[word] >> bit & 1)


def board_cpu(
    cpuinfo: str,
    machine: str | None,
    device_tree_model: str = "",
    hwcaps: tuple[int, int] | list[int] | None = None,
    kernel_arch: str | None = None,
    cpu_features: dict[str, bool] | None = None,
    onednn_cap: str | None = None,
) -> CpuInfo:
    """A machine's CpuInfo from its /proc/cpuinfo text, /proc/device-tree/model (which names
    a board such as a Raspberry Pi where cpuinfo does not), on aarch64 its hwcaps, and its
    kernel's architecture, and on x86 numpy's CPUID view: this machine's, or a board's as its
    bundle reported them over SSH. A process whose kernel is of another architecture family
    is emulated, and so is an aarch64 one whose cpuinfo describes an x86 CPU (then its ISA comes
    from the hwcaps alone) and an x86 one that cannot run what cpuinfo lists (then only what it
    can run is claimed): the model says so each time. A oneDNN cap (`read_onednn_cap`) that
    rules out some of the ISA is kept beside it (`onednn_cap`, `onednn_denied`)."""
    cpu = parse_cpuinfo(cpuinfo, machine)
    arm64 = cpu.arch in ARM64_ARCHES
    if arm64 and any(line.lower().startswith("flags") for line in cpuinfo.splitlines()):  # x86 text
        model = f"{cpu.arch} CPU, emulated (its /proc/cpuinfo describes the host's {cpu.model})"
        cpu = replace(cpu, model=model, flags=frozenset(), emulated=True, generation="")
    elif kernel_arch and arch_family(kernel_arch) != arch_family(cpu.arch):
        cpu = replace(cpu, model=f"{cpu.model}, emulated (the kernel is {kernel_arch})", emulated=True)
    elif cpu.arch in X86_ARCHES and cpu_features:
        denied = sorted(
            flag for flag, name in X86_CPUID.items() if flag in cpu.flags and cpu_features.get(name) is False
        )
        if denied:
            cannot = ", ".join(display for display, needed in X86_ISA if needed[0] in denied)
            model = (
                f"{cpu.arch} CPU, emulated (its /proc/cpuinfo describes the host's {cpu.model};"
                f" this process cannot run {cannot})"
            )
            cpu = replace(cpu, model=model, flags=cpu.flags - set(denied) - X86_UNPROBED, emulated=True, generation="")
    if arm64 and hwcaps:
        cpu = replace(cpu, flags=cpu.flags | hwcap_flags(hwcaps))
    board = device_tree_model.strip("\x00\n ")
    if board and board not in cpu.model:
        cpu = replace(cpu, model=f"{board} {cpu.model}".strip())
    if onednn_cap and cap_denies(onednn_cap, cpu.isa):
        cpu = replace(cpu, onednn_cap=onednn_cap)
    return cpu


CPU_SYSFS = "/sys/devices/system/cpu"
# how the kernel rates each CPU's speed, first found wins: cpu_capacity (ARM big.LITTLE and
# DynamIQ, x86 hybrid on recent kernels; 1024 for the fastest), else the highest clock
CORE_SPEED_FILES = ("cpu_capacity", "cpufreq/cpuinfo_max_freq")
# ratings within this fraction of a kind's fastest are one kind: a favoured core's few percent
# more clock (Turbo Boost Max, preferred cores) is no other core type, and picking it alone
# would put two threads on one core's SMT siblings; core types differ by far more (A55 vs A76
# 0.40, an E-core's clock vs a P-core's about 0.75)
SAME_KIND = 0.85


def read_core_speeds(cpus: Sequence[int], root: str | None = None) -> tuple[str, dict[int, int]]:
    """(the file, each CPU's rating) for `cpus`, from the first of CORE_SPEED_FILES that rates
    them all; ("", {}) where none does (a VM without cpufreq, a container that hides /sys)."""
    root = root or CPU_SYSFS
    for name in CORE_SPEED_FILES:
        speeds = {cpu: _read(f"{root}/cpu{cpu}/{name}").strip() for cpu in cpus}
        if cpus and all(value.isdigit() for value in speeds.values()):
            return name, {cpu: int(value) for cpu, value in speeds.items()}
    return "", {}


def fastest_cpus(speeds: dict[int, int], threads: int) -> tuple[int, ...]:
    """The CPUs to time on: the fastest kind (ratings within SAME_KIND of its fastest), with
    the next kinds added until there are at least `threads` of them, so no thread shares a CPU
    that a faster kind leaves idle."""
    chosen: list[int] = []
    ranked = sorted(speeds, key=lambda cpu: -speeds[cpu])
    while ranked and len(chosen) < threads:
        top = speeds[ranked[0]]
        kind = [cpu for cpu in ranked if speeds[cpu] >= SAME_KIND * top]
        chosen += kind
        ranked = ranked[len(kind) :]
    return tuple(sorted(chosen))


def pin_to_fastest(threads: int | None, root: str | None = None) -> dict[str, Any] | None:
    """Keep this process (and the runtime threads it starts from now on) on its fastest CPUs
    where they differ in speed (big.LITTLE boards such as an RK3588's 4 Cortex-A76 + 4
    Cortex-A55, x86 hybrids): left to the scheduler, a timing lands on whichever cores it picks
    and a board's figures change from run to run. Only CPUs this process may use are chosen, so
    `taskset` picks the cores to time. Without a thread count (`threads` None: the runtime's
    own choice, often one per CPU) nothing is pinned, so no runtime crowds its threads onto
    fewer CPUs than it counted. Returns what was done for the record, None where nothing
    changed (all allowed CPUs alike or unrated, or no thread count)."""
    if not threads or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    source, speeds = read_core_speeds(allowed, root)
    chosen = fastest_cpus(speeds, threads) if speeds else tuple(allowed)
    if len(chosen) == len(allowed):
        return None
    os.sched_setaffinity(0, chosen)
    return {"cpus": list(chosen), "of": allowed, "rated_by": source, "ratings": {str(c): speeds[c] for c in allowed}}


def oversubscription(
    threads: int | None, usable: int | None = None, of: str = "this process may use", root: str = "/"
) -> str | None:
    """More runtime threads than CPUs share cores: a timing then measures their contention, not
    the runtime at that thread count (a 4-core board told 8 threads, or 2 threads in a container
    allowed 1.5 CPUs' worth of time). `usable`: a board's CPU count, `of` what bounds it; by
    default the CPUs this process may run on here, and its cgroup's CPU quota."""
    if usable is None:
        usable, quota = usable_cpus(root)
        if threads and quota is not None and threads > quota:
            return (
                f"threads {threads} is more than this process's cgroup CPU quota of {quota:g} CPUs: the kernel stops "
                "them for part of every period, and the timings measure that, not the runtime"
            )
    if not threads or not usable or threads <= usable:
        return None
    cpus, cores = ("CPUs", "cores") if usable > 1 else ("CPU", "core")
    return (
        f"threads {threads} is more than the {usable} {cpus} {of}: "
        f"the timings measure {threads} threads sharing {usable} {cores}"
    )


def _cgroup_dirs(controller: str, root: str = "/") -> list[str]:
    """The folders holding this process's cgroup limits for `controller` ("cpu", "memory"), its
    own cgroup first, then each one above it (a limit set on a parent binds too, as a systemd
    slice's does): cgroup v2's unified tree, then v1's per-controller tree. Inside a container
    the mount is the container's own cgroup, so its root folder is read as well."""
    found = []
    for line in _read(os.path.join(root, "proc/self/cgroup")).splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        base = os.path.join(root, "sys/fs/cgroup", "" if controllers == "" else controller)
        if controllers != "" and controller not in controllers.split(","):
            continue
        parts = [p for p in path.split("/") if p]
        found += [os.path.join(base, *parts[:depth]) for depth in range(len(parts), -1, -1)]
    return found or [os.path.join(root, "sys/fs/cgroup"), os.path.join(root, "sys/fs/cgroup", controller)]


def cpu_quota(root: str = "/") -> float | None:
    """CPUs' worth of time per period that this process's cgroup allows (`docker --cpus 1.5`, a
    Kubernetes CPU limit, systemd's CPUQuota): the CPUs stay visible and affinity allows them
    all, but threads beyond the quota are stopped each period, so a timing at more threads
    measures the throttling. None where no quota is set."""
    quotas = []
    for folder in _cgroup_dirs("cpu", root):
        v2 = _read(os.path.join(folder, "cpu.max")).split()
        if len(v2) == 2 and v2[0].isdigit() and v2[1].isdigit() and int(v2[1]):
            quotas.append(int(v2[0]) / int(v2[1]))
        quota, period = (_read(os.path.join(folder, f"cpu.cfs_{n}_us")).strip() for n in ("quota", "period"))
        if quota.isdigit() and period.isdigit() and int(period):  # v1; -1: no quota
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def usable_cpus(root: str = "/") -> tuple[int | None, float | None]:
    """How many CPUs this process can keep busy at once: those its affinity allows (`taskset`, a
    container's cpuset), or fewer where its cgroup's CPU quota allows less time; then that
    quota where it is what bounds the count (None where the affinity does)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cpu_quota(root)
    if quota is not None and (allowed is None or quota < allowed):
        return max(math.ceil(quota), 1), quota
    return allowed, None


def runtime_threads(threads: int | None, root: str = "/") -> int | None:
    """The intra-op thread count a runtime is given: the one asked for; else, where this process
    may keep fewer CPUs busy than the machine has (a cgroup CPU quota, rounded down, or an
    affinity mask), that many; else None, the runtime's own choice (which knows SMT siblings
    and efficiency cores). ONNX Runtime, PyTorch and OpenVINO size their pools from the host's
    cores: in a container allowed 2 CPUs of a 64-core host they start dozens of threads that the
    kernel stops for most of every period."""
    if threads:
        return threads
    usable, quota = usable_cpus(root)
    if quota is not None:
        usable = max(int(quota), 1)  # a thread more than the quota runs is stopped each period
    return usable if usable is not None and usable < (os.cpu_count() or 0) else None


def bound_default_pools(environ: MutableMapping[str, str], root: str = "/") -> int | None:
    """Set OMP_NUM_THREADS to `runtime_threads`' count where a quota or an affinity mask leaves
    this process fewer CPUs than the machine has and the user set none; the count set, or None.
    For the pools vitedge opens no session for: torch outside `open_torch` (a compression step,
    an export's trace, NNCF's torch passes) and OpenBLAS under numpy, which in a container's CPU
    quota start a thread per host core. It must run before torch is imported."""
    if "OMP_NUM_THREADS" in environ:
        return None
    threads = runtime_threads(None, root)
    if threads is not None:
        environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def usable_words(cores: int, usable: int | None, quota: float | None) -> str:
    """What to write beside a CPU count where this process may keep fewer busy ("" where not)."""
    if quota is not None:
        return f", {usable} usable ({quota_words(quota)})"
    if usable is not None and usable < cores:
        return f", {usable} usable (its CPU affinity: taskset or a container's cpuset)"
    return ""


def quota_words(quota: float) -> str:
    return f"a cgroup CPU quota of {quota:g} CPUs"


def memory_available(root: str = "/") -> int | None:
    """Bytes a new allocation can have without swapping: the kernel's MemAvailable, or less
    where this process's cgroup (a container's limit) leaves less; None where neither is known."""
    found: list[int] = []
    for line in _read(os.path.join(root, "proc/meminfo")).splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    for folder in _cgroup_dirs("memory", root):
        for limit_file, used_file in (
            ("memory.max", "memory.current"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            limit, used = (_read(os.path.join(folder, name)).strip() for name in (limit_file, used_file))
            if limit.isdigit() and used.isdigit():  # cgroup v2, then v1; "max": no limit
                found.append(max(int(limit) - int(used), 0))
    return min(found) if found else None


VALUE_BYTES = {"float32": 4, "uint8": 1}


def batch_outgrows_memory(
    batch: int, image_shape: Sequence[int], available: int | None = None, what: str = "", dtype: str = "float32"
) -> str | None:
    """Why a timing batch (or a set of `what` images) cannot fit, judged by its inputs alone
    (a lower bound: the activations come on top): such a batch is killed by the
    out-of-memory killer after minutes of work, or swaps and times the disk. None where it may
    fit, or memory is not known."""
    available = memory_available() if available is None else available
    need = VALUE_BYTES[dtype] * batch * math.prod(image_shape)
    if available is None or need <= available:
        return None
    shape = "×".join(map(str, image_shape))
    return (
        f"{what or f'batch {batch}'} need{'' if what else 's'} {_amount(need)} for {'their' if what else 'its'} "
        f"{dtype} {shape} inputs alone, and this machine has {_amount(available)} available"
    )


def _amount(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


@contextmanager
def on_fastest_cpus(threads: int | None) -> Iterator[dict[str, Any] | None]:
    """`pin_to_fastest` for the span of a block, this process's CPUs given back after it: for a
    benchmark that times in its own process (and in the processes it starts, which inherit the
    affinity) and may itself run inside another program, such as a test."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinned = pin_to_fastest(threads)
    try:
        yield pinned
    finally:
        if pinned and allowed is not None:
            os.sched_setaffinity(0, allowed)


def pinned_text(pinned: dict[str, Any] | None) -> str:
    """A `pin_to_fastest` record in words ("" for none): which CPUs, of which, rated how."""
    if not pinned:
        return ""
    ratings = pinned["ratings"]
    kinds = sorted({ratings[str(c)] for c in pinned["of"]}, reverse=True)
    counts = ", ".join(f"{sum(ratings[str(c)] == k for c in pinned['of'])} at {k}" for k in kinds)
    return f"timed on CPUs {','.join(map(str, pinned['cpus']))} of {len(pinned['of'])} ({pinned['rated_by']}: {counts})"


def probe_cpu() -> CpuInfo:
    machine, cpuinfo = platform.machine(), _read("/proc/cpuinfo")
    hwcaps = read_hwcaps() if machine in ARM64_ARCHES else None
    features = read_cpu_features() if machine in X86_ARCHES else None
    cpu = board_cpu(
        cpuinfo, machine, _read("/proc/device-tree/model"), hwcaps, read_kernel_arch(), features, read_onednn_cap()
    )
    if not cpu.flags and not cpuinfo:  # not Linux: at least name the CPU
        cpu = CpuInfo(platform.machine(), platform.processor() or platform.machine(), os.cpu_count() or 1, frozenset())
    return cpu
