"""What each artifact precision computes in, told to every runtime explicitly and read back.

A runtime left to its defaults computes in whatever it thinks fast: OpenVINO's CPU plugin
picks bf16 on CPUs with AVX512-BF16 or AMX and f16 on ARM, its GPU plugin f16, ONNX
Runtime's CUDA provider TF32 on Ampere and newer, cuDNN TF32 convolutions in PyTorch. An
"fp32" artifact verified on one CPU would then compute something else on the next one. So
the precision an artifact is labelled with decides the execution precision here, in one
table, and runners pass it on and record what the runtime reports back.

- fp32: f32 everywhere.
- fp16 (OpenVINO IR with fp16-compressed weights): the weights are stored in half
  precision to halve the file; on a CPU they are decompressed and computed in f32, so the
  result does not depend on which CPU runs it. On a GPU (OpenVINO GPU, TensorRT) f16 is the
  device's own precision and is used.
- int8 (dynamic, static, NNCF): int8 matrix products, the float parts (LayerNorm, Softmax,
  GELU, the unquantized MatMuls) in f32, as they were when the int8 gate was measured.
- bf16: chosen by the user, only where the CPU computes bf16 natively (AVX512-BF16, AMX, ARM
  bf16) and, for OpenVINO, where its CPU plugin offers bf16 there (`bf16_missing`); refused
  elsewhere, since emulated bf16 is slower than f32 and proves nothing.
- int8-bf16 (OpenVINO IR): the int8 artifact, its float parts in bf16; on the same CPUs as
  bf16, chosen by the user or timed among `vitedge run`'s default rows there. Where int8 matrix products are as fast as AMX makes them, the float
  parts are much of the time (attention, GELU, LayerNorm), and bf16 halves what they move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import VitedgeError

if TYPE_CHECKING:
    from .cpu import CpuInfo

F32, BF16, F16 = "f32", "bf16", "f16"
# ONNX Runtime's CPU provider computes f32 GEMMs in bf16 on ARM where this session entry is "1"
# (ORT's default is "0" in the versions installed here): every vitedge ORT session, timed or
# calibrating, sets it "0" rather than trust a default
ORT_ARM_BF16_FASTMATH = "mlas.enable_gemm_fastmath_arm64_bfloat16"
GPU_DEVICES = ("openvino-gpu", "cuda", "tensorrt")
NATIVE_BF16 = ("bf16", "int8-bf16")  # artifact precisions that compute bf16: refused on CPUs without it


def float_precision(precision: str, device: str = "cpu") -> str:
    """The precision the float parts of an artifact of `precision` compute in on `device`."""
    if precision in NATIVE_BF16:
        return BF16
    if precision == "fp16" and device in GPU_DEVICES:
        return F16
    if precision in ("fp32", "fp16") or precision.startswith("int8"):
        return F32
    raise VitedgeError(
        f"no execution precision is defined for artifact precision {precision!r}",
        "use fp32, fp16, bf16 or an int8 precision",
    )


def openvino_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin says it computes on this machine (OPTIMIZATION_CAPABILITIES)."""
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_missing(runtime: str | None = None, cpu: CpuInfo | None = None) -> str | None:
    """Why bf16 would not run natively here, or None where it does. The CPU must compute bf16
    itself, and for `runtime` "openvino" its CPU plugin must offer BF16 too: OpenVINO drops a
    bf16 hint it has no kernels for and computes f32 without a word (its ARM plugin has no bf16
    on a CPU with the ARM bf16 extension), so the CPU's flags alone do not say what it runs."""
    if cpu is None:
        from .cpu import probe_cpu

        cpu = probe_cpu()
    if not cpu.bf16:
        return f"this CPU has no native bf16 ({cpu.isa_text})"
    if runtime == "openvino":
        import openvino as ov

        if set(cpu.bf16) <= set(cpu.onednn_denied):  # the plugin still offers BF16, then fails or emulates it
            return f"{cpu.onednn_cap} keeps OpenVINO's CPU plugin from {', '.join(cpu.bf16)}"
        offered = openvino_capabilities()
        if "BF16" not in offered:
            return (
                f"OpenVINO {ov.__version__.split('-')[0]}'s CPU plugin computes no bf16 on this CPU, though it has "
                f"{', '.join(cpu.bf16)} (the plugin offers {', '.join(offered)})"
            )
    return None


def require_bf16(what: str, runtime: str | None = None) -> None:
    """Refuse bf16 where it would not run natively (`bf16_missing`), in one line, before any work."""
    from .cpu import probe_cpu

    cpu = probe_cpu()
    missing = bf16_missing(runtime, cpu)
    if missing is None:
        return
    if cpu.bf16:  # the CPU has it, the runtime does not
        raise VitedgeError(
            f"{what}: {missing}",
            "use openvino int8 or fp32 here (f32 float parts), or torch bf16",
        )
    raise VitedgeError(
        f"{what}: {missing}; bf16 needs AVX512-BF16 or AMX (x86) or the ARM bf16 extension",
        "use fp32 (or int8) here, or run the bf16 artifact on a CPU that has bf16 (`vitedge targets` shows this one's)",
    )
