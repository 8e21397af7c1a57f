from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vitedge.core.cpu import fastest_cpus, read_core_speeds
from vitedge.models import save_checkpoint
from vitedge.targets.base import RunnerInfo
from vitedge.targets.measure import (
    MeasureRequest,
    RunnerSpec,
    measure,
    measure_isolated,
    time_runner,
    top_k_accuracy,
)
from vitedge.targets.torch import open_torch


class FakeClock:
    """Each call advances time; a runner call takes `step` seconds of fake time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SleepyRunner:
    info = RunnerInfo("fake", "cpu", "fp32", 1)

    def __init__(self, clock: FakeClock, durations: list[float]) -> None:
        self.clock, self.durations, self.calls = clock, durations, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.clock.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1
        return np.zeros((len(batch), 10), np.float32)


def test_timing_on_a_fake_clock() -> None:
    clock = FakeClock()
    # 5 warm-up calls, then 20 timed calls: 18 × 10 ms and two slow 50 ms outliers
    durations = [0.010] * 5 + [0.010] * 18 + [0.050, 0.050]
    runner = SleepyRunner(clock, durations)
    timing = time_runner(runner, np.zeros((4, 3, 8, 8), np.float32), warmup=5, runs=20, min_seconds=0.0, clock=clock)
    assert runner.calls == 25 and timing.runs == 20
    assert timing.median_s == pytest.approx(0.010)
    assert timing.it_per_s == pytest.approx(100.0)
    assert timing.images_per_s == pytest.approx(400.0)
    assert timing.p50_ms == pytest.approx(10.0)
    assert timing.p99_ms == pytest.approx(50.0)
    # numpy's linear percentile of the 20 sorted calls: rank 0.9 × 19 = 17.1, a tenth of the
    # way from the last 10 ms call to the first 50 ms one
    assert timing.p90_ms == pytest.approx(14.0)


def test_slow_calls_warm_up_twice_not_five_times() -> None:
    clock = FakeClock()
    runner = SleepyRunner(clock, [3.0])  # a ViT-B batch of 8 on 2 cores
    timing = time_runner(runner, np.zeros((8, 3, 8, 8), np.float32), warmup=5, runs=4, min_seconds=0.0, clock=clock)
    assert runner.calls == 2 + 4 and timing.runs == 4


def test_timing_runs_at_least_min_seconds() -> None:
    clock = FakeClock()
    runner = SleepyRunner(clock, [0.1])
    timing = time_runner(runner, np.zeros((1, 3, 8, 8), np.float32), warmup=0, runs=3, min_seconds=2.0, clock=clock)
    assert timing.runs == 20  # 3 runs would take 0.3 s; it keeps going to 2 s


def test_top_k_accuracy() -> None:
    logits = np.array([[0.0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, -1, 9, 0, 0, 1]], np.float32)
    labels = np.array([5, 4, 1])
    result = top_k_accuracy(logits, labels)
    assert result.top1 == pytest.approx(100 / 3)
    assert result.top5 == pytest.approx(200 / 3)  # label 1 of row 3 ranks sixth
    assert result.samples == 3


def test_measure_a_torch_checkpoint_in_a_child_process(tiny_vit, cifar_batch, tmp_path: Path) -> None:
    inputs, labels = cifar_batch
    np.save(tmp_path / "x.npy", inputs[:32])
    np.save(tmp_path / "y.npy", labels[:32])
    path = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    request = MeasureRequest(
        RunnerSpec("tiny", "torch", str(path), threads=1),
        str(tmp_path / "x.npy"),
        str(tmp_path / "y.npy"),
        (1, 4),
        runs=5,
        min_seconds=0.0,
        logits_path=str(tmp_path / "logits.npy"),
    )
    isolated = measure_isolated(request)
    here = measure(request)
    expected = open_torch(tiny_vit.module)(inputs[:32])
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)
    assert isolated.accuracy == here.accuracy
    assert isolated.accuracy.top1 == pytest.approx(100.0 * float((expected.argmax(1) == labels[:32]).mean()))
    assert [t.batch for t in isolated.timings] == [1, 4]
    assert all(t.runs >= 5 and t.it_per_s > 0 for t in isolated.timings)
    assert isolated.size_mb == pytest.approx(
        sum(p.numel() * 4 for p in tiny_vit.module.state_dict().values()) / 1e6, rel=0.1
    )
    assert isolated.peak_rss_mb > 50
    assert isolated.machine["cores"] >= 1 and "torch" in isolated.versions
    # the child was kept on this machine's fastest CPUs (core.cpu.pin_to_fastest), or, where its
    # CPUs are alike or unrated, left on all of them: either way the record says which
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    _, ratings = read_core_speeds(allowed)
    expected = fastest_cpus(ratings, 1) if ratings else tuple(allowed)
    if len(expected) == len(allowed):
        assert "timed_on" in isolated.machine and isolated.machine["timed_on"] is None
    else:
        assert isolated.machine["timed_on"]["cpus"] == list(expected)


def test_more_threads_than_usable_cpus_is_said_once_beside_the_figures(tmp_path: Path) -> None:
    """A 4-core board told 8 threads times contention, not the runtime at 8 threads: the run
    says so, once however many rows and batch sizes it times."""
    import subprocess
    import sys

    from vitedge.core.cpu import oversubscription

    usable = len(os.sched_getaffinity(0))
    assert oversubscription(usable) is None and oversubscription(None) is None
    done = subprocess.run(
        [sys.executable, "-m", "vitedge", "bench", "vitedge-cifar10", "--threads", str(usable + 1)]
        + ["--runs", "1", "--samples", "2", "--batch", "1,2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "CPUs this process may use" in line]
    assert said == [
        f"warning: threads {usable + 1} is more than the {usable} CPUs this process may use: "
        f"the timings measure {usable + 1} threads sharing {usable} cores"
    ], done.stderr


@pytest.mark.parametrize("sent", ["SIGKILL", "SIGTERM"])
def test_a_measuring_process_that_dies_is_named_within_seconds(sent, tiny_vit, tmp_path: Path) -> None:
    """A row's process ended from outside: SIGKILL is what the kernel's out-of-memory killer
    sends (a batch too big for a small board), and no handler sees it. The parent says so at
    once, in one line for SIGKILL (before: it waited its 1800 s for a result that would never
    come, then raised a bare RuntimeError)."""
    import multiprocessing
    import signal
    import threading
    import time

    from vitedge.core.errors import VitedgeError

    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), dtype=np.float32))
    path = save_checkpoint(tiny_vit, tmp_path / "tiny.safetensors")
    request = MeasureRequest(
        RunnerSpec("tiny", "torch", str(path), threads=1), str(tmp_path / "x.npy"), None, (1, 2), runs=10**8
    )

    def end_the_child() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not multiprocessing.active_children():
            time.sleep(0.05)
        time.sleep(3)  # inside the timed loop by now
        for child in multiprocessing.active_children():
            os.kill(child.pid, getattr(signal, sent))

    threading.Thread(target=end_the_child, daemon=True).start()
    began = time.monotonic()
    if sent == "SIGKILL":
        expected = (
            r"measuring tiny was killed \(SIGKILL, most often the kernel's out-of-memory killer\) at batch sizes 1, 2"
        )
        with pytest.raises(VitedgeError, match=expected):
            measure_isolated(request, timeout_s=120)
    else:
        with pytest.raises(RuntimeError, match=r"measuring tiny ended without a result \(signal 15\)"):
            measure_isolated(request, timeout_s=120)
    assert time.monotonic() - began < 60, "the parent waited for a child that had died"
    assert not multiprocessing.active_children()


def test_memory_available_is_the_smaller_of_the_kernels_and_the_containers(tmp_path: Path) -> None:
    """MemAvailable, or what a container's cgroup limit leaves (v2, then v1) where that is less;
    None where neither is known. A batch whose float32 inputs alone exceed it is named."""
    from vitedge.core.cpu import batch_outgrows_memory, memory_available

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 33554432 kB\nMemAvailable: 8388608 kB\n")
    assert memory_available(str(tmp_path)) == 8 << 30
    (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text("max\n")
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.current").write_text("1000\n")
    assert memory_available(str(tmp_path)) == 8 << 30
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text(f"{3 << 30}\n")
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.current").write_text(f"{1 << 30}\n")
    assert memory_available(str(tmp_path)) == 2 << 30
    assert memory_available(str(tmp_path / "nothing")) is None
    image = (3, 224, 224)  # 602,112 bytes as float32
    assert batch_outgrows_memory(3566, image, available=2 << 30) is None
    assert batch_outgrows_memory(3567, image, available=2 << 30) == (
        "batch 3567 needs 2.1 GB for its float32 3×224×224 inputs alone, and this machine has 2.1 GB available"
    )


def _made_up_cgroups(root: Path, own: str, files: dict[str, str]) -> None:
    """A /proc/self/cgroup naming `own` (cgroup v1: "N:controller:/path"; v2: "0::/path"), and
    the limit files under a made-up /sys/fs/cgroup."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "cgroup").write_text(own)
    for name, text in files.items():
        path = root / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    "own, files, quota",
    [
        pytest.param(
            "4:memory:/\n3:cpu,cpuacct:/ci/job\n0::/\n",
            {"cpu/ci/job/cpu.cfs_quota_us": "-1\n", "cpu/ci/job/cpu.cfs_period_us": "100000\n"}
            | {"cpu/ci/cpu.cfs_quota_us": "150000\n", "cpu/ci/cpu.cfs_period_us": "100000\n"},
            1.5,
            id="v1-set-on-the-parent",
        ),
        pytest.param(
            "0::/system.slice/ci.service\n",
            {"system.slice/cpu.max": "max 100000\n", "system.slice/ci.service/cpu.max": "50000 100000\n"},
            0.5,
            id="v2-set-on-its-own",
        ),
        pytest.param("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0, id="v2-inside-a-container"),
        pytest.param("0::/\n", {"cpu.max": "max 100000\n"}, None, id="v2-no-quota"),
        pytest.param(
            "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None, id="v1-no-quota"
        ),
    ],
)
def test_a_cgroup_cpu_quota_is_read_from_the_processs_own_cgroup_and_those_above_it(
    own: str, files: dict[str, str], quota: float | None, tmp_path: Path
) -> None:
    """`docker --cpus`, a Kubernetes CPU limit or systemd's CPUQuota leave every CPU visible
    and allowed, and stop the process's threads for the rest of each period once they have used
    the quota: the limit that binds may be set on the process's own cgroup or any above it."""
    from vitedge.core.cpu import cpu_quota

    _made_up_cgroups(tmp_path, own, files)
    assert cpu_quota(str(tmp_path)) == quota


def test_threads_beyond_a_cpu_quota_are_said_and_memory_is_read_from_the_own_cgroup(tmp_path: Path) -> None:
    """Two threads under a quota of 1.5 CPUs are throttled although both CPUs are allowed; and a
    memory limit set on the process's own (nested) cgroup binds as one set at the top does."""
    from vitedge.core.cpu import memory_available, oversubscription, usable_cpus

    allowed = len(os.sched_getaffinity(0))
    _made_up_cgroups(
        tmp_path,
        "5:memory:/ci/job\n3:cpu:/ci\n",
        {"cpu/ci/cpu.cfs_quota_us": "50000\n", "cpu/ci/cpu.cfs_period_us": "100000\n"}
        | {
            "memory/ci/job/memory.limit_in_bytes": f"{3 << 30}\n",
            "memory/ci/job/memory.usage_in_bytes": f"{1 << 30}\n",
        },
    )
    (tmp_path / "proc" / "meminfo").write_text("MemAvailable: 8388608 kB\n")
    root = str(tmp_path)
    assert usable_cpus(root) == (1, 0.5)
    assert oversubscription(1, root=root) == (
        "threads 1 is more than this process's cgroup CPU quota of 0.5 CPUs: the kernel stops them for part "
        "of every period, and the timings measure that, not the runtime"
    )
    assert memory_available(root) == 2 << 30
    (tmp_path / "sys/fs/cgroup/cpu/ci/cpu.cfs_quota_us").write_text(f"{100000 * allowed}\n")
    assert usable_cpus(root) == (allowed, None) and oversubscription(allowed, root=root) is None


def test_a_runtime_left_to_its_own_thread_count_gets_the_cpus_a_quota_allows(tmp_path: Path, monkeypatch) -> None:
    """A container allowed 2.5 CPUs of a 64-core host: a runtime given no thread count would
    size its pool from the host's cores, so it is given 2 (rounded down: a thread more than the
    quota runs is stopped each period); a count asked for is kept; with no quota and every CPU
    allowed the runtime keeps its own choice."""
    from vitedge.core.cpu import runtime_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    _made_up_cgroups(tmp_path, "0::/\n", {"cpu.max": "250000 100000\n"})
    root = str(tmp_path)
    assert runtime_threads(None, root) == 2 and runtime_threads(8, root) == 8
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("50000 100000\n")
    assert runtime_threads(None, root) == 1
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    assert runtime_threads(None, root) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # taskset -c 0-3
    assert runtime_threads(None, root) == 4


def test_the_default_pools_get_the_cpus_a_quota_allows_unless_the_user_set_them(tmp_path: Path, monkeypatch) -> None:
    """The CLI's first step: OMP_NUM_THREADS (torch's pool outside `open_torch`, OpenBLAS) is the
    quota rounded down where a container allows 2.5 CPUs of a 64-core host; a value the user set
    is theirs; with every CPU usable nothing is set (the runtimes' own choice)."""
    from vitedge.core.cpu import bound_default_pools

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    _made_up_cgroups(tmp_path, "0::/\n", {"cpu.max": "250000 100000\n"})
    environ: dict[str, str] = {}
    assert bound_default_pools(environ, str(tmp_path)) == 2 and environ == {"OMP_NUM_THREADS": "2"}
    asked = {"OMP_NUM_THREADS": "6"}
    assert bound_default_pools(asked, str(tmp_path)) is None and asked == {"OMP_NUM_THREADS": "6"}
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    environ = {}
    assert bound_default_pools(environ, str(tmp_path)) is None and environ == {}


def test_a_taskset_is_named_beside_the_cpu_count_and_given_to_the_runtimes(tmp_path: Path) -> None:
    """`taskset -c 0 vitedge targets` (a real affinity mask, set before exec): the CPU line names
    the one CPU this process may use, and a runtime left to its own count is given 1, not the
    machine's 2 or more (before: "2 logical CPUs" and the runtimes' own counts)."""
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU allowed already: no smaller mask to set")
    first = min(os.sched_getaffinity(0))

    def on_one_cpu() -> None:
        os.sched_setaffinity(0, {first})

    def run(*argv: str) -> str:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=on_one_cpu,
            env={**os.environ, "COLUMNS": "400"},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    line = run(sys.executable, "-m", "vitedge", "targets").splitlines()[0]
    assert f"{os.cpu_count()} logical CPUs, 1 usable (its CPU affinity: taskset or a container's cpuset); ISA" in line
    given = run(
        sys.executable,
        "-c",
        "from vitedge.targets.onnxruntime import session_options; print(session_options(None).intra_op_num_threads)",
    )
    assert given.split() == ["1"]


@pytest.fixture
def cpu_quota_cgroup() -> Iterator[Path]:
    """A real cgroup v1 `cpu` group with a quota of half a CPU (root on a host that mounts v1's
    cpu controller, as the CI machines do); skipped where none can be made."""
    import uuid

    base = Path("/sys/fs/cgroup/cpu")
    group = base / f"vitedge-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "cpu.cfs_quota_us").write_text("50000")
    except OSError as error:
        if group.is_dir():
            group.rmdir()
        pytest.skip(f"no cgroup v1 cpu group can be made here: {error}")
    try:
        yield group
    finally:
        import time

        deadline = time.monotonic() + 30
        while True:  # a command's helper processes (multiprocessing's tracker) may outlive it briefly
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # ended meanwhile
                    (base / "cgroup.procs").write_text(pid)
            try:
                group.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_real_cpu_quota_is_named_by_targets_and_beside_the_timings(cpu_quota_cgroup: Path, tmp_path: Path) -> None:
    """The commands run in a real cgroup allowed half a CPU: `vitedge targets` names the quota
    beside the CPU count, a runtime given no thread count gets one thread, and a bench at 2
    threads says its timings measure the throttling (before: nothing said, and a container's
    figures read as the CPU's)."""
    import subprocess
    import sys

    def in_the_group() -> None:
        (cpu_quota_cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def vitedge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vitedge", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "400"},
            preexec_fn=in_the_group,
        )

    shown = vitedge("targets")
    assert shown.returncode == 0, shown.stderr
    assert ", 1 usable (a cgroup CPU quota of 0.5 CPUs); ISA:" in shown.stdout.splitlines()[0]
    asked = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vitedge.targets.onnxruntime import session_options; "
            "from vitedge.targets.openvino import compile_config; "
            "print(session_options(None).intra_op_num_threads, compile_config('fp32', 'cpu')['INFERENCE_NUM_THREADS'])",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=in_the_group,
    )
    assert asked.stdout.split() == ["1", "1"], asked.stderr  # given, not left to the host's core count
    entry = (  # torch where vitedge opens no session for it (a compression step, an export's trace)
        "import os, sys\nsys.argv = ['vitedge', 'export', '--help']\nfrom vitedge.cli import run\n"
        "try:\n    run()\nfinally:\n    import torch\n    print('torch threads', torch.get_num_threads())"
    )
    untouched = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    started = subprocess.run(
        [sys.executable, "-c", entry],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=in_the_group,
        env=untouched,
    )
    assert started.stdout.splitlines()[-1] == "torch threads 1", started.stderr
    done = vitedge("bench", "vitedge-cifar10", "--threads", "2", "--runs", "1", "--samples", "2")
    assert done.returncode == 0, done.stderr
    assert "warning: threads 2 is more than this process's cgroup CPU quota of 0.5 CPUs" in done.stderr
    assert f"({os.cpu_count()} cores, 1 usable (a cgroup CPU quota of 0.5 CPUs);" in done.stdout.replace("\n", "")
