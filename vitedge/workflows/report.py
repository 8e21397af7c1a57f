"""Every number a person reads goes through this module: the terminal table, `results.json`,
`report.md` and `pareto.png` all come from the same rows and the same formatter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.cpu import onednn_cap_note, pinned_text, usable_words
from ..core.io import save_figure_atomic, write_json_atomic, write_text_atomic
from ..targets.measure import Measurement
from ..targets.stats import PairedDelta, paired_delta


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
    baseline: bool = False  # the fp32 PyTorch row that Δ top-1 and "× PyTorch" refer to
    scale: str = ""  # e.g. "accuracy: vitedge-cifar10" vs "speed: vit_base_patch16_224"
    delta: PairedDelta | None = None  # Δ top-1 against the baseline on the same images, with its interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement.to_dict(),
            "parity": asdict(self.parity) if self.parity else None,
            "baseline": self.baseline,
            "scale": self.scale,
            "delta_top1": asdict(self.delta) if self.delta else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        parity = Parity(**data["parity"]) if data.get("parity") else None
        delta = PairedDelta(**data["delta_top1"]) if data.get("delta_top1") else None
        return cls(
            Measurement.from_dict(data["measurement"]),
            parity,
            data.get("baseline", False),
            data.get("scale", ""),
            delta,
        )


DASH = "—"
RESULTS_JSON = "results.json"  # every `vitedge run` folder holds it


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


COLUMNS = (
    "model",
    "computes",
    "top-1 %",
    "Δ top-1 [95% CI]",
    "parity cos",
    "it/s b1",
    "img/s b8",
    "× fastest fp32 b1",
    "× PyTorch b1",
    "p90 ms b1",
    "load+1st ms",
    "MB",
    "peak MB",
)
NOISE_MARK = "~"  # after a Δ whose interval contains 0: no difference shown on these images


def baseline_of(rows: Sequence[ResultRow]) -> ResultRow | None:
    return next((row for row in rows if row.baseline), None)


def fastest_fp32(rows: Sequence[ResultRow]) -> ResultRow | None:
    """The fastest row at batch 1 that computes in f32: the fair yardstick for a speedup
    (PyTorch eager can be several times slower than another fp32 runtime on the same CPU)."""
    fp32 = [
        row
        for row in rows
        if row.measurement.precision == "fp32"
        and row.measurement.execution_precision in ("f32", "")
        and row.measurement.timing(1)
    ]
    return max(fp32, key=lambda row: row.measurement.timing(1).it_per_s, default=None)


ACCURACY_BUDGET = 1.0  # top-1 points below the fp32 PyTorch row that a recommendation may cost


def recommended(rows: Sequence[ResultRow], budget: float = ACCURACY_BUDGET) -> ResultRow | None:
    """The fastest row at batch 1 among those this run showed to be usable: an artifact that
    passed its parity check, or a PyTorch model, whose top-1 (when measured) is within `budget`
    points of the fp32 PyTorch row on the same images. From these measurements, not from the
    CPU's features: the same artifact kinds rank differently on the next CPU."""
    baseline = baseline_of(rows)
    base_top1 = baseline.measurement.accuracy.top1 if baseline and baseline.measurement.accuracy else None

    def usable(row: ResultRow) -> bool:
        passed = row.parity.passed if row.parity else row.measurement.runtime == "torch"
        accuracy = row.measurement.accuracy
        within = base_top1 is None or accuracy is None or accuracy.top1 >= base_top1 - budget
        return passed and within and row.measurement.timing(1) is not None

    return max(filter(usable, rows), key=lambda row: row.measurement.timing(1).it_per_s, default=None)


def recommendation_line(rows: Sequence[ResultRow], budget: float = ACCURACY_BUDGET) -> str:
    """One sentence naming `recommended(rows)` and what it was measured against; empty when no
    row had a parity check (`vitedge bench` of artifacts alone: nothing shows they are usable)."""
    if not any(row.parity for row in rows):
        return ""
    best = recommended(rows, budget)
    if best is None:
        return "No row passed parity within the accuracy budget: nothing to recommend from this run."
    m, fastest = best.measurement, fastest_fp32(rows)
    speed = m.timing(1).it_per_s
    against = f", {speed / fastest.measurement.timing(1).it_per_s:.2f}× {fastest.measurement.name}" if fastest else ""
    emulated = " (emulated: these speeds rank nothing on real hardware)" if m.machine.get("emulated") else ""
    if _capped(m):
        emulated += (
            f" (OpenVINO under {m.machine['onednn_cap']}: its speeds are an older CPU's kernels, not this CPU's)"
        )
    return (
        f"Fastest here within parity and {budget:g} top-1 point of fp32: {m.name} "
        f"({m.runtime} {m.precision}, computes {m.execution_precision or '?'}; {speed:.1f} it/s at batch 1{against}), "
        f"measured in this run on {m.machine.get('cpu', '?')}{emulated}."
    )


def fmt_delta(delta: PairedDelta | None, *, reference: bool = False) -> str:
    """Δ top-1 with its interval, marked when the interval contains 0."""
    if reference:
        return "reference"
    if delta is None:
        return DASH
    mark = NOISE_MARK if delta.within_noise else ""
    return f"{fmt(delta.delta, 'delta')} [{fmt(delta.low, 'delta')},{fmt(delta.high, 'delta')}]{mark}"


def _ratio(row: ResultRow, yardstick: ResultRow | None) -> str:
    mine, theirs = row.measurement.timing(1), yardstick.measurement.timing(1) if yardstick else None
    return fmt(mine.it_per_s / theirs.it_per_s if mine and theirs else None, "ratio")


def cells(row: ResultRow, baseline: ResultRow | None, fastest: ResultRow | None = None) -> list[str]:
    m = row.measurement
    b1, b8 = m.timing(1), m.timing(8)
    return [
        m.name,
        m.execution_precision or DASH,
        fmt(m.accuracy.top1 if m.accuracy else None, "pct"),
        fmt_delta(row.delta, reference=row is baseline),
        fmt(row.parity.cosine_mean if row.parity else None, "cosine"),
        fmt(b1.it_per_s if b1 else None, "rate"),
        fmt(b8.images_per_s if b8 else None, "rate"),
        _ratio(row, fastest),
        _ratio(row, baseline),
        fmt(b1.p90_ms if b1 else None, "ms"),
        fmt(m.first_inference_ms, "ms"),
        fmt(m.size_mb, "mb"),
        fmt(m.peak_rss_mb, "mb"),
    ]


def table_cells(rows: Sequence[ResultRow]) -> list[list[str]]:
    baseline, fastest = baseline_of(rows), fastest_fp32(rows)
    return [cells(row, baseline, fastest) for row in rows]


def rich_table(rows: Sequence[ResultRow], title: str = "vitedge results") -> Table:
    table = Table(title=title, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")  # never "…"
    for line in table_cells(rows):
        table.add_row(*line)
    return table


def _capped(m: Measurement) -> str:
    """The oneDNN ISA cap the row was measured under, in words ("" for none)."""
    return onednn_cap_note(m.machine.get("onednn_cap") or "", m.machine.get("isa") or ())


def machine_line(rows: Sequence[ResultRow]) -> str:
    if not rows:
        return ""
    m = rows[0].measurement
    isa = "; ".join(
        [", ".join(m.machine.get("isa", [])) or "no SIMD flags read"]
        + [text for text in (_capped(m), pinned_text(m.machine.get("timed_on"))) if text]
    )
    threads = sorted({str(r.measurement.threads) for r in rows})
    count = m.machine.get("cores")
    cores = f"{count or '?'} cores" + usable_words(count or 0, m.machine.get("usable_cpus"), m.machine.get("cpu_quota"))
    return f"{m.machine.get('cpu', '?')} ({cores}; {isa}); threads {'/'.join(threads)}; Python {m.machine.get('python', '?')}"


def markdown(rows: Sequence[ResultRow], title: str = "vitedge results", notes: Sequence[str] = ()) -> str:
    fastest = fastest_fp32(rows)
    lines = [f"# {title}", "", f"Machine: {machine_line(rows)}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in table_cells(rows)]
    versions: dict[str, str] = {}
    for row in rows:
        versions.update(row.measurement.versions)
    lines += ["", "Runtimes: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    lines += [
        "",
        "computes: the precision the runtime reported it computes in (int8+f32: int8 matrix products, float parts in f32). "
        "Δ top-1 is against the fp32 PyTorch row on the same images, with a paired 95% interval (Wilson, on the images only one of the two gets right); "
        f"{NOISE_MARK} marks an interval that contains 0: no difference is shown, and the Pareto front does not rank on it. "
        f"× fastest fp32 is against {fastest.measurement.name if fastest else 'the fastest fp32 row'} (the fastest row computing in f32), × PyTorch against PyTorch fp32 eager. "
        "it/s b1 is batch-1 calls per second (= images/s); img/s b8 is images per second at batch 8; p90 is batch-1 latency; load+1st is the time from nothing loaded to the first answer on one image (open, compile, first call); MB is the model on disk; peak MB is the runner process's peak RSS. "
        "Each batch size is timed on a runner opened for it; results.json records each timing's hint, streams and threads.",
    ]
    lines += [f"- {note}" for note in notes]
    lines += ["", line] if (line := recommendation_line(rows)) else []
    return "\n".join(lines) + "\n"


def pareto_front(points: Sequence[tuple[float, float]], tied: Any = None) -> list[int]:
    """Indices of points not dominated in (speed up, accuracy up), sorted by speed.

    `tied(i, j)` says whether the accuracies of i and j are indistinguishable (their paired
    interval contains 0); a faster point then dominates a slower one even when its top-1 is
    a little lower, so the front is not drawn through differences inside the noise."""

    def dominates(j: int, i: int) -> bool:
        (speed_j, top1_j), (speed_i, top1_i) = points[j], points[i]
        better_or_same = top1_j >= top1_i or (tied is not None and tied(i, j))
        return better_or_same and speed_j >= speed_i and (speed_j > speed_i or top1_j > top1_i)

    front = [i for i in range(len(points)) if not any(dominates(j, i) for j in range(len(points)) if j != i)]
    return sorted(front, key=lambda i: points[i][0])


def accuracy_tie(rows: Sequence[ResultRow]) -> Any:
    """`tied(i, j)` for `pareto_front` from the rows' per-image hits (None without them)."""
    hits = [row.measurement.accuracy.hits() if row.measurement.accuracy else None for row in rows]
    if not rows or any(h is None for h in hits):
        return None
    return lambda i, j: len(hits[i]) == len(hits[j]) and paired_delta(hits[i], hits[j]).within_noise


PublishedPoint = tuple[str, float, float | None, float]  # (label, it/s, top-1 % or None, MB)


def _plot_published(axes: Any, published: Sequence[PublishedPoint]) -> None:
    """Published points with a top-1 as crosses; those without one (a paper gives some rows
    speed only) as a dotted vertical line at their it/s, so no top-1 is made up for them."""
    ranked = [p for p in published if p[2] is not None]
    if ranked:
        axes.scatter(
            [p[1] for p in ranked],
            [p[2] for p in ranked],
            marker="x",
            color="black",
            label="published (Chen et al. 2024)",
        )
        for label, speed, top1, _ in ranked:
            axes.annotate(f"{label} (published)", (speed, top1), fontsize=7, xytext=(4, -9), textcoords="offset points")
    for label, speed, _, _ in (p for p in published if p[2] is None):
        axes.axvline(speed, linestyle=":", color="gray", label=f"{label} (published it/s; no top-1 published)")


RUNTIME_COLORS = {"torch": "tab:blue", "onnxruntime": "tab:orange", "openvino": "tab:green", "executorch": "tab:red"}
# Label offsets (points) tried in turn, nearest first; a label takes the first that overlaps
# no label placed before it, so every point keeps a readable number.
# Where a point's label may go, nearest first: six directions, each at growing distances, far
# enough out that a crowd of points close together still gets a free place for each label.
LABEL_OFFSETS = tuple(
    (dx, dy)
    for radius in range(1, 13)
    for dx, dy in ((5, 3), (5, -11), (-12, 3), (-12, -11), (0, 9), (0, -17))
    for dx, dy in [(dx * radius, dy * radius)]
)
SAME_SPOT_PX = 2.0  # points closer than this on screen are one spot and share a label
FIGURE_SIZE = (11.0, 5.5)  # inches: the axes, and a key column on the right that names every point


def runtime_color(measurement: Measurement) -> str:
    return RUNTIME_COLORS.get(measurement.runtime, "tab:gray")


def place_labels(figure: Any, axes: Any, points: Sequence[tuple[float, float]], texts: Sequence[str]) -> list[Any]:
    """Annotate each point with its text at the first `LABEL_OFFSETS` entry whose text box
    overlaps no label already placed (the layout must be final: boxes are measured in display
    space). Points drawn on one spot (rows of equal speed and top-1) share one label, "7, 8"."""
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    spots: list[tuple[tuple[float, float], Any, list[str]]] = []  # (data point, display point, texts)
    for point, text in zip(points, texts, strict=True):
        shown = axes.transData.transform(point)
        same = next((spot for spot in spots if math.dist(spot[1], shown) < SAME_SPOT_PX), None)
        if same is None:
            spots.append((point, shown, [text]))
        else:
            same[2].append(text)
    placed: list[Any] = []
    boxes: list[Any] = []
    for (x, y), _, names in spots:
        for dx, dy in LABEL_OFFSETS:
            label = axes.annotate(
                ", ".join(names),
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.4},
            )
            box = Text.get_window_extent(label, renderer)  # the text alone, not its leader line
            if not any(box.overlaps(other) for other in boxes) or (dx, dy) == LABEL_OFFSETS[-1]:
                boxes.append(box)
                placed.append(label)
                break
            label.remove()
    return placed


def numbered_key(axes: Any, names: Sequence[str], colors: Sequence[str], front: Sequence[int] = ()) -> None:
    """The key beside the axes: "n. name" for every numbered point, in the point's colour;
    rows on the Pareto front are marked."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            color=color,
            label=f"{n}. {name}{' (front)' if n - 1 in front else ''}",
        )
        for n, (name, color) in enumerate(zip(names, colors, strict=True), start=1)
    ]
    key = axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0)
    axes.add_artist(key)


def pareto_plot(
    rows: Sequence[ResultRow],
    path: Path,
    *,
    title: str = "top-1 vs speed (CPU, batch 1)",
    published: Sequence[PublishedPoint] = (),
) -> list[str]:
    """top-1 vs it/s, marker area ∝ MB and colour by runtime, every point numbered and named in
    the key beside the axes, the Pareto front drawn (and its rows' names returned);
    `published` points are overlaid and labelled as published (see `_plot_published` for
    those without top-1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.measurement.accuracy and r.measurement.timing(1)]
    measured = [
        (r.measurement.name, r.measurement.timing(1).it_per_s, r.measurement.accuracy.top1, r.measurement.size_mb)
        for r in shown
    ]
    front: list[int] = []
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    figure.subplots_adjust(left=0.07, right=0.66, top=0.92, bottom=0.1)
    colors = [runtime_color(r.measurement) for r in shown]
    if measured:
        largest = max(m[3] for m in measured) or 1.0
        axes.scatter(
            [m[1] for m in measured],
            [m[2] for m in measured],
            s=[40 + 600 * m[3] / largest for m in measured],
            c=colors,
            alpha=0.6,
        )
        with_delta = [(m, r.delta) for m, r in zip(measured, shown, strict=True) if r.delta is not None]
        if with_delta:  # the paired 95% interval of Δ top-1, drawn around each row's top-1
            axes.errorbar(
                [m[1] for m, _ in with_delta],
                [m[2] for m, _ in with_delta],
                yerr=[[d.delta - d.low for _, d in with_delta], [d.high - d.delta for _, d in with_delta]],
                fmt="none",
                ecolor="gray",
                elinewidth=0.8,
                capsize=2,
                label="Δ top-1 95% interval (paired with PyTorch fp32)",
            )
        front = pareto_front([(m[1], m[2]) for m in measured], accuracy_tie(shown))
        axes.plot(
            [measured[i][1] for i in front],
            [measured[i][2] for i in front],
            "--",
            color="tab:red",
            label="Pareto front",
        )
        numbered_key(axes, [m[0] for m in measured], colors, front)
    _plot_published(axes, published)
    axes.set_xscale("log")
    axes.set_xlabel("images / second (batch 1, log scale; marker area ∝ MB; colour: runtime)")
    axes.set_ylabel("top-1 %")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.02, 0.0), borderaxespad=0)
    figure.canvas.draw()  # final limits, so label boxes are measured where they will be drawn
    place_labels(figure, axes, [(m[1], m[2]) for m in measured], [str(n) for n in range(1, len(measured) + 1)])
    save_figure_atomic(figure, path)
    return [measured[i][0] for i in front]


def write_reports(
    rows: Sequence[ResultRow],
    folder: Path,
    *,
    title: str = "vitedge results",
    extra: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / RESULTS_JSON, "markdown": folder / "report.md", "plot": folder / "pareto.png"}
    write_json_atomic(paths["json"], {"title": title, "rows": [row.to_dict() for row in rows], **(extra or {})})
    write_text_atomic(paths["markdown"], markdown(rows, title, notes))
    pareto_plot(rows, paths["plot"], title=title)
    return paths


def progress_bar(console: Console) -> Progress:
    """The one progress display of the long commands: a bar, n/total, the item, elapsed time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[item]}"),
        TimeElapsedColumn(),
        console=console,
    )


def print_table(rows: Sequence[ResultRow], console: Console, title: str = "vitedge results") -> None:
    console.print(rich_table(rows, title))
    console.print(f"[dim]{machine_line(rows)}[/]")
    if line := recommendation_line(rows):
        console.print(line, highlight=False)


BOARD_COLUMNS = (
    "model",
    "runtime",
    "computes",
    "parity",
    "cos mean",
    "top-1 agree",
    "it/s b1",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "load+1st ms",
    "peak MB",
    "°C before→after",
)


def board_cells(row: ResultRow) -> list[str]:
    """One board row: parity, batch-1 latency percentiles, memory, first answer, temperature."""
    m, parity = row.measurement, row.parity
    b1 = m.timing(1) or (m.timings[0] if m.timings else None)
    temps = m.machine.get("temperature_c") or {}
    before, after = temps.get("before"), temps.get("after")
    return [
        m.name,
        m.runtime,
        m.execution_precision or DASH,
        DASH if parity is None else ("pass" if parity.passed else "FAIL"),
        fmt(parity.cosine_mean if parity else None, "cosine"),
        fmt(parity.top1_agreement if parity else None, "agree"),
        fmt(b1.it_per_s if b1 else None, "rate"),
        fmt(b1.p50_ms if b1 else None, "ms"),
        fmt(b1.p90_ms if b1 else None, "ms"),
        fmt(b1.p99_ms if b1 else None, "ms"),
        fmt(m.first_inference_ms, "ms"),
        fmt(m.peak_rss_mb, "mb"),
        f"{fmt(before, 'rate')}→{fmt(after, 'rate')}" if before is not None or after is not None else DASH,
    ]


def board_line(rows: Sequence[ResultRow]) -> str:
    """The board's CPU facts as its bundle reported them: model, cores, the ISA that decides
    int8 speed (dotprod, i8mm), clock and governor."""
    if not rows:
        return ""
    machine = rows[0].measurement.machine
    isa = ", ".join(machine.get("isa", [])) or "no ISA flags read"
    dot = ", ".join(machine.get("int8_dot", [])) or "none"
    mhz = machine.get("cpu_mhz") or {}
    clock = (
        f"{fmt(mhz.get('current'), 'rate')} of {fmt(mhz.get('max'), 'rate')} MHz ({mhz.get('governor') or '?'})"
        if mhz.get("current") or mhz.get("max")
        else "clock not readable"
    )
    return f"board: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('machine', '?')}; ISA {isa}; int8 dot products: {dot}; {clock}; Python {machine.get('python', '?')}"


def print_board_table(rows: Sequence[ResultRow], console: Console, title: str = "on the board") -> None:
    table = Table(title=title, header_style="bold")
    for column in BOARD_COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right", overflow="fold")
    for row in rows:
        table.add_row(*board_cells(row))
    console.print(table)
    console.print(f"[dim]{board_line(rows)}[/]", highlight=False)
