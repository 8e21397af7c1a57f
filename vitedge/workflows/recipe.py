"""Recipes: a whole run (model, compression steps, artifacts, data, bench settings) as one TOML
file that can be committed and rerun. Unknown tables or keys are errors that name the line and
the valid choices, because a typo that silently falls back to a default wastes a whole run."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..core.cpu import CpuInfo
from ..core.errors import VitedgeError
from ..core.precision import bf16_missing
from ..targets.base import CPU_TARGETS

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
ROW_KINDS = {
    "torch:fp32": "PyTorch fp32",
    "torch:int8-dynamic": "PyTorch dynamic int8",
    "torch:fp16": "PyTorch fp16",
    "torch:bf16": "PyTorch bf16 (autocast)",
    "onnx:fp32": "ONNX fp32",
    "onnx:int8-dynamic": "ONNX int8 dynamic",
    "onnx:int8-static": "ONNX int8 static",
    "openvino:fp32": "OpenVINO fp32",
    "openvino:fp16": "OpenVINO fp16",
    "openvino:bf16": "OpenVINO bf16",
    "openvino:int8": "OpenVINO int8",
    "openvino:int8-bf16": "OpenVINO int8, bf16 float parts",
}
DEFAULT_ROWS = tuple(
    k for k in ROW_KINDS if k not in ("torch:fp16", "torch:bf16", "openvino:bf16", "openvino:int8-bf16")
)  # what every CPU runs; bf16 rows need a CPU that computes bf16 natively
# Added to the defaults on target cpu where the CPU computes bf16 natively: there int8-bf16 can
# be the fastest row that passes parity (docs/precision.md); the other bf16 rows stay opt-in.
NATIVE_BF16_ROWS = ("openvino:int8-bf16",)


@dataclass(frozen=True)
class Recipe:
    model: str = "vitedge-cifar10"
    pretrained: bool = False
    arch: str | None = None
    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    rows: tuple[str, ...] | None = None  # None: not listed, rows_for picks the defaults for this machine
    data: str = "cifar10"
    samples: int | None = 1000  # None: every image
    calibration: str = "cifar10:train"
    calibration_samples: int = 256
    calibration_method: str = "minmax"
    seed: int = 0
    batches: tuple[int, ...] = (1, 8)
    threads: int = 2
    runs: int = 20
    target: str = "cpu"
    name: str | None = None  # None: `title` says the model and data this run actually measured
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The report's title: the recipe's `[run] name`, else "MODEL on DATA", so a run whose
        model or data came from a recipe or `--model`/`--data` is not headed by another's."""
        return self.name or f"{self.model} on {self.data}"


@dataclass(frozen=True)
class ChosenRows:
    """The row kinds a run measures, in order, and where they came from: results.json and
    report.md say why a run on one machine has a row that the same recipe lacks on another."""

    kinds: tuple[str, ...]
    why: str
    added: tuple[str, ...] = ()  # beyond DEFAULT_ROWS, for this machine's CPU


def default_rows(target: str, cpu: CpuInfo | None = None) -> ChosenRows:
    """The rows of a recipe that lists none. On target cpu, where `cpu` (this machine's by
    default) computes bf16 natively and OpenVINO's CPU plugin offers it there, also
    NATIVE_BF16_ROWS: a run recommends only rows it measured, so int8-bf16 must be timed to be
    chosen. Elsewhere it would be refused (pipeline.check_rows) or run on another device, so it
    is left to a recipe to ask for."""
    if target not in CPU_TARGETS:
        return ChosenRows(DEFAULT_ROWS, f"the defaults for target {target}")
    if cpu is None:
        from ..core.cpu import probe_cpu

        cpu = probe_cpu()
    missing = bf16_missing("openvino", cpu)
    if missing is not None:
        return ChosenRows(DEFAULT_ROWS, f"the defaults: {missing}")
    why = f"the defaults, with {', '.join(NATIVE_BF16_ROWS)}: this CPU computes bf16 natively ({', '.join(cpu.bf16)})"
    return ChosenRows(DEFAULT_ROWS + NATIVE_BF16_ROWS, why, NATIVE_BF16_ROWS)


def rows_for(recipe: Recipe) -> ChosenRows:
    """The rows a run of `recipe` measures: exactly its [export] rows when it lists them, else
    the defaults for its target on this machine. Every reader of a recipe's rows goes through here."""
    if recipe.rows is not None:
        return ChosenRows(recipe.rows, "the recipe's [export] rows")
    return default_rows(recipe.target)


SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "model": {"spec": str, "pretrained": bool, "arch": str},
    "export": {"rows": list},
    "data": {"source": str, "samples": (int, str)},
    "calibration": {"source": str, "samples": int, "method": str, "seed": int},
    "bench": {"batches": list, "threads": int, "runs": int, "target": str},
    "run": {"name": str},
}


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(needle) and (len(stripped) == len(needle) or stripped[len(needle)] in " =]."):
            return number
    return None


def _where(source: str, text: str, needle: str) -> str:
    """`file:line` for the first line that starts with `needle`, or just `file`."""
    line = _line_of(text, needle)
    return f"{source}:{line}" if line else source


def _toml_error(exc: tomllib.TOMLDecodeError, source: str) -> VitedgeError:
    """tomllib puts the position in its message ("... (at line 3, column 7)") and, before
    Python 3.14, nowhere else; lift the line to the front like every other recipe error."""
    reason = str(exc)
    found = re.search(r"\(at line (\d+), column \d+\)", reason)
    where = f"{source}:{found.group(1)}" if found else source
    return VitedgeError(f"{where}: not valid TOML: {reason}", "check the quoting and brackets on that line")


def _unknown(kind: str, name: str, valid: list[str], source: str, text: str, needle: str) -> VitedgeError:
    where = _where(source, text, needle)
    close = difflib.get_close_matches(name, valid, n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    return VitedgeError(f"{where}: unknown {kind} {name!r}", f"{suggestion}valid: {', '.join(sorted(valid))}")


Expected = type | tuple[type, ...]
Schema = dict[str, dict[str, Expected]]


def read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(exc, source) from None


def check_keys(body: dict[str, Any], allowed: dict[str, Expected], where: str, source: str, text: str) -> None:
    """Every key known and of its type; `where` names the table in the message ("[bench]")."""
    for key, value in body.items():
        if key not in allowed:
            raise _unknown(f"key in {where}", key, sorted(allowed), source, text, key)
        expected = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        # bool is an int subclass: `samples = true` would pass as 1 unless refused by name
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise VitedgeError(
                f"{source}:{_line_of(text, key) or '?'}: {where} {key} has the wrong type ({type(value).__name__})",
                f"expected {' or '.join(t.__name__ for t in expected)}",
            )


def check_tables(data: dict[str, Any], schema: Schema, arrays: frozenset[str], source: str, text: str) -> None:
    """The one recipe validator: tables from `schema` with known, typed keys; the array-of-tables
    names in `arrays` are left to the caller, which knows their entries."""
    for table, body in data.items():
        if table in arrays:
            continue
        if table not in schema:
            needle = f"[{table}" if isinstance(body, dict) else table
            raise _unknown("table", table, sorted(set(schema) | arrays), source, text, needle)
        if not isinstance(body, dict):
            raise VitedgeError(
                f"{_where(source, text, table)}: [{table}] must be a table",
                f"write it as [{table}] followed by key = value lines",
            )
        check_keys(body, schema[table], f"[{table}]", source, text)


def require_at_least(least: int, entries: Iterable[tuple[str, str, int]], source: str, text: str) -> None:
    """Numbers a recipe gives (table, key, value) that must be `least` or more: a thread count or a
    number of runs, images or epochs below 1, or a seed below 0, fails hours into a run, or runs
    as something else."""
    for table, key, value in entries:
        if value < least:
            raise VitedgeError(
                f"{source}:{_line_of(text, key) or '?'}: [{table}] {key} must be at least {least}, got {value}",
                f"use a whole number of at least {least}",
            )


def count_or_all(value: int | str, key: str, source: str, text: str) -> int | None:
    """A count of images: a positive number, or "all" (None)."""
    if value == "all":
        return None
    if isinstance(value, str) or value < 1:
        raise VitedgeError(
            f'{source}:{_line_of(text, key) or "?"}: {key} must be a positive number or "all"',
            f'e.g. {key} = 1000 or {key} = "all"',
        )
    return int(value)


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    data = read_toml(text, source)
    check_tables(data, SCHEMA, frozenset({"compress"}), source, text)
    model, export, data_table = data.get("model", {}), data.get("export", {}), data.get("data", {})
    calibration, bench = data.get("calibration", {}), data.get("bench", {})
    rows = tuple(export["rows"]) if "rows" in export else None
    for row in rows or ():
        if not isinstance(row, str) or row not in ROW_KINDS:
            raise _unknown("export row", str(row), list(ROW_KINDS), source, text, "rows")
    samples = data_table.get("samples", 1000)
    if isinstance(samples, str) and samples != "all":
        raise VitedgeError(
            f'{source}:{_line_of(text, "samples") or "?"}: [data] samples must be a number or "all"',
            'e.g. samples = 1000 or samples = "all"',
        )
    require_at_least(0, (("calibration", "seed", calibration.get("seed", 0)),), source, text)
    require_at_least(
        1,
        (
            ("data", "samples", samples if samples != "all" else 1),
            ("calibration", "samples", calibration.get("samples", 1)),
            ("bench", "threads", bench.get("threads", 1)),
            ("bench", "runs", bench.get("runs", 1)),
        ),
        source,
        text,
    )
    batches = bench.get("batches", [1, 8])
    if not batches or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise VitedgeError(
            f"{source}:{_line_of(text, 'batches') or '?'}: [bench] batches must be a list of positive integers, got {batches!r}",
            "e.g. batches = [1, 8]",
        )
    if not isinstance(data.get("compress", []), list):
        raise VitedgeError(
            f"{source}:{_line_of(text, 'compress') or '?'}: compress must be an array of tables",
            'write each step as [[compress]] followed by step = "NAME" and its options',
        )
    steps = []
    for index, entry in enumerate(data.get("compress", [])):
        if not isinstance(entry, dict) or "step" not in entry:
            raise VitedgeError(
                f"{_where(source, text, '[[compress]]')}: [[compress]] entry {index + 1} has no 'step'",
                'write step = "prune-heads" and its options, e.g. ratio = 0.25',
            )
        options = {k: v for k, v in entry.items() if k != "step"}
        steps.append((str(entry["step"]), options))
    _check_steps(steps, source, text)
    return Recipe(
        model=model.get("spec", "vitedge-cifar10"),
        pretrained=model.get("pretrained", False),
        arch=model.get("arch"),
        steps=tuple(steps),
        rows=rows,
        data=data_table.get("source", "cifar10"),
        samples=None if samples == "all" else int(samples),
        calibration=calibration.get("source", "cifar10:train"),
        calibration_samples=calibration.get("samples", 256),
        calibration_method=calibration.get("method", "minmax"),
        seed=calibration.get("seed", 0),
        batches=tuple(batches),
        threads=bench.get("threads", 2),
        runs=bench.get("runs", 20),
        target=bench.get("target", "cpu"),
        name=data.get("run", {}).get("name"),
    )


def _check_steps(steps: list[tuple[str, dict[str, Any]]], source: str, text: str) -> None:
    if not steps:
        return
    from ..compress.registry import STEPS

    for name, options in steps:
        if name not in STEPS:
            raise _unknown("compress step", name, list(STEPS), source, text, "step")
        valid = STEPS[name].options
        for key in options:
            if key not in valid:
                raise _unknown(f"option of step {name!r}", key, list(valid), source, text, key)


def load_recipe(path: Path | None) -> Recipe:
    """A recipe file; none means the defaults, which `vitedge/recipes/default.toml` spells out."""
    if path is None:
        return Recipe()
    path = Path(path)
    text = read_recipe_text(path, "recipe", f"pass a TOML file; examples are in {RECIPES_DIR}")
    recipe = parse_recipe(text, str(path))
    model, data = readers_beside(path, text)
    return dataclasses.replace(
        recipe,
        model=model(recipe.model, "spec"),
        data=data(recipe.data, "source"),
        calibration=data(recipe.calibration, "source"),
        steps=teachers_beside(recipe.steps, model),
    )


def readers_beside(recipe: Path, text: str) -> tuple[Callable[[str, str], str], Callable[[str, str], str]]:
    """(model, data): a recipe's model spec or image source, given with its key, as
    `beside_recipe` reads it; vitedge's own names are names wherever they stand."""
    from ..calibration.sources import CIFAR10_SPECS
    from ..models import EMBEDDED

    return (
        lambda value, key: beside_recipe(recipe, text, value, key, EMBEDDED),
        lambda value, key: beside_recipe(recipe, text, value, key, CIFAR10_SPECS),
    )


def beside_recipe(recipe: Path, text: str, value: str, key: str, names: Collection[str]) -> str:
    """A relative path in a recipe is read from the recipe's own folder, as one kept beside its
    images and checkpoints expects whichever folder the command starts in. A value found only
    from the working folder, or a name (`names`, a timm name), is kept as written; found from
    both and not the same file, it is refused: reading either would be a guess."""
    path = Path(value).expanduser()
    here = recipe.parent / path
    if not value or value in names or path.is_absolute() or not here.exists():
        return value
    if path.exists() and not path.samefile(here):
        raise VitedgeError(
            f"{recipe}:{_line_of(text, value) or _line_of(text, key) or '?'}: {key} = {value!r} names both "
            f"{here} (beside the recipe) and {path.resolve()} (the working folder)",
            "write the one meant as an absolute path",
        )
    return str(here)


def teachers_beside(
    steps: Iterable[tuple[str, dict[str, Any]]], model: Callable[[str, str], str]
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The steps, a distill step's `teacher` path read from the recipe's folder like every path."""
    return tuple(
        (name, {**options, "teacher": model(str(options["teacher"]), "teacher")})
        if "teacher" in options
        else (name, options)
        for name, options in steps
    )


def read_recipe_text(path: Path, kind: str, hint: str) -> str:
    """A recipe file's text. TOML is UTF-8: a byte-order mark (Windows editors write one) is
    dropped; a file in another encoding (Notepad's "Unicode" is UTF-16), a folder or a missing
    path is one line naming it."""
    if path.is_dir():
        raise VitedgeError(f"{kind} {path} is a folder, not a TOML file", hint)
    if not path.is_file():
        raise VitedgeError(f"{kind} {path} does not exist", hint)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VitedgeError(
            f"{kind} {path} is not UTF-8 text, as TOML must be (byte {exc.start} is {exc.object[exc.start]:#04x})",
            "save it as UTF-8",
        ) from None
