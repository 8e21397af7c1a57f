"""Every number a person reads goes through this module: the terminal table, `results.json`,
`report.md` and `pareto.png` all come from the same rows and the same formatter."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from exporter.artifact import save_figure_atomic, write_json_atomic, write_text_atomic
from targets.measure import Measurement


@dataclass(frozen=True)
class Parity:
    cosine_mean: float
    cosine_min: float
    top1_agreement: float  # fraction 0..1
    max_abs: float
    passed: bool


@dataclass(frozen=True)
class ResultRow:
    measurement: Measurement
    parity: Parity | None = None
    baseline: bool = False  # the fp32 PyTorch row that Δ and speedup refer to
    scale: str = ""  # e.g. "accuracy: vitedge-cifar10" vs "speed: vit_base_patch16_224"

    def to_dict(self) -> dict[str, Any]:
        return {"measurement": self.measurement.to_dict(), "parity": asdict(self.parity) if self.parity else None, "baseline": self.baseline, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRow":
        return cls(Measurement.from_dict(data["measurement"]), Parity(**data["parity"]) if data.get("parity") else None, data.get("baseline", False), data.get("scale", ""))


DASH = "—"


def fmt(value: float | None, kind: str) -> str:
    """The one number formatter: same units and digits everywhere."""
    if value is None:
        return DASH
    formats = {
        "pct": "{:.2f}",
        "delta": "{:+.2f}",
        "cosine": "{:.5f}",
        "rate": "{:.1f}" if abs(value) >= 10 else "{:.2f}",
        "ratio": "{:.2f}×",
        "ms": "{:.2f}",
        "mb": "{:.2f}" if abs(value) < 10 else "{:.1f}",
        "agree": "{:.1%}",
    }
    return formats[kind].format(value)


COLUMNS = ("model", "top-1 %", "Δ top-1", "parity cos", "it/s b1", "img/s b8", "speedup b1", "p90 ms b1", "MB", "peak MB")


def baseline_of(rows: Sequence[ResultRow]) -> ResultRow | None:
    return next((row for row in rows if row.baseline), None)


def cells(row: ResultRow, baseline: ResultRow | None) -> list[str]:
    m = row.measurement
    b1, b8 = m.timing(1), m.timing(8)
    top1 = m.accuracy.top1 if m.accuracy else None
    base_top1 = baseline.measurement.accuracy.top1 if baseline and baseline.measurement.accuracy else None
    base_b1 = baseline.measurement.timing(1) if baseline else None
    delta = top1 - base_top1 if top1 is not None and base_top1 is not None else None
    speedup = b1.it_per_s / base_b1.it_per_s if b1 and base_b1 else None
    return [
        m.name,
        fmt(top1, "pct"),
        fmt(delta, "delta"),
        fmt(row.parity.cosine_mean if row.parity else None, "cosine"),
        fmt(b1.it_per_s if b1 else None, "rate"),
        fmt(b8.images_per_s if b8 else None, "rate"),
        fmt(speedup, "ratio"),
        fmt(b1.p90_ms if b1 else None, "ms"),
        fmt(m.size_mb, "mb"),
        fmt(m.peak_rss_mb, "mb"),
    ]


def rich_table(rows: Sequence[ResultRow], title: str = "vitedge results") -> Table:
    table = Table(title=title, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "model" else "right")
    baseline = baseline_of(rows)
    for row in rows:
        table.add_row(*cells(row, baseline))
    return table


def machine_line(rows: Sequence[ResultRow]) -> str:
    if not rows:
        return ""
    m = rows[0].measurement
    isa = ", ".join(m.machine.get("isa", [])) or "no SIMD flags read"
    threads = sorted({str(r.measurement.threads) for r in rows})
    return f"{m.machine.get('cpu', '?')} ({m.machine.get('cores', '?')} cores; {isa}); threads {'/'.join(threads)}; Python {m.machine.get('python', '?')}"


def markdown(rows: Sequence[ResultRow], title: str = "vitedge results", notes: Sequence[str] = ()) -> str:
    baseline = baseline_of(rows)
    lines = [f"# {title}", "", f"Machine: {machine_line(rows)}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(row, baseline)) + " |" for row in rows]
    versions: dict[str, str] = {}
    for row in rows:
        versions.update(row.measurement.versions)
    lines += ["", "Runtimes: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    lines += ["", "Δ top-1 and speedup are against the fp32 PyTorch row; it/s b1 is batch-1 calls per second (= images/s); img/s b8 is images per second at batch 8; p90 is batch-1 latency; MB is the model on disk; peak MB is the runner process's peak RSS."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (speed up, accuracy up), sorted by speed."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


PublishedPoint = tuple[str, float, float | None, float]  # (label, it/s, top-1 % or None, MB)


def _plot_published(axes: Any, published: Sequence[PublishedPoint]) -> None:
    """Published points with a top-1 as crosses; those without one (a paper gives some rows
    speed only) as a dotted vertical line at their it/s, so no top-1 is made up for them."""
    ranked = [p for p in published if p[2] is not None]
    if ranked:
        axes.scatter([p[1] for p in ranked], [p[2] for p in ranked], marker="x", color="black", label="published (Chen et al. 2024)")
        for label, speed, top1, _ in ranked:
            axes.annotate(f"{label} (published)", (speed, top1), fontsize=7, xytext=(4, -9), textcoords="offset points")
    for label, speed, _, _ in (p for p in published if p[2] is None):
        axes.axvline(speed, linestyle=":", color="gray", label=f"{label} (published it/s; no top-1 published)")


def pareto_plot(rows: Sequence[ResultRow], path: Path, *, title: str = "top-1 vs speed (CPU, batch 1)", published: Sequence[PublishedPoint] = ()) -> None:
    """top-1 vs it/s, marker area ∝ MB, the Pareto front drawn; `published` points are
    overlaid and labelled as published (see `_plot_published` for those without top-1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [(r.measurement.name, r.measurement.timing(1).it_per_s, r.measurement.accuracy.top1, r.measurement.size_mb) for r in rows if r.measurement.accuracy and r.measurement.timing(1)]
    figure, axes = plt.subplots(figsize=(8, 5.5))
    if measured:
        largest = max(m[3] for m in measured) or 1.0
        axes.scatter([m[1] for m in measured], [m[2] for m in measured], s=[40 + 600 * m[3] / largest for m in measured], alpha=0.6, label="measured (area ∝ MB; labelled: on the front)")
        front = pareto_front([(m[1], m[2]) for m in measured])
        # dominated rows crowd into one cluster (a study has ~25 rows); the table names them
        for k, i in enumerate(front):  # neighbours on the front sit close: stagger their labels
            axes.annotate(measured[i][0], (measured[i][1], measured[i][2]), fontsize=7, xytext=(6, (4, -12, 16, -24)[k % 4]), textcoords="offset points", arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5})
        axes.plot([measured[i][1] for i in front], [measured[i][2] for i in front], "--", color="tab:red", label="Pareto front")
    _plot_published(axes, published)
    axes.set_xscale("log")
    axes.set_xlabel("images / second (batch 1, log scale)")
    axes.set_ylabel("top-1 %")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure_atomic(figure, path)


def write_reports(rows: Sequence[ResultRow], folder: Path, *, title: str = "vitedge results", extra: dict[str, Any] | None = None, notes: Sequence[str] = ()) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "report.md", "plot": folder / "pareto.png"}
    write_json_atomic(paths["json"], {"title": title, "rows": [row.to_dict() for row in rows], **(extra or {})})
    write_text_atomic(paths["markdown"], markdown(rows, title, notes))
    pareto_plot(rows, paths["plot"], title=title)
    return paths


def print_table(rows: Sequence[ResultRow], console: Console, title: str = "vitedge results") -> None:
    console.print(rich_table(rows, title))
    console.print(f"[dim]{machine_line(rows)}[/]")
