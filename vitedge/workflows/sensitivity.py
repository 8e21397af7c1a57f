"""Which nodes make int8 lose accuracy: quantize a model many times, each time with a different
set of nodes kept in float, and score every variant against the fp32 PyTorch logits on real
images that the calibration never saw.

The variants come from `int8_eval`'s two backends (ONNX Runtime static QDQ with
`nodes_to_exclude`, OpenVINO through NNCF with an ignored scope), the exporter's own quantizers.

A unit is a quantizable node (ORT: the MatMul/Gemm/Conv nodes that `op_types` names; NNCF:
the MatMul/Convolution ops it quantizes), or a group of them (`group="block"`: everything in
one transformer block; `group="kind"`: the same layer in every block, e.g. all fc2).

Two modes: `float-one` keeps one unit in float and quantizes the rest (the gain over the
all-int8 model is what keeping it costs nothing to recover, and is the ranking the accuracy
budget uses); `int8-one` quantizes only that unit (its own error, free of interactions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibration.calibset import CalibrationSet
from ..core.errors import VitedgeError
from ..core.io import save_figure_atomic, scratch_folder
from ..exporter.export import ExportOptions
from ..models import LoadedModel
from .int8_eval import Backend, EvalSet, Progress, Score, open_backend, score_runner

MODES = ("float-one", "int8-one")
GROUPS = ("node", "block", "kind")


# ---------------------------------------------------------------- units and groups

_BLOCK = re.compile(r"^(blocks\.\d+)")


def layer_label(node: str) -> str:
    """A short, runtime-independent name: '/blocks/blocks.0/attn/qkv/MatMul' (ORT) and
    '__module.blocks.0.attn.qkv/aten::linear/MatMul' (OpenVINO) both become 'blocks.0.attn.qkv';
    ORT's attention products stay 'blocks.0.attn.MatMul' (q·k) and '…MatMul_1' (attn·v)."""
    if node.startswith("__module."):
        return node[len("__module.") :].split("/")[0]
    parts = [p for p in node.split("/") if p]
    if len(parts) > 1 and parts[1].startswith(parts[0] + "."):
        parts = parts[1:]  # nn.Sequential scopes repeat their name: /blocks/blocks.0/...
    if len(parts) > 1 and parts[-1] in ("MatMul", "Gemm", "Conv"):
        parts = parts[:-1]
    return ".".join(parts)


def group_of(node: str, group: str) -> str:
    label = layer_label(node)
    if group == "node":
        return label
    if group == "block":
        match = _BLOCK.match(label)
        return match.group(1) if match else label.split(".")[0]
    if group == "kind":
        return _BLOCK.sub("blocks.*", label)
    raise VitedgeError(f"unknown sensitivity group {group!r}", f"use one of {', '.join(GROUPS)}")


def group_units(units: Sequence[str], group: str) -> dict[str, tuple[str, ...]]:
    """Group name → its nodes, in graph order."""
    groups: dict[str, list[str]] = {}
    for node in units:
        groups.setdefault(group_of(node, group), []).append(node)
    return {name: tuple(nodes) for name, nodes in groups.items()}


# ---------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class SensitivityRow:
    unit: str
    nodes: tuple[str, ...]
    score: Score
    sensitivity: float  # float-one: cosine error removed by keeping the unit float; int8-one: its own cosine error

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "nodes": list(self.nodes),
            "score": self.score.to_dict(),
            "sensitivity": self.sensitivity,
        }


@dataclass(frozen=True)
class SensitivityReport:
    format: str
    mode: str
    group: str
    int8: Score  # everything quantized
    rows: tuple[SensitivityRow, ...]  # most sensitive first
    evaluation: dict[str, Any]
    calibration: dict[str, Any]
    reference_top1: float | None

    def ranking(self) -> list[str]:
        """Nodes, most sensitive unit first (a unit's nodes stay together)."""
        return [node for row in self.rows for node in row.nodes]

    def to_dict(self) -> dict[str, Any]:
        calibration = {k: v for k, v in self.calibration.items() if k not in ("identities", "image_sha256")}
        return {
            "format": self.format,
            "mode": self.mode,
            "group": self.group,
            "reference_top1": self.reference_top1,
            "int8": self.int8.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
            "evaluation": self.evaluation,
            "calibration": calibration,
        }


def analyse(
    backend: Backend,
    evalset: EvalSet,
    *,
    mode: str = "float-one",
    group: str = "node",
    threads: int | None = 1,
    progress: Progress | None = None,
) -> SensitivityReport:
    """Score the all-int8 model, then one variant per unit (see the module doc for the modes);
    rows sorted by sensitivity, largest first (ties: lower top-1 agreement first)."""
    if mode not in MODES:
        raise VitedgeError(f"unknown sensitivity mode {mode!r}", f"use one of {', '.join(MODES)}")
    groups = group_units(backend.units, group)
    total = len(groups) + 1
    int8 = score_runner(backend.open((), threads=threads), evalset)
    if progress:
        progress(1, total, "all int8")
    rows = []
    for done, (unit, nodes) in enumerate(groups.items(), start=2):
        excluded = nodes if mode == "float-one" else tuple(n for n in backend.units if n not in nodes)
        score = score_runner(backend.open(excluded, threads=threads), evalset)
        error = 1.0 - score.cosine_mean
        sensitivity = (1.0 - int8.cosine_mean) - error if mode == "float-one" else error
        rows.append(SensitivityRow(unit, nodes, score, sensitivity))
        if progress:
            progress(done, total, unit)
    agreement_sign = 1.0 if mode == "float-one" else -1.0
    rows.sort(key=lambda r: (-r.sensitivity, -agreement_sign * r.score.top1_agreement))
    return SensitivityReport(
        backend.format, mode, group, int8, tuple(rows), evalset.record, backend.calibration, evalset.reference_top1
    )


def bar_plot(report: SensitivityReport, path: Path, *, shown: int = 40) -> Path:
    """Horizontal bars, most sensitive on top; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows[:shown]
    height = max(2.5, 0.28 * len(rows) + 1.2)
    figure, axes = plt.subplots(figsize=(8, height))
    values = [r.sensitivity for r in rows][::-1]
    axes.barh([r.unit for r in rows][::-1], values, color=["tab:red" if v > 0 else "tab:gray" for v in values])
    what = (
        "cosine error removed by keeping it in float"
        if report.mode == "float-one"
        else "cosine error when only it is int8"
    )
    axes.set_xlabel(f"{what} (1 − cosine)")
    axes.set_title(
        f"int8 sensitivity, {report.format} ({report.mode}, per {report.group}; all-int8 cosine {report.int8.cosine_mean:.5f})",
        fontsize=9,
    )
    axes.tick_params(axis="y", labelsize=7)
    axes.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    return save_figure_atomic(figure, path)


def write_report(report: SensitivityReport, folder: Path) -> dict[str, Path]:
    """`sensitivity.json` and `sensitivity.png` in `folder`."""
    from ..core.io import write_json_atomic

    folder = Path(folder)
    paths = {"json": folder / "sensitivity.json", "plot": folder / "sensitivity.png"}
    write_json_atomic(paths["json"], report.to_dict())
    bar_plot(report, paths["plot"])
    return paths


def run_sensitivity(
    loaded: LoadedModel,
    *,
    to: str,
    calibration: CalibrationSet,
    evalset: EvalSet,
    options: ExportOptions = ExportOptions(),
    mode: str = "float-one",
    group: str = "node",
    threads: int | None = 1,
    progress: Progress | None = None,
) -> SensitivityReport:
    """The whole analysis in a temp folder (`vitedge sensitivity`)."""
    with scratch_folder("vitedge-sensitivity-") as tmp:
        backend = open_backend(loaded, to, calibration, options, Path(tmp))
        return analyse(backend, evalset, mode=mode, group=group, threads=threads, progress=progress)
