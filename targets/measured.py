"""What vitedge measured on each board: the rows of the last `vitedge bench` of a model there
(over SSH, or on an ARM machine itself), kept in the user's cache so that `vitedge targets`
can recommend from measurements instead of rules.

Which runtime is fastest on an ARM board does not follow from its ISA flags: ExecuTorch,
ONNX Runtime and OpenVINO each pick their own kernels for dotprod and i8mm, and on a board
whose runtime computes something else than the artifact promises the fastest row is no
answer at all. So a recommendation is the one the bench made from its rows (workflows.report.recommended:
the fastest batch-1 row whose parity check passed), on the same board, for one model, and it
names the figures it comes from.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from ..core.cpu import CpuInfo
from ..core.io import write_json_atomic

STORE = "boards.json"
ARM = ("aarch64", "arm64")


def store_path() -> Path:
    """boards.json in the user's vitedge cache (VITEDGE_CACHE or ~/.cache/vitedge)."""
    from ..calibration.sources import cache_dir

    return cache_dir() / STORE


def board_key(cpu: CpuInfo) -> str:
    """One board kind: architecture, CPU model as vitedge names it, logical CPUs, the ISA and
    the cores' generation. The name alone is not a kind: a cloud VM calls every EPYC "AMD
    EPYC", and an AVX2-only one's measurements must not become an AVX-512 one's advice."""
    return "|".join((cpu.arch, cpu.model, str(cpu.cores), ",".join(cpu.isa), cpu.generation))


def _usable_row(row: Any) -> bool:
    """A row as `record` keeps it: what `row_label` and `figures` read is there, of its type."""
    number = (int, float)
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(key), str) for key in ("format", "precision", "runtime"))
        and (
            not row.get("it_per_s_b1")
            or (isinstance(row["it_per_s_b1"], number) and isinstance(row.get("p50_ms_b1"), number))
        )
    )


def _usable_board(board: Any) -> bool:
    if not isinstance(board, dict) or not isinstance(board.get("cpu"), dict):
        return False
    models = board.get("models", {})
    return isinstance(models, dict) and all(
        isinstance(m, dict) and isinstance(m.get("rows", []), list) and all(map(_usable_row, m.get("rows", [])))
        for m in models.values()
    )


def load_store(path: Path | None = None) -> dict[str, Any]:
    """Every board's measurements ({} when nothing was measured or the file is unreadable). A
    board entry of another shape (edited by hand, or by another version) is left out, as an
    unreadable file is: `vitedge targets` then falls back to its rule for that board, and the
    next measurement there replaces the entry."""
    path = path or store_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: board for key, board in data.items() if _usable_board(board)} if isinstance(data, dict) else {}


def record(
    cpu: CpuInfo,
    model: str,
    rows: list[dict[str, Any]],
    *,
    where: str,
    recommended: str | None = None,
    crowded: str | None = None,
    path: Path | None = None,
) -> Path:
    """Keep `rows` (plain dicts, see `workflows.board.board_summary`) as the latest
    measurements of `model` on the board `cpu`, reached as `where` (ssh://… or "local"), with
    the name of the row the bench recommended (None: it recommended none) and, where the rows
    were timed at more threads than the measuring process could keep busy (a container's CPU
    quota, a taskset, a small board), the words saying so (`core.cpu.oversubscription`). Read, changed and
    written under a lock: two runs recording at once each keep their rows (without it, the
    later write dropped the model the other had just recorded)."""
    from filelock import FileLock

    path = path or store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        return _record(cpu, model, rows, where=where, recommended=recommended, crowded=crowded, path=path)


def _record(
    cpu: CpuInfo,
    model: str,
    rows: list[dict[str, Any]],
    *,
    where: str,
    recommended: str | None,
    crowded: str | None,
    path: Path,
) -> Path:
    store = load_store(path)
    board = store.setdefault(
        board_key(cpu),
        {
            "cpu": {
                "model": cpu.model,
                "arch": cpu.arch,
                "cores": cpu.cores,
                "isa": list(cpu.isa),
                "generation": cpu.generation,
            }
        },
    )
    models = board.setdefault("models", {})
    models[model] = {
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # the order of measurement, also within one second (the file's keys are sorted)
        "sequence": 1 + max((m.get("sequence", 0) for m in models.values()), default=0),
        "where": where,
        "rows": rows,
        "recommended": recommended,
        "crowded": crowded,
    }
    write_json_atomic(path, store)
    return path


def latest(board: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(model, its measurements) most recently measured on `board`."""
    models = board.get("models") or {}
    if not models:
        return None
    return max(models.items(), key=lambda item: (item[1].get("sequence", 0), item[1].get("measured", "")))


def row_label(row: dict[str, Any]) -> str:
    return f"{row['format']} {row['precision']} on {row['runtime']}"


def figures(board: dict[str, Any]) -> str:
    """The board's latest measurements in words: model, when, where, each row's batch-1 speed."""
    found = latest(board)
    if found is None:
        return ""
    model, measured = found
    rows = sorted((r for r in measured.get("rows", []) if r.get("it_per_s_b1")), key=lambda r: -r["it_per_s_b1"])
    listed = "; ".join(
        f"{row_label(r)} {r['it_per_s_b1']:.1f} it/s (p50 {r['p50_ms_b1']:.2f} ms, parity "
        f"{'passed' if r.get('parity_passed') else 'not checked' if r.get('parity_passed') is None else 'FAILED'})"
        for r in rows
    )
    threads = sorted({str(r.get("threads")) for r in rows})
    return f"measured {measured.get('measured', '?')[:10]} ({measured.get('where', '?')}) on {model}, batch 1, threads {'/'.join(threads)}: {listed}"


def runtimes_changed(board: dict[str, Any], installed: dict[str, str]) -> tuple[str, ...]:
    """ "onnxruntime 1.31.0, installed now 1.32.0" for each runtime whose version measured the
    board's latest rows on this machine itself ("local" runs, not a board benched over ssh)
    and differs from `installed` (this machine's now): its kernels, fusions and defaults may
    differ, and the figures with them. Rows kept before versions were recorded say nothing."""
    found = latest(board)
    if found is None or not str(found[1].get("where", "")).startswith("local"):
        return ()
    then = {
        runtime: version
        for row in found[1].get("rows", [])
        if isinstance(row.get("versions"), dict)
        for runtime, version in row["versions"].items()
    }
    return tuple(
        f"{runtime} {version}, installed now {installed[runtime]}"
        for runtime, version in sorted(then.items())
        if installed.get(runtime) not in (None, version)
    )


def timed_crowded(board: dict[str, Any]) -> str:
    """Why the board's latest rows were timed at more threads than could run at once ("" where
    they were not, or were kept before this was recorded): their figures are the throttling's."""
    found = latest(board)
    return str(found[1].get("crowded") or "") if found else ""


def for_model(board: dict[str, Any], model: str) -> dict[str, Any] | None:
    """`board` with `model`'s measurements only (None where it has none): every reading of a
    board (its advice, figures, versions, throttling) then speaks of that model."""
    measured = (board.get("models") or {}).get(model)
    return None if measured is None else {**board, "models": {model: measured}}


def recommended_label(measured: dict[str, Any]) -> str | None:
    """The label of the row one model's measurements recommended (None: they recommended none)."""
    chosen = next((r for r in measured.get("rows", []) if r.get("name") == measured.get("recommended")), None)
    return None if chosen is None else row_label(chosen)


def other_models_advice(board: dict[str, Any], model: str, advice: str) -> str:
    """Where models measured on `board` other than `model` (its latest, advising `advice`) ran
    fastest in another format, which: the fastest format depends on the model as well as the CPU
    (on an AVX2-only EPYC ONNX fp32 was the fastest row for a 3 MB ViT at batch 1 and int8 1.7×
    fp32 for ViT-B), so one model's advice must not read as every model's. "" where they agree."""
    others = [
        f"{name}: {label} ({str(earlier.get('measured', '?'))[:10]})"
        for name, earlier in sorted((board.get("models") or {}).items())
        if name != model and (label := recommended_label(earlier)) is not None and label != advice
    ]
    if not others:
        return ""
    return (
        f"other models measured here ran fastest otherwise ({'; '.join(others)}): "
        "`vitedge targets --model NAME` gives one model's advice"
    )


def recommendation(board: dict[str, Any]) -> tuple[str, str, tuple[str, ...]] | None:
    """(what to export, why, warnings) from the board's latest measurements: the row the bench
    chose (workflows.report.recommended: the fastest at batch 1 that passed parity), with the
    figures it was chosen from; rows outside their parity bounds are named. None when that
    bench chose nothing (no row had a parity check, or none passed)."""
    found = latest(board)
    if found is None:
        return None
    model, measured = found
    advice = recommended_label(measured)
    if advice is None:
        return None
    failed = [row_label(r) for r in measured.get("rows", []) if r.get("parity_passed") is False]
    warnings = (f"failed parity here, not recommended: {', '.join(failed)}",) if failed else ()
    if others := other_models_advice(board, model, advice):
        warnings += (others,)
    return advice, figures(board), warnings


def board_for(cpu: CpuInfo, store: dict[str, Any]) -> dict[str, Any] | None:
    return store.get(board_key(cpu))
