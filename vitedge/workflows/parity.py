"""Parity: the same preprocessed real images through the PyTorch reference and through an
artifact, compared logit by logit, with per-precision tolerances and the worst samples named
(a bare "not within atol" helps nobody find what broke)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration.calibset import CalibrationSet, build_calibration_set, indices_of
from ..calibration.preprocess import DataConfig
from ..calibration.sources import ImageSet, has_cifar10_labels, same_source
from ..core.cpu import CpuInfo, onednn_cap_note, probe_cpu
from ..core.errors import VitedgeError
from ..models import LoadedModel, artifact_data_config

# per precision family; a bound named max_*/mean_* is an upper limit, any other a lower one
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4},
    "fp16": {"cosine_min": 0.9999},
    "bf16": {"cosine_min": 0.999, "top1_agreement": 0.98},
    "int8": {"cosine_mean": 0.995, "top1_agreement": 0.97},
}
UPPER_BOUNDS = ("max_abs", "mean_abs")
LOWER_BOUNDS = ("cosine_mean", "cosine_min", "top1_agreement", "top5_overlap")
WORST_SHOWN = 5
# A model that merges or drops tokens makes discrete choices; where the reference's choice was
# this close to a tie (score gap, see compress.tokens.decision_margins), another runtime's
# float summation order may choose otherwise and then rightly compute something else. Such an
# image may be set aside from the bounds, at most NEAR_TIE_SHARE of the images (and at least
# one): an export bug changes far more images than rounding ever flips.
NEAR_TIE_MARGIN = 1e-5
NEAR_TIE_SHARE = 0.01
# A model with random weights decides nothing: its classes' logits are near-ties (random
# ViT-B on CIFAR-10: median top-2 gap 0.14 logits, int8's error about 0.12 an image), so any
# int8 artifact of it flips about a tenth of its images' top-1, whatever its quality (OpenVINO
# int8 at cosine 0.998: agreement 91-92% on VNNI, AVX-512 and AVX2 kernels alike), and a gate
# at 97% passes or fails it by the draw. Its parity is judged by the logits; the agreement
# bounds are reported.
DECISION_BOUNDS = ("top1_agreement", "top5_overlap")
RANDOM_WEIGHTS = "random weights decide no class (their top-2 logits are closer than int8's error)"
VERIFY_BATCH = 32
VERIFY_SEED = 1  # calibration draws use seed 0 by default: a different draw even from one source
DEFAULT_VERIFY_SAMPLES = 1000
# A parity check on the user's own images holds some of them out of calibration: a fifth of the
# source, at least MIN_HELD_OUT (fewer say little about int8 parity); sources too small to
# spare that many calibrate on everything and the check falls back or says what to do.
MIN_HELD_OUT = 8
HELD_OUT_SHARE = 0.2
CIFAR10_TEST = "cifar10"


@dataclass(frozen=True)
class ParityData:
    """Which images a parity check runs on and why: printed beside the result and recorded with it."""

    spec: str  # an `open_source` spec
    why: str
    held_out: bool = False  # the calibration source itself, less its calibration images
    asked: bool = False  # named by the user: used as given, never replaced by a fallback


def held_out_reserve(available: int) -> int:
    """How many of a calibration source's `available` images a defaulted calibration leaves
    undrawn for the parity check on that same source (0: too few to split)."""
    if available < 2 * MIN_HELD_OUT:
        return 0
    return max(MIN_HELD_OUT, int(np.ceil(HELD_OUT_SHARE * available)))


def plan_parity_data(requested: str | None, *, calibration_source: str | None, labels: Sequence[str]) -> ParityData:
    """The parity images when the user named none: held-out images of the calibration source
    they gave (their domain, not ours), the CIFAR-10 test split after a `cifar10:train`
    calibration or when there is no source to hold images out of."""
    if requested:
        return ParityData(requested, "as asked", held_out=same_source(requested, calibration_source), asked=True)
    if calibration_source is None or calibration_source == "cifar10:train":
        if has_cifar10_labels(labels):
            why = "CIFAR-10 test images, the model's own classes"
        elif calibration_source:
            why = "CIFAR-10 test images, the split beside the cifar10:train calibration"
        else:
            why = "CIFAR-10 test images: no images of the model's own domain were given (--verify-data SRC names some)"
        return ParityData(CIFAR10_TEST, why)
    return ParityData(calibration_source, "held out from the calibration source: none is a calibration image", True)


def settle_parity_data(
    plan: ParityData,
    *,
    calibration: dict[str, Any] | None,
    labels: Sequence[str],
    images: ImageSet | None = None,
) -> ParityData:
    """A default held-out plan checked against what calibration left of the source: with fewer
    than MIN_HELD_OUT images left, a CIFAR-10 model is checked on CIFAR-10 (said in one warning
    line) and any other model's check is refused in one line with the fix."""
    if not plan.held_out or plan.asked:
        return plan
    from ..calibration.sources import open_source

    images = images if images is not None else open_source(plan.spec)
    calibrated = len(indices_of(images, (calibration or {}).get("identities", ())))
    left = images.count - calibrated
    if left >= MIN_HELD_OUT:
        return plan
    shortage = f"only {left} of the {images.count} images in {images.name} are not calibration images"
    if has_cifar10_labels(labels):
        warnings.warn(
            f"{shortage}: checking parity on CIFAR-10 test images (the model's classes) instead", stacklevel=2
        )
        return ParityData(CIFAR10_TEST, f"CIFAR-10 test images, the model's own classes ({shortage})")
    raise VitedgeError(
        f"{shortage}, too few for the parity check (it needs {MIN_HELD_OUT})",
        f"add images, calibrate on at most {max(1, images.count - MIN_HELD_OUT)} (--calib-samples), "
        "or name the check's images (--verify-data SRC; `vitedge verify --data SRC`)",
    )


@dataclass(frozen=True)
class ParityReport:
    precision: str
    samples: int
    max_abs: float
    mean_abs: float
    cosine_mean: float
    cosine_min: float
    top1_agreement: float
    top5_overlap: float
    tolerance: dict[str, float]
    passed: bool
    failures: tuple[str, ...]
    worst: tuple[tuple[str, float, float], ...] = field(
        default=()
    )  # (identity, cosine, max abs), worst first by what failed
    execution_precision: str = ""  # what the artifact's runtime reported it computed in
    set_aside: tuple[tuple[str, float, float], ...] = field(
        default=()
    )  # (identity, decision margin, max abs): near-tie choices that went the other way
    data: dict[str, Any] = field(default_factory=dict)  # which images, and why (see `data_record`)
    advice: tuple[str, ...] = ()  # what to change when it failed for a known reason (see `verify_artifact`)
    kernels: dict[str, int] = field(default_factory=dict)  # products per kernel or ORT operator that ran
    capped: str = ""  # OpenVINO checked under a oneDNN ISA cap, in words (core.cpu.onednn_cap_note)
    ungated: str = ""  # why the agreement bounds were reported, not applied (RANDOM_WEIGHTS)

    @property
    def data_line(self) -> str:
        """The images the check ran on, in words (empty when the caller did not say)."""
        if not self.data:
            return ""
        return f"{self.data['count']} images of {self.data['source']}, {self.data['why']}"

    @property
    def notes(self) -> tuple[str, ...]:
        """What a person should know beyond pass/fail: images set aside as flipped choices, a
        oneDNN ISA cap the check ran under, and the advice for a failure with a known cause."""
        told = (f"{self.capped}: this check ran an older CPU's kernels, not this one's",) if self.capped else ()
        if self.ungated:
            told = (f"top-1 agreement and top-5 overlap reported, not gated: {self.ungated}", *told)
        if not self.set_aside:
            return (*told, *self.advice)
        largest = max(m for _, _, m in self.set_aside)
        names = ", ".join(i for i, _, _ in self.set_aside[:3])
        return (
            f"{len(self.set_aside)} of {self.samples} images chose another merge/drop (their reference choice was within {NEAR_TIE_MARGIN:g} of a tie) "
            f"and differ by up to {largest:.2e}: {names}; not counted against the bounds",
            *told,
            *self.advice,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "execution_precision": self.execution_precision,
            "samples": self.samples,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "top1_agreement": self.top1_agreement,
            "top5_overlap": self.top5_overlap,
            "tolerance": dict(self.tolerance),
            "passed": self.passed,
            "failures": list(self.failures),
            "worst": [{"identity": i, "cosine": c, "max_abs": m} for i, c, m in self.worst],
            "set_aside": [{"identity": i, "decision_margin": g, "max_abs": m} for i, g, m in self.set_aside],
            "notes": list(self.notes),
            "kernels": dict(self.kernels),
            "data": dict(self.data),
        }


def tolerance_for(precision: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The default bounds of `precision`'s family (int8-dynamic, int8-static → int8), then `overrides`."""
    family = "int8" if precision.startswith("int8") else precision
    if family not in DEFAULT_TOLERANCES:
        raise VitedgeError(
            f"no parity tolerance for precision {precision!r}", f"known: {', '.join(DEFAULT_TOLERANCES)}"
        )
    merged = {**DEFAULT_TOLERANCES[family], **{k: float(v) for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(merged) - set(UPPER_BOUNDS) - set(LOWER_BOUNDS)
    if unknown:
        raise VitedgeError(
            f"unknown tolerance(s) {', '.join(sorted(unknown))}", f"use {', '.join(UPPER_BOUNDS + LOWER_BOUNDS)}"
        )
    return merged


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.where(
        norms > 0,
        dots / np.maximum(norms, np.finfo(np.float64).tiny),
        np.where(np.abs(a - b).max(axis=1) == 0, 1.0, 0.0),
    )


def _violates(bounds: dict[str, float], per_sample_max: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """Images that break a bound that holds image by image (max |Δ| or the least cosine)."""
    bad = np.zeros(len(cosine), dtype=bool)
    if "max_abs" in bounds:
        bad |= ~(per_sample_max <= bounds["max_abs"])
    if "cosine_min" in bounds:
        bad |= ~(cosine >= bounds["cosine_min"])
    return bad


def _worst_order(
    failed: Sequence[str], precision: str, per_sample_max: np.ndarray, cosine: np.ndarray, disagree: np.ndarray
) -> np.ndarray:
    """Image indices, worst first by the measure that failed (or the precision's own measure
    when nothing did): the table then shows the images that broke the gate."""
    key = failed[0] if failed else ("max_abs" if precision == "fp32" else "cosine_min")
    if key in UPPER_BOUNDS:
        return np.lexsort((cosine, -per_sample_max))
    if key.startswith("top"):
        return np.lexsort((cosine, ~disagree))
    return np.lexsort((-per_sample_max, cosine))


def format_metric(name: str, value: float) -> str:
    """A parity metric or its bound as a person reads it, the bound in its value's unit:
    distances in scientific notation, cosines to 6 places, agreement as a percentage."""
    if name.endswith("_abs"):
        return f"{value:.3e}"
    if name.startswith("cosine"):
        return f"{value:.6f}"
    return f"{100 * value:.2f}%"


def compare_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    precision: str,
    identities: Sequence[str] = (),
    tolerances: dict[str, float] | None = None,
    margins: np.ndarray | None = None,
    random_weights: bool = False,
) -> ParityReport:
    """Compare two N×C logit arrays; `tolerances` override the precision's defaults.
    `margins` (per image, from compress.tokens.decision_margins) lets images whose discrete
    choice was a near-tie be set aside when they, and only they, break a per-image bound.
    `random_weights`: the reference decides no class, so DECISION_BOUNDS are reported, not applied."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2 or len(ref) == 0:
        raise VitedgeError(
            f"cannot compare logits shaped {ref.shape} and {cand.shape}",
            "the artifact's output does not match the reference model's classes",
        )
    bounds = tolerance_for(precision, tolerances)
    if random_weights:
        bounds = {name: bound for name, bound in bounds.items() if name not in DECISION_BOUNDS}
    names = list(identities) if len(identities) == len(ref) else [f"#{i}" for i in range(len(ref))]
    diff = np.abs(ref - cand)
    per_sample_max = np.where(np.isfinite(diff), diff, np.inf).max(axis=1)
    cosine = _cosine(ref, cand)
    if not np.isfinite(cand).all():
        cosine = np.where(np.isfinite(cand).all(axis=1), cosine, -1.0)
    aside = np.zeros(len(ref), dtype=bool)
    failures = []
    if margins is not None:
        aside = _violates(bounds, per_sample_max, cosine) & (np.asarray(margins) < NEAR_TIE_MARGIN)
        allowed = max(1, int(NEAR_TIE_SHARE * len(ref)))
        if aside.sum() > allowed:
            failures.append(
                f"{int(aside.sum())} images differ at near-tie choices (allowed {allowed}: rounding flips few; this many is a real difference)"
            )
            aside[:] = False
    kept = ~aside
    ref_kept, cand_kept = ref[kept], cand[kept]
    top_k = min(5, ref.shape[1])
    ref_top = np.argsort(-ref_kept, axis=1)[:, :top_k]
    cand_top = np.argsort(-cand_kept, axis=1)[:, :top_k]
    overlap = np.mean([len(set(r) & set(c)) / top_k for r, c in zip(ref_top, cand_top, strict=True)])
    values = {
        "max_abs": float(per_sample_max[kept].max()),
        "mean_abs": float(np.mean(np.where(np.isfinite(diff[kept]), diff[kept], np.inf))),
        "cosine_mean": float(cosine[kept].mean()),
        "cosine_min": float(cosine[kept].min()),
        "top1_agreement": float(np.mean(ref_kept.argmax(axis=1) == cand_kept.argmax(axis=1))),
        "top5_overlap": float(overlap),
    }
    for name, bound in bounds.items():
        value = values[name]
        if (name in UPPER_BOUNDS and not value <= bound) or (name in LOWER_BOUNDS and not value >= bound):
            sign = "<=" if name in UPPER_BOUNDS else ">="
            failures.append(f"{name} {format_metric(name, value)} (needs {sign} {format_metric(name, bound)})")
    failed = [f.split(" ", 1)[0] for f in failures if f.split(" ", 1)[0] in bounds]
    disagree = ref.argmax(axis=1) != cand.argmax(axis=1)
    order = [i for i in _worst_order(failed, precision, per_sample_max, cosine, disagree) if kept[i]][:WORST_SHOWN]
    worst = tuple((names[i], float(cosine[i]), float(per_sample_max[i])) for i in order)
    set_aside = (
        tuple((names[i], float(margins[i]), float(per_sample_max[i])) for i in np.flatnonzero(aside))
        if margins is not None
        else ()
    )
    return ParityReport(
        precision=precision,
        samples=len(ref),
        tolerance=bounds,
        passed=not failures,
        failures=tuple(failures),
        worst=worst,
        set_aside=set_aside,
        ungated=RANDOM_WEIGHTS if random_weights else "",
        **values,
    )


def _run_batched(runner, inputs: np.ndarray, batch: int, fixed: bool) -> np.ndarray:  # noqa: ANN001 - Runner
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        real = len(chunk)
        if fixed and real < batch:  # a fixed-batch artifact takes exactly `batch` images: pad with the last
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        outputs.append(np.asarray(runner(chunk))[:real])
    return np.concatenate(outputs)


def verify_artifact(
    folder: Path,
    reference: LoadedModel,
    inputs: np.ndarray,
    *,
    identities: Sequence[str] = (),
    tolerances: dict[str, float] | None = None,
    threads: int | None = None,
    random_weights: bool = False,
) -> ParityReport:
    """Run `inputs` through `reference` (PyTorch fp32) and through the artifact in `folder`
    (checksums checked first) and compare; see `compare_logits`."""
    from ..core.manifest import read_manifest
    from ..targets.runners import open_artifact
    from ..targets.torch import open_torch

    manifest = read_manifest(folder)
    fixed = manifest.get("batch", "dynamic") != "dynamic"
    batch = int(manifest["batch"]) if fixed else VERIFY_BATCH
    expected = tuple(manifest["data_config"]["input_size"])
    if tuple(inputs.shape[1:]) != expected:
        raise VitedgeError(
            f"verification images are {tuple(inputs.shape[1:])} but {folder} takes {expected}",
            "preprocess them with the artifact's DataConfig",
        )
    from ..compress.tokens import decision_margins
    from ..core.precision import float_precision
    from ..targets.bundle.run_bundle import execution_text

    artifact = open_artifact(Path(folder), threads=threads)
    torch_runner = open_torch(reference.module, precision="fp32", threads=threads)
    candidate = _run_batched(artifact, inputs, batch, fixed)
    expected_logits = _run_batched(torch_runner, inputs, batch, False)
    margins = decision_margins(reference.module, inputs)
    report = compare_logits(
        expected_logits,
        candidate,
        precision=manifest["precision"],
        identities=identities,
        tolerances=tolerances,
        margins=margins,
        random_weights=random_weights,
    )
    if not report.passed:
        report = replace(report, advice=saturation_advice(manifest))
    report = replace(report, kernels=dict(artifact.info.detail.get("kernels") or {}))
    if artifact.info.runtime == "openvino":
        cpu = probe_cpu()
        report = replace(report, capped=onednn_cap_note(cpu.onednn_cap, cpu.isa))
    computed = artifact.info.execution_precision
    wanted = execution_text(manifest["precision"], float_precision(manifest["precision"], "cpu"))
    if computed != wanted:  # whatever the numbers say, a runtime computing in another precision fails
        failure = f"execution precision {computed or 'unreported'} (a {manifest['precision']} artifact must compute in {wanted})"
        return replace(report, execution_precision=computed, passed=False, failures=(*report.failures, failure))
    return replace(report, execution_precision=computed)


def saturation_advice(manifest: dict[str, Any], cpu: CpuInfo | None = None) -> tuple[str, ...]:
    """For an ONNX int8 artifact with full-range int8 weights that failed on a CPU where ONNX
    Runtime's u8×s8 products saturate (`CpuInfo.u8s8_saturates`): say so, and how to re-export.
    The same file can pass on a CPU with VNNI, so the cause is worth a line of its own."""
    quantization = manifest.get("quantization") or {}
    if manifest.get("format") != "onnx" or not str(manifest.get("precision", "")).startswith("int8"):
        return ()
    if quantization.get("reduce_range", True):
        return ()
    cpu = cpu or probe_cpu()
    if not cpu.u8s8_saturates:
        return ()
    return (
        f"this CPU has no int8 dot-product instruction ({cpu.isa_text}), so ONNX "
        "Runtime adds u8×s8 products in 16 bits, which can saturate with full-range int8 weights: try re-exporting with "
        "--reduce-range (7-bit weights), or run this file on a CPU with VNNI or AMX",
    )


def verification_set(
    data: str | ImageSet,
    config: DataConfig,
    samples: int | None,
    *,
    calibration: dict[str, Any] | None = None,
    seed: int = VERIFY_SEED,
) -> CalibrationSet:
    """`samples` real images from `data` (None: up to DEFAULT_VERIFY_SAMPLES, as many as there
    are), preprocessed by `config`, none of them an image the artifact was calibrated on
    (matched by name within the same source, then by pixel sha256). `data` may be a source the
    caller opened already: a folder is listed and its images' headers read once, not per use."""
    from ..calibration.sources import as_image_set

    images = as_image_set(data)
    exclude: list[int] = []
    if calibration and calibration.get("source") == images.name:
        exclude = indices_of(images, calibration.get("identities", ()))
    draw = {"seed": seed, "cache": False, "default": DEFAULT_VERIFY_SAMPLES, "warn_below": 0}
    chosen = build_calibration_set(images, config, samples, exclude=exclude, **draw)
    calibrated = set((calibration or {}).get("image_sha256", ()))
    while clashes := [
        index for index, digest in zip(chosen.indices, chosen.image_sha256, strict=True) if digest in calibrated
    ]:
        # the same pictures under other names (a copy of the folder, another spelling of the source)
        exclude = exclude + clashes
        chosen = build_calibration_set(images, config, samples, exclude=exclude, **draw)
    return chosen


def data_record(plan: ParityData, chosen: CalibrationSet, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """What a parity result records about its images: the source, how many, why those, whether
    they were held out of the calibration source, and each image's name."""
    return {
        "source": chosen.source,
        "count": len(chosen),
        "why": plan.why,
        "held_out_from_calibration": bool(calibration) and calibration.get("source") == chosen.source,
        "seed": chosen.seed,
        "identities": list(chosen.identities),
    }


def verify_folder(
    folder: Path,
    *,
    reference: LoadedModel,
    data: str | ParityData | None = None,
    samples: int | None = None,
    tolerances: dict[str, float] | None = None,
    threads: int | None = None,
    random_weights: bool = False,
    opened: Sequence[ImageSet] = (),
) -> ParityReport:
    """`vitedge verify` and `vitedge export`'s check: choose the images (`plan_parity_data` when
    `data` is None), draw them, compare, and report which images were used. `opened`: sources
    the caller has open already (export opens --calib and --verify-data before the model
    loads); the plan's source is taken from them, and any source is opened at most once."""
    from ..core.manifest import read_manifest

    manifest = read_manifest(folder)
    config = artifact_data_config(folder, manifest)  # the artifact's own preprocessing
    calibration = manifest.get("calibration")
    labels = manifest.get("labels", ())
    sources = list(opened)
    plan = data if isinstance(data, ParityData) else None
    if plan is None:
        source = _existing_source(calibration.get("source")) if calibration else None
        plan = plan_parity_data(data, calibration_source=source, labels=labels)
        images = _open_once(plan.spec, sources) if plan.held_out and not plan.asked else None
        plan = settle_parity_data(plan, calibration=calibration, labels=labels, images=images)
    chosen = verification_set(_open_once(plan.spec, sources), config, samples, calibration=calibration)
    report = verify_artifact(
        folder,
        reference,
        chosen.inputs,
        identities=chosen.identities,
        tolerances=tolerances,
        threads=threads,
        random_weights=random_weights,
    )
    return replace(report, data=data_record(plan, chosen, calibration))


def _open_once(spec: str, opened: list[ImageSet]) -> ImageSet:
    """The source `spec` names: one of `opened` when it is among them, else opened and added."""
    from ..calibration.sources import open_source

    images = open_source(spec, opened=opened)
    if not any(images is known for known in opened):
        opened.append(images)
    return images


def _existing_source(source: str | None) -> str | None:
    """A recorded calibration source that can still be opened here (an artifact may have moved)."""
    from ..calibration.sources import CIFAR10_SPECS

    if source and (source in CIFAR10_SPECS or Path(source).exists()):
        return source
    return None
