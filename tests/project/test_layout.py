"""The shape of the project, checked as CI checks it: ruff clean, and the wheel holds one
top-level package, `vitedge`, with its recipes, weights and board runner; installed outside the
checkout (no editable path), its layers only point down (import-linter, docs/design.md) and it
runs: `vitedge run --help`, `vitedge study --quick --help` and one real export with its check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: run the README's set-up (pip install -e '.[dev]')")
    return found


def test_ruff_is_clean() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, a folder it is installed into): built from a copy of the tracked files (so
    nothing untracked slips in and no build/ lands in the checkout), installed with no
    dependencies (they are this environment's) and nothing editable."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work), str(source)],
        check=True,
        capture_output=True,
        cwd=work,
    )
    wheel = next(work.glob("vitedge-*.whl"))
    site = work / "site"
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        cwd=work,
    )
    return wheel, site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}


def test_the_wheel_holds_only_vitedge_with_its_recipes(installed) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"vitedge", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for needed in (
        "vitedge/recipes/study.toml",
        "vitedge/recipes/study-quick.toml",
        "vitedge/recipes/default.toml",
        "vitedge/weights/vitedge-cifar10.safetensors",
        "vitedge/targets/bundle/run_bundle.py",
        "vitedge/exporter/export.py",
    ):
        assert needed in names, needed


def test_installed_layers_only_point_down(installed, tmp_path: Path) -> None:
    _, site = installed
    done = subprocess.run(
        [_tool("lint-imports"), str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=_env(site),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-3000:]


def test_the_installed_wheel_runs_a_real_export(installed, tmp_path: Path) -> None:
    _, site = installed

    def vitedge(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vitedge", *args],
            cwd=tmp_path,
            env=_env(site),
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import vitedge.targets.measure as m; print(m.__file__)"],
        cwd=tmp_path,
        env=_env(site),
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # not the checkout
    assert vitedge("run", "--help").returncode == 0
    study = vitedge("study", "--quick", "--help")
    assert study.returncode == 0 and "--quick" in study.stdout
    export = vitedge(
        "export",
        "vitedge-cifar10",
        "--to",
        "onnx",
        "--precision",
        "fp32",
        "--out",
        "art",
        "--verify-samples",
        "64",
        "--json",
    )
    assert export.returncode == 0, export.stderr[-2000:]
    report = json.loads(export.stdout)
    assert (
        report["parity"]["passed"]
        and report["parity"]["max_abs"] <= 1e-4
        and (tmp_path / "art" / "manifest.json").is_file()
    )
