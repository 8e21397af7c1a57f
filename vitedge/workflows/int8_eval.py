"""What the int8 workflows (sensitivity, budget, sweep) share: held-out evaluation images
scored against the fp32 PyTorch logits, and the two backends that quantize a model with a
chosen set of nodes kept in float.

Both backends have one shape (`units`, `quantize(excluded)`, `open(excluded)`) and call the
exporter's own quantizers, so a variant here is the artifact `vitedge export` would write:
- ONNX Runtime static QDQ: the fp32 export, `quant_pre_process` and the calibration run once;
  every variant is then `exporter.quantize.write_qdq` with `nodes_to_exclude`, reading the
  ranges from a calibration cache (about a second each).
- OpenVINO through `exporter.openvino.quantize_openvino` with an ignored scope (NNCF has no
  range cache, so every variant is a full quantization; seconds on the 32×32 CIFAR ViTs).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration.calibset import CalibrationSet
from ..calibration.sources import ImageSet
from ..core.errors import VitedgeError
from ..exporter.export import ExportOptions, embedded_metadata
from ..exporter.onnx import INPUT_NAME
from ..models import LoadedModel

OPENVINO_UNIT_TYPES = ("MatMul", "Convolution")
EVAL_BATCH = 50
Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Held-out images, their labels (if any) and the fp32 PyTorch logits every variant is
    compared with; `record` says where they came from and that calibration never saw them."""

    inputs: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    record: dict[str, Any]

    def __len__(self) -> int:
        return int(len(self.inputs))

    @property
    def reference_top1(self) -> float | None:
        return None if self.labels is None else float(100.0 * np.mean(self.reference.argmax(axis=1) == self.labels))

    def subset(self, count: int, seed: int = 0) -> EvalSet:
        """`count` of these images, a seeded random subset (the draw itself is in source order)."""
        if count >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).permutation(len(self))[:count])
        labels = None if self.labels is None else self.labels[rows]
        return EvalSet(
            self.inputs[rows], labels, self.reference[rows], {**self.record, "count": int(count), "subset_seed": seed}
        )


def calibration_record(calibrations: Sequence[CalibrationSet]) -> dict[str, Any]:
    """One calibration manifest covering several draws (a sweep uses many sizes)."""
    first = calibrations[0]
    sources = {c.source for c in calibrations}
    if len(sources) != 1:
        raise VitedgeError(
            f"calibration draws come from several sources ({', '.join(sorted(sources))})", "calibrate from one source"
        )
    identities = sorted({i for c in calibrations for i in c.identities})
    digests = sorted({d for c in calibrations for d in c.image_sha256})
    return {
        "source": first.source,
        "count": len(identities),
        "seed": first.seed,
        "identities": identities,
        "image_sha256": digests,
    }


def evaluation_set(
    loaded: LoadedModel,
    data: str | ImageSet,
    samples: int,
    calibration: dict[str, Any],
    *,
    seed: int = 1,
    threads: int | None = 1,
) -> EvalSet:
    """`samples` images of `data` (a spec, or a source the caller opened to name a typo before
    the model loaded) none of which is a calibration image (by name within one source, and by
    pixel sha256 across sources: workflows/parity.py's `verification_set`)."""
    from ..calibration.sources import as_image_set, in_model_numbering
    from ..targets.measure import batched_logits
    from ..targets.torch import open_torch
    from .parity import verification_set

    source = as_image_set(data)
    images = in_model_numbering(source, loaded.data_config)
    chosen = verification_set(
        source, loaded.data_config, min(samples, images.count), calibration=calibration, seed=seed
    )
    labels = None if images.labels is None else np.asarray(images.labels)[list(chosen.indices)].astype(np.int64)
    reference = batched_logits(
        open_torch(loaded.module, precision="fp32", threads=threads), chosen.inputs, batch_size=EVAL_BATCH
    )
    same = calibration.get("source") == images.name
    record = {
        "source": images.name,
        "count": len(chosen),
        "seed": seed,
        "labelled": labels is not None,
        **({"unlabelled_because": images.unlabelled_because} if images.unlabelled_because else {}),
        "calibration_source": calibration.get("source"),
        "calibration_count": calibration.get("count"),
        "disjoint_from_calibration": True,
        "disjoint_by": "calibration images excluded by name and pixel sha256"
        if same
        else "different source; any image with a calibration image's pixel sha256 excluded",
    }
    return EvalSet(chosen.inputs, labels, np.asarray(reference, dtype=np.float32), record)


@dataclass(frozen=True)
class Score:
    """One variant against the fp32 reference: cosine of the logits, top-1 agreement, and
    top-1 accuracy (percent) when the images are labelled."""

    cosine_mean: float
    cosine_min: float
    top1_agreement: float  # fraction 0..1
    top1: float | None  # percent

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_logits(evalset: EvalSet, logits: np.ndarray) -> Score:
    from ..targets.measure import top_k_accuracy
    from .parity import compare_logits

    parity = compare_logits(evalset.reference, logits, precision="int8")
    top1 = None if evalset.labels is None else top_k_accuracy(np.asarray(logits), evalset.labels).top1
    return Score(parity.cosine_mean, parity.cosine_min, parity.top1_agreement, top1)


def score_runner(runner: Callable[[np.ndarray], np.ndarray], evalset: EvalSet) -> Score:
    from ..targets.measure import batched_logits

    return score_logits(evalset, batched_logits(runner, evalset.inputs, batch_size=EVAL_BATCH))


# ---------------------------------------------------------------- backends


@dataclass(frozen=True)
class OrtBackend:
    """A prepared fp32 ONNX model with its calibration ranges: quantizing a variant is one
    `quantize_static` call that reads the ranges (no recalibration)."""

    prepared: Path
    ranges: Path
    work: Path
    options: ExportOptions
    calibration: dict[str, Any]
    units: tuple[str, ...]
    format: str = "onnx"

    def quantize(self, excluded: Iterable[str], dst: Path) -> dict[str, Any]:
        """Write the QDQ model with `excluded` nodes left in float; exporter/quantize.py's
        settings, plus `nodes_to_exclude`."""
        from ..exporter.quantize import write_qdq

        kept = sorted(set(excluded))
        unknown = set(kept) - set(self.units)
        if unknown:
            raise VitedgeError(
                f"no quantizable node named {', '.join(sorted(unknown))}", f"nodes: {', '.join(self.units)}"
            )
        options = self.options
        write_qdq(
            self.prepared,
            dst,
            self.ranges,
            method=options.calib_method,
            per_channel=options.per_channel,
            op_types=options.op_types,
            reduce_range=options.reduce_range,
            nodes_to_exclude=kept,
        )
        return {**ort_settings(self.options), "nodes_to_exclude": kept}

    def open(self, excluded: Iterable[str] = (), *, threads: int | None = 1):  # noqa: ANN201 - Runner
        from ..targets.onnxruntime import open_onnx

        fd, path = tempfile.mkstemp(dir=self.work, prefix="variant-", suffix=".onnx")
        os.close(fd)
        try:
            self.quantize(excluded, Path(path))
            return open_onnx(Path(path), precision="int8-static", threads=threads)
        finally:
            Path(path).unlink(missing_ok=True)  # the session holds the model in memory


def ort_settings(options: ExportOptions) -> dict[str, Any]:
    """What exporter/quantize.py's `quantize_static_onnx` records for these options."""
    from ..exporter import quantize as q

    return q.qdq_settings(
        method=options.calib_method,
        per_channel=options.per_channel,
        op_types=options.op_types,
        reduce_range=options.reduce_range,
    )


def prepare_onnx(loaded: LoadedModel, options: ExportOptions, work: Path) -> Path:
    """fp32 ONNX (with vitedge's metadata) after the quantizer's pre-processing, as `vitedge export` does."""
    from ..exporter.class_token import trimmed
    from ..exporter.onnx import export_onnx
    from ..exporter.quantize import pre_process

    with trimmed(loaded.module, options.class_token_only, "onnx"):
        fp32 = export_onnx(
            loaded.module,
            work / "fp32.onnx",
            input_size=loaded.data_config.input_size,
            opset=options.opset,
            batch=options.batch,
            metadata=embedded_metadata(loaded),
        )
    return pre_process(fp32, work / "prepared.onnx")


def ort_backend(prepared: Path, calibration: CalibrationSet, options: ExportOptions, work: Path) -> OrtBackend:
    """Calibrate `prepared` once with `options.calib_method` and keep the ranges on disk."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from ..exporter.quantize import CALIB_METHODS, calibration_ranges, quiet_ort, weight_products

    if options.calib_method not in CALIB_METHODS:
        raise VitedgeError(
            f"unknown calibration method {options.calib_method!r}", f"use one of {', '.join(CALIB_METHODS)}"
        )
    folder = Path(tempfile.mkdtemp(dir=work, prefix=f"ort-{options.calib_method}-{len(calibration)}-"))
    with quiet_ort():
        _, ranges = calibration_ranges(
            prepared, calibration, INPUT_NAME, options.calib_method, options.op_types, folder, 1
        )
    cache = folder / "ranges.json"
    save_tensors_data(ranges, cache)
    units = weight_products(prepared, options.op_types)
    return OrtBackend(prepared, cache, folder, options, calibration.manifest(), units)


@dataclass(frozen=True)
class OpenVinoVariant:
    """The NNCF knobs a sweep turns; `vitedge export`'s defaults come from ExportOptions."""

    preset: str
    smooth_quant: bool
    bias_correction: str = "fast"  # fast | full | off

    @classmethod
    def of(cls, options: ExportOptions) -> OpenVinoVariant:
        return cls(options.nncf_preset, options.smooth_quant)


@dataclass(frozen=True)
class OpenVinoBackend:
    """An fp32 `ov.Model` and a calibration set: each variant is `nncf.quantize` with
    `ignored_scope=IgnoredScope(names=excluded)`."""

    model: Any  # ov.Model, fp32
    calibration_set: CalibrationSet
    options: ExportOptions
    variant: OpenVinoVariant
    work: Path
    units: tuple[str, ...]
    format: str = "openvino"

    @property
    def calibration(self) -> dict[str, Any]:
        return self.calibration_set.manifest()

    def quantize_model(self, excluded: Iterable[str]) -> tuple[Any, dict[str, Any]]:
        """exporter/openvino.py's `quantize_openvino` with the ignored scope and this variant."""
        from ..exporter.openvino import quantize_openvino

        kept = sorted(set(excluded))
        unknown = set(kept) - set(self.units)
        if unknown:
            raise VitedgeError(
                f"no quantizable node named {', '.join(sorted(unknown))}", f"nodes: {', '.join(self.units)}"
            )
        variant = self.variant
        return quantize_openvino(
            self.model.clone(),
            self.calibration_set,
            smooth_quant=variant.smooth_quant,
            overflow_fix=self.options.overflow_fix,
            preset=variant.preset,
            bias_correction=variant.bias_correction,
            ignored=kept,
        )

    def quantize(self, excluded: Iterable[str], dst: Path, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        from ..exporter.openvino import save_openvino

        model, settings = self.quantize_model(excluded)
        save_openvino(model, dst, compress_to_fp16=False, metadata=metadata or {})
        return settings

    def open(self, excluded: Iterable[str] = (), *, threads: int | None = 1):  # noqa: ANN201 - Runner
        import openvino as ov

        from ..targets.openvino import compile_config, model_runner

        model, _ = self.quantize_model(excluded)
        config = compile_config("int8", "cpu", threads=threads)
        return model_runner(ov.Core(), model, config, precision="int8", device="cpu", threads=threads, name="int8")


def openvino_graph(loaded: LoadedModel, options: ExportOptions) -> Any:
    """The fp32 OpenVINO model `vitedge export --to openvino` converts for these options."""
    from ..exporter.class_token import trimmed
    from ..exporter.openvino import convert_openvino

    with trimmed(loaded.module, options.class_token_only, "openvino"):
        return convert_openvino(loaded.module, input_size=loaded.data_config.input_size, batch=options.batch)


def openvino_backend(
    loaded: LoadedModel,
    calibration: CalibrationSet,
    options: ExportOptions,
    work: Path,
    variant: OpenVinoVariant | None = None,
    model: Any = None,
) -> OpenVinoBackend:
    """Convert once (or reuse `model`); units are the MatMul/Convolution ops NNCF quantizes."""
    fp32 = model if model is not None else openvino_graph(loaded, options)
    units = tuple(op.get_friendly_name() for op in fp32.get_ordered_ops() if op.get_type_name() in OPENVINO_UNIT_TYPES)
    return OpenVinoBackend(fp32, calibration, options, variant or OpenVinoVariant.of(options), Path(work), units)


Backend = OrtBackend | OpenVinoBackend


def open_backend(
    loaded: LoadedModel, to: str, calibration: CalibrationSet, options: ExportOptions, work: Path
) -> Backend:
    """The backend for `to`, its intermediate files in `work` (which must outlive it)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if to == "onnx":
        return ort_backend(prepare_onnx(loaded, options, work), calibration, options, work)
    if to == "openvino":
        return openvino_backend(loaded, calibration, options, work)
    raise VitedgeError(f"no int8 sensitivity analysis for format {to!r}", "use --to onnx or --to openvino")
