"""What a new user meets in the first hour (issue 20), checked where the user meets it: the
command line. Each test names the item it guards."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.cli import cli


def test_parity_bounds_are_shown_in_the_unit_of_their_value(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """Item 3: top-1 agreement reads "97.90%" beside a bound of ">= 97.00%", not ">= 0.97"."""
    args = ["export", str(tiny_checkpoint), "--to", "onnx", "--precision", "int8-dynamic", "--out", str(tmp_path / "a")]
    _, stdout, stderr = cli(capsys, monkeypatch, *args, "--verify-samples", "40", "--threads", "1")
    row = next(line for line in stdout.splitlines() if "top1_agreement" in line)
    value, bound = re.findall(r"\d+\.\d+%", row)
    assert bound == "97.00%" and ">= 97.00%" in row, row
    cosine = next(line for line in stdout.splitlines() if "cosine_mean" in line)
    assert ">= 0.995000" in cosine and "%" not in cosine


def test_parity_failures_say_value_and_bound_in_one_unit():
    """Item 3, the verdict line: "top1_agreement 50.00% (needs >= 97.00%)", not "0.5 (needs >= 0.97)"."""
    import numpy as np

    from vitedge.workflows.parity import compare_logits

    reference = np.eye(10, dtype=np.float32)[np.arange(20) % 10]
    candidate = reference.copy()
    candidate[:10] = np.roll(candidate[:10], 1, axis=1)  # half the images change their top-1
    report = compare_logits(reference, candidate, precision="int8", tolerances={"top1_agreement": 0.97})
    assert "top1_agreement 50.00% (needs >= 97.00%)" in report.failures
    cosine = next(f for f in report.failures if f.startswith("cosine_mean"))
    assert re.fullmatch(r"cosine_mean \d\.\d{6} \(needs >= 0\.995000\)", cosine), cosine


HELP_PANELS = [
    "Options",
    "Main job",
    "Export, verify and measure",
    "int8",
    "Compression",
    "Edge and targets",
    "Training",
]


def test_help_groups_commands_into_panels_with_run_first(capsys, monkeypatch):
    """Item 6: `vitedge --help` shows panels in the order of the job, `run` the first command."""
    code, stdout, _ = cli(capsys, monkeypatch, "--help")
    panels = re.findall(r"─ ([A-Za-z][\w ,]*?) ─", stdout)
    assert code == 0
    assert panels == HELP_PANELS
    commands = re.findall(r"^│ ([a-z][a-z0-9-]+) ", stdout, flags=re.M)
    from vitedge.cli import app

    registered = {command.name for command in app.registered_commands}
    assert commands[0] == "run" and commands[-1] == "train" and sorted(commands) == sorted(registered)


def test_the_command_line_starts_without_the_runtimes():
    """`vitedge --help`, a typo in an option, a taken --out: what Typer answers before any command
    runs costs the CLI's start, so `vitedge.cli` and every command module import no torch, ONNX
    Runtime or OpenVINO (each command imports them when it runs). Before, one command module's
    constant pulled in the board runner and with it torch: 2.3 s of a 3 s `vitedge --help` on an
    EPYC, far more on a small board."""
    import subprocess
    import sys

    probe = (
        "import sys, vitedge.cli; "
        "print(' '.join(sorted({'torch', 'onnxruntime', 'openvino', 'timm', 'onnx'} & set(sys.modules))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing the CLI imported {done.stdout.strip()}"


def test_help_keeps_its_order_when_a_command_module_was_imported_first():
    """A script (or a test) that imports one command module before `vitedge.cli` registers that
    module's commands last; `--help` still lists the panels in the job's order (before: int8's
    panel moved to the end)."""
    import subprocess
    import sys

    probe = "import sys, vitedge.commands.int8; from vitedge.cli import run; sys.argv = ['vitedge', '--help']; run()"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stderr
    assert re.findall(r"─ ([A-Za-z][\w ,]*?) ─", done.stdout) == HELP_PANELS


def test_libraries_are_quiet_unless_verbose(tmp_path, tiny_checkpoint):
    """Item 5: no torch CUDA_HOME warning and no unlabelled NNCF progress bars between
    vitedge's own lines; `--verbose` shows them. A fresh process, as a user's shell starts."""
    import os
    import subprocess
    import sys

    def export(*flags: str) -> str:
        args = [sys.executable, "-m", "vitedge", *flags, "export", str(tiny_checkpoint), "--to", "openvino"]
        args += ["--precision", "int8", "--calib", "cifar10:train", "--calib-samples", "16"]
        args += ["--verify-samples", "16", "--threads", "1", "--out", str(tmp_path / "ov"), "--force", "--json"]
        done = subprocess.run(args, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
        assert done.returncode in (0, 1), done.stderr  # 1: a random model's int8 verdict; both are runs
        return done.stderr

    quiet = export()
    assert "CUDA_HOME" not in quiet and "Statistics collection" not in quiet, quiet
    assert "Statistics collection" in export("--verbose")


def test_bench_reports_time_to_first_inference(onnx_artifact, capsys, monkeypatch):
    """Item 7: `vitedge bench` shows load + first call, which warmed-up timings leave out."""
    import json

    args = ["bench", str(onnx_artifact), "--samples", "16", "--batch", "1", "--runs", "5", "--threads", "1"]
    code, stdout, stderr = cli(capsys, monkeypatch, *args, "--json")
    assert code == 0, stderr
    (row,) = json.loads(stdout)
    first, steady = row["measurement"]["first_inference_ms"], row["measurement"]["timings"][0]["p50_ms"]
    assert first > steady > 0  # opening the session and its first call cost more than a warm call
    code, stdout, _ = cli(capsys, monkeypatch, *args)
    assert code == 0 and "load+1st ms" in stdout


def test_first_inference_is_one_open_and_one_call(tiny_vit, tmp_path):
    """The figure spans exactly the open and the first call: with a clock that ticks 5 ms a read,
    it is the 5 ms between the two reads around them, whatever the warmed-up timings do."""
    import numpy as np

    from vitedge.models import save_checkpoint
    from vitedge.targets.measure import MeasureRequest, RunnerSpec, measure

    path = save_checkpoint(tiny_vit, tmp_path / "m.safetensors")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), dtype=np.float32))
    ticks = iter(range(10_000))
    spec = RunnerSpec("tiny", "torch", str(path), precision="fp32", threads=1)
    measured = measure(
        MeasureRequest(spec, str(tmp_path / "x.npy"), None, (1,), 3, min_seconds=0.0),
        clock=lambda: 0.005 * next(ticks),
    )
    assert measured.first_inference_ms == pytest.approx(5.0)


def test_a_model_name_without_pretrained_says_it_has_random_weights(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """Item 10 (met reading the README): `export vit_tiny_patch16_224` quietly exported random
    weights, and export had no --pretrained. Now it says so in one line, and --pretrained asks
    for the trained weights (offline here: one clear error, exit 2, nothing written)."""
    from vitedge.models import has_random_weights

    assert has_random_weights("vit_tiny_patch16_224", pretrained=False)
    assert has_random_weights("transformers:google/vit-base-patch16-224", pretrained=False)
    assert not has_random_weights("vit_tiny_patch16_224", pretrained=True)
    assert not has_random_weights("vitedge-cifar10", pretrained=False)
    assert not has_random_weights(str(tiny_checkpoint), pretrained=False)
    assert not has_random_weights("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", pretrained=False)

    out = tmp_path / "tiny-random"
    args = ["export", "vit_tiny_patch16_224", "--to", "onnx", "--out", str(out), "--no-verify"]
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 0 and "vit_tiny_patch16_224 has random weights" in stderr and "--pretrained" in stderr
    code, _, stderr = cli(capsys, monkeypatch, *args[:-2], str(tmp_path / "pre"), "--no-verify", "--pretrained")
    if code == 0:  # a machine with timm's weights in its cache or a network: no warning then
        assert "random weights" not in stderr
    else:
        assert code == 2 and stderr.startswith("error: ") and not (tmp_path / "pre").exists(), stderr
    code, _, stderr = cli(
        capsys, monkeypatch, "export", str(tiny_checkpoint), "--to", "onnx", "--out", str(tmp_path / "c")
    )
    assert "random weights" not in stderr


def test_bench_takes_a_benched_pytorch_model_as_the_yardstick(onnx_artifact, tiny_checkpoint, capsys, monkeypatch):
    """Met on the README walk-through: `bench ARTIFACT MODEL` printed "—" for "× PyTorch" although
    a PyTorch model was benched beside it. The first PyTorch fp32 item is now the reference."""
    import json

    args = ["bench", str(onnx_artifact), str(tiny_checkpoint), "--samples", "16", "--batch", "1", "--runs", "3"]
    code, stdout, stderr = cli(capsys, monkeypatch, *args, "--threads", "1", "--json")
    assert code == 0, stderr
    rows = json.loads(stdout)
    assert [row["baseline"] for row in rows] == [False, True]
    code, stdout, _ = cli(capsys, monkeypatch, *args, "--threads", "1")
    onnx_line = next(line for line in stdout.splitlines() if line.startswith("│"))  # rows in the order benched
    assert re.search(r"\d+\.\d\d×.*\d+\.\d\d×", onnx_line), onnx_line  # × fastest fp32 and × PyTorch both shown


def test_calibrate_sweep_prints_a_table_not_raw_markdown(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """Met on the README walk-through: the sweep printed its markdown source (`| … |`, `**←**`)
    to the terminal; sweep.md keeps the markdown, the terminal gets a rendered table."""
    args = ["calibrate-sweep", str(tiny_checkpoint), "--to", "onnx", "--counts", "8", "--methods", "minmax"]
    code, stdout, stderr = cli(capsys, monkeypatch, *args, "--samples", "32", "--out", str(tmp_path / "s"))
    assert code == 0, stderr
    assert "**←**" not in stdout and "|---|" not in stdout and "recommended for onnx: 8 images" in stdout
    assert "minmax" in stdout and "**←**" in (tmp_path / "s" / "sweep.md").read_text()
    # an earlier report is replaced only with --force, as every output folder is, and whole
    (tmp_path / "s" / "sweep.md").write_text("the first run's, annotated")
    code, _, stderr = cli(capsys, monkeypatch, *args, "--samples", "32", "--out", str(tmp_path / "s"))
    assert code == 2 and "already exists" in stderr
    assert (tmp_path / "s" / "sweep.md").read_text() == "the first run's, annotated"
    code, _, stderr = cli(capsys, monkeypatch, *args, "--samples", "16", "--out", str(tmp_path / "s"), "--force")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sweep.json", "sweep.md", "sweep.png"]
    assert "**←**" in (tmp_path / "s" / "sweep.md").read_text()
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["evaluation"]["count"] == 16


def test_a_quoted_home_path_names_the_home_folder_for_every_command(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """ "~/art" in quotes (a script, a recipe tool, a Windows habit) reaches vitedge unexpanded.
    Models and images already read it as the home folder; now every path option does too (before:
    `export --out "~/art"` wrote a folder named "~" in the working folder, the one a user then
    removes with `rm -rf ~`; `verify "~/art"` said it was no artifact; `bench "~/art"` called it
    "not a PyTorch model")."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    code, _, stderr = cli(capsys, monkeypatch, "export", str(tiny_checkpoint), "--to", "onnx", "--out", "~/art")
    assert code == 0, stderr
    assert (home / "art" / "manifest.json").is_file()
    code, _, stderr = cli(capsys, monkeypatch, "verify", "~/art", "--samples", "8")
    assert code == 0, stderr
    args = ["bench", "~/art", "--samples", "8", "--batch", "1", "--runs", "1", "--threads", "1", "--json"]
    code, stdout, stderr = cli(capsys, monkeypatch, *args)
    assert code == 0, stderr
    assert [row["measurement"]["name"] for row in json.loads(stdout)] == ["art"]
    code, _, stderr = cli(capsys, monkeypatch, "bundle", "~/art", "--out", "~/bundle")
    assert code == 0, stderr
    assert (home / "bundle" / "run_bundle.py").is_file()
    args = ["compress", str(tiny_checkpoint), "--step", "fp16", "--out", "~/small.safetensors"]
    code, _, stderr = cli(capsys, monkeypatch, *args)
    assert code == 0, stderr
    assert (home / "small.safetensors").is_file()
    assert list(work.iterdir()) == []
