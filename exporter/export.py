"""One entry point for every artifact: `export_artifact(loaded, to=..., precision=...)` writes
a folder (model file(s) + manifest.json) atomically, whatever the format and precision.

The registry `EXPORTERS` maps (format, precision) to a function that writes the model files
into a staging folder and returns what the manifest should say about them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..calibration.calibset import CalibrationSet
from ..core.errors import VitedgeError, first_line
from ..core.io import atomic_folder, scratch_folder
from ..core.manifest import MANIFEST, write_manifest
from ..core.precision import NATIVE_BF16, float_precision, require_bf16
from ..models import LoadedModel, require_vit
from .class_token import trimmed
from .onnx import INPUT_NAME, OUTPUT_NAME, export_onnx

FORMATS = {
    "onnx": ("fp32", "int8-dynamic", "int8-static"),
    "openvino": ("fp32", "fp16", "bf16", "int8", "int8-bf16"),
    "executorch": ("fp32", "int8"),
}
NEEDS_CALIBRATION = {("onnx", "int8-static"), ("openvino", "int8"), ("openvino", "int8-bf16"), ("executorch", "int8")}
# ExportOptions that act on some exports only, with the exports they act on (by name, for a
# message): typed for any other, they would change nothing while the user believed they had.
OPTION_SCOPE: dict[str, tuple[str, frozenset[tuple[str, str]]]] = {
    "opset": ("onnx", frozenset(("onnx", p) for p in FORMATS["onnx"])),
    "calib_method": ("onnx int8-static", frozenset({("onnx", "int8-static")})),
    "per_channel": ("onnx int8", frozenset({("onnx", "int8-dynamic"), ("onnx", "int8-static")})),
    "reduce_range": ("onnx int8", frozenset({("onnx", "int8-dynamic"), ("onnx", "int8-static")})),
    "ort_fusions": ("onnx int8-dynamic", frozenset({("onnx", "int8-dynamic")})),
    "smooth_quant": ("openvino int8", frozenset({("openvino", "int8"), ("openvino", "int8-bf16")})),
}
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"
VERSIONED = (
    "vitedge", "torch", "timm", "onnx", "onnxruntime", "openvino", "nncf", "executorch", "torchao", "numpy",
)  # fmt: skip


@dataclass(frozen=True)
class ExportOptions:
    """Export settings; the defaults are the measured good ones (see the report of issue 3).

    opset 17: the oldest with LayerNormalization as one op, which every runtime we target
    (ORT >= 1.14, OpenVINO, TensorRT 8.6) reads.

    per_channel True, reduce_range True (ONNX int8: a scale per output channel, weights in
    [-64, 64]): accurate, and computed alike on every CPU the file may run on. Full-range
    (8-bit) weights let ONNX Runtime's u8×s8 kernels saturate on x86 without VNNI or AMX
    (VPMADDUBSW adds pairs in 16 bits; docs/precision.md), a CPU the export machine need not
    be; 7-bit weights cannot (vitedge-cifar10 under an emulated Haswell against a VNNI CPU:
    static per-channel 7-bit the same logits, 8-bit cosine 0.99949). One scale per tensor is set by the
    tensor's largest weight, and a weight 100 standard deviations out (torch's
    `trunc_normal_`, which timm and transformers initialise with, draws exactly ±2.0 for
    std 0.02 in most random ViT-Bs) leaves the rest a level or two. Measured on a Zen 5 EPYC
    (AVX512-VNNI), cosine mean / top-1 agreement: vitedge-cifar10 on all 10,000 test images,
    int8-dynamic per-tensor 8-bit 0.99974 / 98.92%, per-channel 7-bit 0.99984 / 99.30%
    (per-channel 8-bit 0.99990 / 99.46%, per-tensor 7-bit 0.99904 / 98.32%); int8-static
    0.99968 / 98.89% against 0.99971 / 98.92%; random vit_base_patch16_224 (six seeds, 24
    images), int8-dynamic per-tensor 0.926-0.981 (five of six failing the 0.995 bound),
    per-channel 7-bit 0.9981-0.9986. (On an AVX2-only EPYC a briefly trained tiny ViT had
    measured per-tensor 8-bit 0.99996 / 99.1%, per-channel 7-bit 0.99991 / 98.9%, dynamic.)
    The cost is speed, the kernels being the same: on that Zen 5, ViT-B per-channel 7-bit
    against per-tensor 8-bit ran 0.98× (int8-dynamic) and 0.945× (int8-static; 5 interleaved
    rounds each), vitedge-cifar10 0.96× and 0.95×; at kernel level per-channel had been 1.04×
    on an AMX Xeon and 1.06× on an AVX2 EPYC (benchmarks/int8_kernels.py). `--per-tensor
    --full-range` gives the faster file where a model's weights allow it.
    calib_method minmax: percentile matched it (0.99985 / 97.7%), entropy clipped too much
    (0.99791 / 95.3%, worst image cosine 0.913) and is slower.
    OpenVINO int8 (smooth_quant, overflow_fix, nncf_preset): see exporter/openvino.py.

    dynamic_op_types: what int8-dynamic quantizes. Not the patch-embedding Conv: ORT runs a
    dynamically quantized Conv as ConvInteger, which took 6.5 ms of vit_base_patch16_224's 78 ms
    at batch 1 (2 threads, ORT profile, AVX512-VNNI Xeon) against 1.3 ms for the float Conv: its
    0.1 GMAC do not pay for ConvInteger's im2col path. Static QDQ leaves the Conv's output float
    too (op_types), which ORT runs as a float Conv. `Attention` is the contrib node that
    ort_fusions writes (exporter/ort_attention.py), quantized to QAttention.
    ort_fusions: int8-dynamic writes each plain ViT attention as ORT's Attention node (an
    artifact for ONNX Runtime only, recorded in the manifest); False keeps standard ONNX ops.
    class_token_only: ONNX, OpenVINO and ExecuTorch compute the last block for the tokens the
    classifier reads only, where that gives the same logits (exporter/class_token.py; recorded in the
    manifest; class_token.FORMATS); False exports every token of every block.
    """

    opset: int = 17
    batch: str | int = "dynamic"
    calib_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
    dynamic_op_types: tuple[str, ...] = ("MatMul", "Gemm", "Attention")
    ort_fusions: bool = True
    class_token_only: bool = True
    smooth_quant: bool = True
    overflow_fix: str = "enable"
    nncf_preset: str = "performance"

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise VitedgeError(
                f"opset {self.opset} is too old", "use --opset 17 or newer (LayerNormalization needs 17)"
            )
        if self.batch != "dynamic" and (not isinstance(self.batch, int) or self.batch < 1):
            raise VitedgeError(
                f"batch must be 'dynamic' or a positive integer, not {self.batch!r}", "use --batch dynamic or --batch 8"
            )


Writer = Callable[[LoadedModel, Path, "CalibrationSet | None", ExportOptions, dict[str, str]], dict[str, Any]]


def versions() -> dict[str, str]:
    """Installed versions of every tool an artifact may depend on (without importing them)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def _onnx_fp32(
    loaded: LoadedModel,
    folder: Path,
    calibration: CalibrationSet | None,
    options: ExportOptions,
    metadata: dict[str, str],
) -> dict[str, Any]:
    export_onnx(
        loaded.module,
        folder / ONNX_FILE,
        input_size=loaded.data_config.input_size,
        opset=options.opset,
        batch=options.batch,
        metadata=metadata,
    )
    return {"model_file": ONNX_FILE, "quantization": None, "runs_on": onnx_runtimes(folder / ONNX_FILE)}


def _onnx_int8(kind: str) -> Writer:
    def write(
        loaded: LoadedModel,
        folder: Path,
        calibration: CalibrationSet | None,
        options: ExportOptions,
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        from .onnx import check_onnx
        from .quantize import quantize_dynamic_onnx, quantize_static_onnx

        with scratch_folder("vitedge-onnx-") as tmp:
            fp32 = export_onnx(
                loaded.module,
                Path(tmp) / ONNX_FILE,
                input_size=loaded.data_config.input_size,
                opset=options.opset,
                batch=options.batch,
                metadata=metadata,
                ort_attention=kind == "dynamic" and options.ort_fusions,
            )
            if kind == "dynamic":
                settings = quantize_dynamic_onnx(
                    fp32,
                    folder / ONNX_FILE,
                    per_channel=options.per_channel,
                    op_types=options.dynamic_op_types,
                    reduce_range=options.reduce_range,
                )
            else:
                assert calibration is not None
                settings = quantize_static_onnx(
                    fp32,
                    folder / ONNX_FILE,
                    calibration,
                    input_name=INPUT_NAME,
                    method=options.calib_method,
                    per_channel=options.per_channel,
                    op_types=options.op_types,
                    reduce_range=options.reduce_range,
                )
        check_onnx(folder / ONNX_FILE)
        return {"model_file": ONNX_FILE, "quantization": settings, "runs_on": onnx_runtimes(folder / ONNX_FILE)}

    return write


def onnx_runtimes(path: Path) -> dict[str, Any]:
    """Which runtimes can read the ONNX file: any ONNX runtime, or ONNX Runtime alone when the
    graph holds its contrib operators (by operator, with counts)."""
    import onnx

    from .ort_attention import DOMAIN

    graph = onnx.load(str(path), load_external_data=False).graph
    contrib = dict(Counter(node.op_type for node in graph.node if node.domain == DOMAIN))
    return {"runtimes": ["onnxruntime"] if contrib else ["any ONNX runtime"], "contrib_ops": contrib}


def _openvino(precision: str) -> Writer:
    def write(
        loaded: LoadedModel,
        folder: Path,
        calibration: CalibrationSet | None,
        options: ExportOptions,
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        from .openvino import convert_openvino, quantize_openvino, save_openvino

        model = convert_openvino(loaded.module, input_size=loaded.data_config.input_size, batch=options.batch)
        settings: dict[str, Any] | None = None
        if precision == "fp16":
            settings = {
                "compress_to_fp16": True,
                "compute": "weights stored fp16; computed in f32 on CPUs, f16 on GPUs (targets.precision)",
            }
        if precision == "bf16":
            settings = {
                "compress_to_fp16": False,
                "compute": "f32 weights; computed in bf16 (INFERENCE_PRECISION_HINT=bf16), on CPUs with native bf16 only",
            }
        if precision.startswith("int8"):  # int8-bf16: the same IR; its float parts compute in bf16
            assert calibration is not None
            model, settings = quantize_openvino(
                model,
                calibration,
                smooth_quant=options.smooth_quant,
                overflow_fix=options.overflow_fix,
                preset=options.nncf_preset,
            )
            settings["float_parts"] = float_precision(precision)
        save_openvino(model, folder / OPENVINO_FILE, compress_to_fp16=precision == "fp16", metadata=metadata)
        return {"model_file": OPENVINO_FILE, "quantization": settings}

    return write


def _executorch(precision: str) -> Writer:
    def write(
        loaded: LoadedModel,
        folder: Path,
        calibration: CalibrationSet | None,
        options: ExportOptions,
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        from .executorch import PTE_FILE, export_executorch

        # the .pte carries no metadata of its own: the manifest beside it holds the DataConfig
        return export_executorch(
            loaded.module,
            folder / PTE_FILE,
            input_size=loaded.data_config.input_size,
            precision=precision,
            batch=options.batch,
            calibration=calibration,
        )

    return write


EXPORTERS: dict[tuple[str, str], Writer] = {
    ("onnx", "fp32"): _onnx_fp32,
    ("onnx", "int8-dynamic"): _onnx_int8("dynamic"),
    ("onnx", "int8-static"): _onnx_int8("static"),
    ("openvino", "fp32"): _openvino("fp32"),
    ("openvino", "fp16"): _openvino("fp16"),
    ("openvino", "bf16"): _openvino("bf16"),
    ("openvino", "int8"): _openvino("int8"),
    ("openvino", "int8-bf16"): _openvino("int8-bf16"),
    ("executorch", "fp32"): _executorch("fp32"),
    ("executorch", "int8"): _executorch("int8"),
}


def check_request(to: str, precision: str, has_calibration: bool) -> None:
    """Refuse an unknown format/precision or a missing calibration set before any work."""
    if to not in FORMATS:
        raise VitedgeError(f"unknown export format {to!r}", f"use one of {', '.join(FORMATS)}")
    if precision not in FORMATS[to]:
        raise VitedgeError(f"{to} has no precision {precision!r}", f"{to} precisions: {', '.join(FORMATS[to])}")
    if (to, precision) in NEEDS_CALIBRATION and not has_calibration:
        raise VitedgeError(
            f"{to} {precision} needs calibration images",
            "pass --calib SOURCE: cifar10:train, a folder of images like the ones the model will see, or a .npz "
            "(up to 256 are used by default; --calib-samples N to choose)",
        )
    if to == "executorch":
        from .executorch import require_executorch

        require_executorch()
    if precision in NATIVE_BF16:  # its parity can be checked only where bf16 runs
        require_bf16(f"{to} {precision}", to)


def preflight(loaded: LoadedModel) -> None:
    """Refuse, before writing anything, a model that would export garbage: int8 or fp16/bf16
    weights from `vitedge compress` (an int8 module does not trace; a cast one would be written
    as an "fp32" file computing in fp16), NaN/inf weights (a diverged training run) or a
    DataConfig input size the network cannot take (a checkpoint whose metadata was edited by
    hand). One forward pass of one blank image."""
    import torch

    from ..compress.quantize import stored_precision

    held = stored_precision(loaded.module)
    if held != "fp32":
        step = "quantize-dynamic" if held == "int8-dynamic" else held
        raise VitedgeError(
            f"{loaded.spec} holds {held} weights (vitedge compress's {step} step); the exporters start from the float model",
            f"export the model from before that step, with --precision {'int8-dynamic, int8-static or int8' if step == 'quantize-dynamic' else held} "
            "for the smaller file (the exporter quantizes or casts it itself)",
        )
    broken = [
        name
        for name, value in loaded.module.state_dict().items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise VitedgeError(
            f"the weights of {loaded.spec} contain NaN or inf ({broken[0]}{more})",
            "the checkpoint is broken (a diverged training run?); use an earlier checkpoint or retrain",
        )
    size = tuple(loaded.data_config.input_size)
    try:
        with torch.no_grad():
            logits = loaded.module.eval()(torch.zeros((1, *size)))
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise VitedgeError(
            f"{loaded.spec} cannot run on its DataConfig input size {size}: {first_line(exc, 200)}",
            "the recorded data_config does not match the network; fix the checkpoint's metadata",
        ) from None
    if not torch.isfinite(logits).all():
        raise VitedgeError(
            f"{loaded.spec} outputs NaN or inf on a blank image",
            "the checkpoint is broken; use an earlier checkpoint or retrain",
        )


def embedded_metadata(loaded: LoadedModel) -> dict[str, str]:
    """What a runner on a board needs to know, carried inside the model file itself."""
    from .. import __version__

    return {
        "vitedge_version": __version__,
        "data_config": json.dumps(loaded.data_config.to_dict(), sort_keys=True),
        "labels": json.dumps(list(loaded.data_config.labels)),
        "source_spec": loaded.spec,
        "source_sha256": loaded.source_sha256,
        "architecture": json.dumps(loaded.architecture.to_dict(), sort_keys=True),
    }


def export_artifact(
    loaded: LoadedModel,
    *,
    to: str,
    precision: str,
    out: Path,
    calibration: CalibrationSet | None = None,
    options: ExportOptions = ExportOptions(),
    force: bool = False,
) -> Path:
    """Write the artifact folder `out` (whole, or not at all) and return it."""
    check_request(to, precision, calibration is not None)
    require_vit(loaded, "export")
    preflight(loaded)
    if calibration is not None and tuple(calibration.inputs.shape[1:]) != tuple(loaded.data_config.input_size):
        raise VitedgeError(
            f"calibration images are {tuple(calibration.inputs.shape[1:])} but the model takes {tuple(loaded.data_config.input_size)}",
            "build the calibration set with the model's DataConfig",
        )
    used_calibration = calibration if (to, precision) in NEEDS_CALIBRATION else None
    with atomic_folder(Path(out), marker=MANIFEST, force=force) as staging:
        with trimmed(loaded.module, options.class_token_only, to) as trim:
            written = EXPORTERS[(to, precision)](loaded, staging, used_calibration, options, embedded_metadata(loaded))
        manifest = {
            "format": to,
            "precision": precision,
            "model_file": written["model_file"],
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "batch": options.batch,
            "opset": options.opset if to == "onnx" else None,
            "data_config": loaded.data_config.to_dict(),
            "labels": list(loaded.data_config.labels),
            "source": {
                "spec": loaded.spec,
                "sha256": loaded.source_sha256,
                "architecture": loaded.architecture.to_dict(),
                "steps": list(loaded.steps),
            },
            "quantization": written["quantization"],
            # how many tokens the last block computes: the classifier's only (exporter/class_token.py), or all
            "last_block_tokens": trim.keep if trim.ran else "all",
            # what a writer adds beyond its model file (executorch: what was lowered, the batch bound)
            **{k: v for k, v in written.items() if k not in ("model_file", "quantization")},
            "calibration": used_calibration.manifest() if used_calibration is not None else None,
            "options": asdict(options),
            "versions": versions(),
        }
        write_manifest(staging, manifest)
    return Path(out)
