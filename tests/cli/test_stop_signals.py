"""`kill`, `timeout`, a job scheduler (SIGTERM) or a closed ssh session (SIGHUP) stop a command
as Ctrl-C does: its half-written output folder is deleted, a measuring process it started is
stopped with it, and it ends with one line and exit 128 + the signal's number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vitedge.cli import _stop_cleanly_on_signals

# `vitedge export` whose staging step parks (after the artifact's files are written, before the
# folder is moved into place) once it has touched the file named by STOP_HERE.
PARKED_EXPORT = """
import sys, time
from pathlib import Path
import vitedge.core.io as io

STOP_HERE = Path(sys.argv[1])

def parked(path, umask=None):
    STOP_HERE.touch()
    time.sleep(120)

io.apply_umask_mode = parked
sys.argv = ["vitedge", *sys.argv[2:]]
from vitedge.cli import run
run()
"""


def _as_from_a_terminal() -> None:
    """The child starts with SIGTERM and SIGHUP at their defaults, as from a login shell: under
    `nohup` (a CI job) the test runner's ignored SIGHUP would be inherited, and kept by design."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _wait_for(condition, timeout_s: float = 120.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the command to get there"
        time.sleep(0.1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_export_leaves_no_output_and_no_staging_folder(tmp_path: Path, stop: signal.Signals) -> None:
    parked = tmp_path / "parked"
    out = tmp_path / "artifact"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PARKED_EXPORT,
            str(parked),
            "export",
            "vitedge-cifar10",
            "--to",
            "onnx",
            "--out",
            str(out),
            "--no-verify",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        _wait_for(lambda: parked.exists() or process.poll() is not None)
        assert process.poll() is None, process.communicate()
        assert [p.name for p in tmp_path.glob(".artifact.*.partial")], (
            "the export was parked before its staging folder existed"
        )
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop, stderr
    assert stderr.strip().splitlines()[-1] == f"stopped by {stop.name}"
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parked"]


def test_a_stopped_bench_stops_its_measuring_process(tmp_path: Path) -> None:
    """The row runs in a child process; left running, it would take the CPU from whatever the
    user measures next."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vitedge",
            "bench",
            "vitedge-cifar10",
            "--runs",
            "100000000",
            "--samples",
            "2",
            "--threads",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        parent = psutil.Process(process.pid)

        def measuring() -> list[psutil.Process]:
            return [c for c in parent.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]

        _wait_for(lambda: bool(measuring()) or process.poll() is not None)
        children = measuring()
        assert children and process.poll() is None, process.communicate()
        time.sleep(1.0)  # into the timing loop
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        ended_after_s = time.monotonic() - signalled
        _, alive = psutil.wait_procs(children, timeout=10)
    finally:
        process.kill()
    leftover = [child.pid for child in alive]
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert leftover == [], "the measuring process kept running after its command was stopped"
    # stopped, not waited for: the multiprocessing join would give the child 30 s more
    assert ended_after_s < 20, f"the command took {ended_after_s:.0f} s to stop"
    assert "Traceback" not in stderr


def test_nohup_keeps_sighup_ignored_and_an_in_process_caller_gets_its_handlers_back() -> None:
    before_term = signal.getsignal(signal.SIGTERM)
    before_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        previous = _stop_cleanly_on_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        if before_term is signal.SIG_DFL:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            assert previous == {signal.SIGTERM: signal.SIG_DFL}
        for number, handler in previous.items():
            signal.signal(number, handler)
        assert signal.getsignal(signal.SIGTERM) == before_term
    finally:
        signal.signal(signal.SIGHUP, before_hup)
