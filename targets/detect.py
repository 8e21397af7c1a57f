"""What this machine can run, and which format to export for each target, with the reason.

Where vitedge has measured this machine, the measurement is the advice: the fastest row that
passed parity in the last `vitedge run` here (any CPU), or in the last `vitedge bench` of a
board (targets.measured), named with the figures it comes from. Every board measured over
SSH from here gets a row of its own.

Where nothing was measured, a rule, said as one: int8 is fast where the CPU has an int8
dot-product instruction (x86 VNNI or AMX, ARM dotprod/i8mm). Without one, int8 matrix
products go through 16-bit multiply-adds, and what that is worth depends on the runtime's
kernel (README, "Measured here", shows two runtimes apart on one such CPU); peers report no
gain at all on other CPUs (onnxruntime #20052, #17389), and on a Raspberry Pi 4 int8 can be
slower (armnn #511). So without dot products the advice names a runtime and says to time
int8 beside fp32. `/proc/cpuinfo` is parsed from text, so the same code reads a board's
cpuinfo (e.g. one fetched over SSH) as well as this machine's.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.cpu import CpuInfo, probe_cpu, usable_cpus
from ..core.precision import bf16_missing


@dataclass(frozen=True)
class Machine:
    cpu: CpuInfo
    ort_providers: tuple[str, ...] = ()
    openvino_devices: dict[str, str] = field(default_factory=dict)  # "GPU" -> full name
    cuda_devices: tuple[str, ...] = ()  # "NVIDIA H100 80GB HBM3 (sm_90)"
    versions: dict[str, str] = field(default_factory=dict)  # runtime -> installed version, as its runner names it
    # core.cpu.usable_cpus: how many CPUs this process can keep busy, and the quota that bounds them
    usable_cpus: tuple[int | None, float | None] = (None, None)


@dataclass(frozen=True)
class TargetInfo:
    target: str  # the --target value: cpu | cuda | tensorrt | openvino-gpu
    available: bool
    device: str
    runtimes: tuple[str, ...]
    recommend: str  # what to export for it, e.g. "onnx int8-dynamic or openvino int8"
    why: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_recommendation(cpu: CpuInfo) -> tuple[str, str, tuple[str, ...]]:
    """(what to export, why, warnings) for running on this CPU."""
    dot = cpu.int8_dot
    isa = cpu.isa_text
    if "AMX" in dot:
        return (
            "openvino int8 (NNCF) or onnx int8-dynamic",
            f"AMX tiles run int8 (and bf16) matrix products ({isa})",
            (),
        )
    if dot and cpu.arch in ("x86_64", "amd64"):
        return (
            "openvino int8 (NNCF) or onnx int8-dynamic",
            f"{' and '.join(dot)} give one-instruction int8 dot products ({isa})",
            (),
        )
    if dot:
        extra = " and i8mm matrix multiply" if "i8mm" in dot else ""
        return (
            "onnx int8-dynamic",
            f"ARM dotprod (sdot/udot){extra}: ONNX Runtime's int8 kernels use them ({isa})",
            (),
        )
    size = "int8 is still about 4× smaller"
    if cpu.arch in ("x86_64", "amd64"):
        warning = (
            f"no VNNI or AMX ({isa} only): time onnx int8-dynamic beside onnx fp32 before choosing "
            "(vitedge bench); openvino int8 is for size only here"
        )
        return (
            "onnx int8-dynamic or onnx fp32",
            "without an int8 dot-product instruction int8 products run as 16-bit multiply-adds, so what int8 "
            "gains depends on the runtime's kernel, not on the format",
            (warning,),
        )
    if cpu.arch in ("aarch64", "arm64"):
        warning = f"no ARM dotprod ({isa} only; e.g. a Raspberry Pi 4): int8 can run slower than fp32 (armnn #511); measure both before choosing ({size})"
        return ("onnx fp32 (int8 for size only)", "NEON fp32 is the fast path without dotprod", (warning,))
    return ("onnx fp32", f"no known int8 acceleration for {cpu.arch}", ())


def bf16_advice(cpu: CpuInfo) -> tuple[str, str]:
    """(what to add to the export advice, why) for bf16: a float format between fp32 and int8
    that only pays where the CPU computes bf16 itself; elsewhere it is emulated and slower.
    OpenVINO's rows are advised only where its CPU plugin offers bf16 on this machine."""
    if not cpu.bf16:
        return "", ""
    native = f"; {' and '.join(cpu.bf16)} compute bf16 natively"
    missing = bf16_missing("openvino", cpu)
    if missing is not None:
        return "; torch bf16 where float accuracy matters", f"{native} (torch bf16); {missing}"
    return (
        "; openvino bf16 (or torch bf16) where float accuracy matters, openvino int8-bf16 beside int8 (time them here)",
        f"{native} (export --precision bf16, or int8-bf16: int8 with bf16 float parts)",
    )


def named_generation(model: str, generation: str) -> str:
    """ "; family 26 model 2" where the model name does not already say which cores these are."""
    return f"; {generation}" if generation and generation not in model else ""


def recommend(machine: Machine, measured: dict[str, Any] | None = None, model: str | None = None) -> list[TargetInfo]:
    """One entry per target vitedge can run: whether it is here, and what to export for it;
    `measured` (targets.measured.load_store()) adds what was measured on boards: each board's
    latest model, or `model`'s only where one is named (the fastest format depends on the model)."""
    from .measured import (
        ARM,
        board_for,
        board_key,
        figures,
        for_model,
        latest,
        recommendation,
        runtimes_changed,
        timed_crowded,
    )

    cpu = machine.cpu
    store = measured or {}
    if model is not None:
        store = {key: board for key, board in ((k, for_model(b, model)) for k, b in store.items()) if board}
    here = board_for(cpu, store)
    found = recommendation(here) if here else None
    if found is not None:
        what, why, warnings = found
        if model is None and len(here.get("models") or {}) == 1:  # several: other_models_advice compares them
            why += "; another model's fastest row can differ: vitedge run --model MODEL measures yours"
        changed = runtimes_changed(here, machine.versions)
        if changed:
            warnings += (
                f"measured with another runtime version ({'; '.join(changed)}): the figures may not hold "
                "until `vitedge run` measures again",
            )
        if crowded := timed_crowded(here):
            warnings += (f"when measured, {crowded}",)
    else:
        what, why, warnings = cpu_recommendation(cpu)
        more_what, more_why = bf16_advice(cpu)
        what, why = what + more_what, why + more_why
        if here and figures(here):  # measured, but no row passed a parity check
            why += f"; nothing recommended from the measurements (no row passed parity): {figures(here)}"
        elif cpu.arch in ARM:
            why += (
                "; measure it instead: vitedge bench ONNX OPENVINO EXECUTORCH --target ssh://THIS_BOARD (from a desktop),"
                " or vitedge run on the board"
            )
        elif model is not None:
            why += f"; {model} was not measured here: vitedge run --model {model} measures it (its fastest row within parity becomes this advice)"
        else:
            why += "; measure it instead: vitedge run here (its fastest row within parity becomes this advice)"
    targets = [
        TargetInfo(
            "cpu",
            True,
            f"{cpu.model} ({cpu.cores} logical CPUs{named_generation(cpu.model, cpu.generation)})",
            ("onnxruntime", "openvino", "executorch", "torch"),
            what,
            why,
            warnings,
        )
    ]
    for key, board in sorted(store.items()):
        board_found = recommendation(board) if key != board_key(cpu) else None
        if board_found is None:
            continue
        facts, (_, last) = board.get("cpu", {}), latest(board)
        isa = ", ".join(facts.get("isa", [])) or "no ISA read"
        where = str(last.get("where", "board"))
        targets.append(
            TargetInfo(
                where if "://" in where else f"elsewhere ({where})",  # an ssh:// board, or a machine's own run
                False,  # not this machine: measured from here, or on it
                f"{facts.get('model', '?')} ({facts.get('cores', '?')} logical CPUs"
                f"{named_generation(str(facts.get('model', '')), str(facts.get('generation', '')))}; {isa})",
                ("onnxruntime", "openvino", "executorch"),
                *board_found,
            )
        )

    gpus = machine.cuda_devices
    providers = set(machine.ort_providers)
    gpu_name = "; ".join(gpus) or "none"
    if not gpus:
        missing = "PyTorch sees no CUDA device"
    elif "CUDAExecutionProvider" not in providers:
        missing = (
            "ONNX Runtime has no CUDAExecutionProvider (pip install onnxruntime-gpu); PyTorch can still use the GPU"
        )
    else:
        missing = ""
    targets.append(
        TargetInfo(
            "cuda",
            bool(gpus),
            gpu_name,
            ("torch",) + (("onnxruntime",) if "CUDAExecutionProvider" in providers else ()),
            "torch fp16 (or onnx on ONNX Runtime's CUDA provider)",
            "tensor cores run fp16 at several times fp32; int8 on a GPU pays off through TensorRT"
            + (f"; {missing}" if missing else ""),
        )
    )
    trt = bool(gpus) and "TensorrtExecutionProvider" in providers
    targets.append(
        TargetInfo(
            "tensorrt",
            trt,
            gpu_name,
            ("onnxruntime",),
            "onnx int8-static (QDQ) or fp16",
            "TensorRT builds fused int8/fp16 engines from QDQ ONNX"
            + (
                ""
                if trt
                else (
                    "; ONNX Runtime has no TensorrtExecutionProvider (onnxruntime-gpu with TensorRT libraries)"
                    if gpus
                    else "; no CUDA device"
                )
            ),
        )
    )
    ov_gpus = {k: v for k, v in machine.openvino_devices.items() if k.startswith("GPU")}
    targets.append(
        TargetInfo(
            "openvino-gpu",
            bool(ov_gpus),
            "; ".join(ov_gpus.values()) or "none",
            ("openvino",),
            "openvino fp16 IR (or int8)",
            "Intel GPUs run fp16 natively; OpenVINO compresses weights to fp16 by default"
            + ("" if ov_gpus else "; OpenVINO sees no GPU device (Intel GPU + intel-opencl-icd)"),
        )
    )
    return targets


def probe_machine() -> Machine:
    """Ask this machine's CPU, ONNX Runtime, OpenVINO and PyTorch what they offer."""
    import onnxruntime

    devices: dict[str, str] = {}
    versions = {"onnxruntime": onnxruntime.__version__}
    try:
        import openvino as ov

        versions["openvino"] = ov.get_version()
        core = ov.Core()
        devices = {name: str(core.get_property(name, "FULL_DEVICE_NAME")) for name in core.available_devices}
    except (ImportError, RuntimeError):
        pass
    cuda: tuple[str, ...] = ()
    import torch

    versions["torch"] = torch.__version__
    with contextlib.suppress(ImportError):
        from executorch import version as executorch_version

        versions["executorch"] = executorch_version.__version__
    if torch.cuda.is_available():
        cuda = tuple(
            f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(torch.cuda.device_count())
        )
    providers = tuple(onnxruntime.get_available_providers())
    return Machine(probe_cpu(), providers, devices, cuda, versions, usable_cpus())


def detect_targets(machine: Machine | None = None) -> list[TargetInfo]:
    """What this machine (or the given description of one) offers, target by target."""
    return recommend(machine or probe_machine())


def machine_dict(machine: Machine) -> dict[str, Any]:
    """The JSON form of `vitedge targets --json`'s machine part."""
    cpu = machine.cpu
    return {
        "cpu": {
            "model": cpu.model,
            "arch": cpu.arch,
            "cores": cpu.cores,
            "isa": list(cpu.isa),
            "int8_dot_product": list(cpu.int8_dot),
            "bf16_native": list(cpu.bf16),
            "onednn_cap": cpu.onednn_cap or None,
            "onednn_denied": list(cpu.onednn_denied),
            "usable_cpus": machine.usable_cpus[0],
            "cpu_quota": machine.usable_cpus[1],
        },
        "onnxruntime_providers": list(machine.ort_providers),
        "openvino_devices": machine.openvino_devices,
        "cuda_devices": list(machine.cuda_devices),
        "runtime_versions": machine.versions,
    }
