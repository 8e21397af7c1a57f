"""The SSH board target against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): the whole
path, from tar over ssh to the bundle's JSON, plus every failure a user meets at a board."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import vitedge.targets.remote as remote
from tests.support import sshd
from tests.support.boards import make_venv, vitedge_logits
from tests.support.sshd import (
    find_sshd,
    free_port,
    keygen,
    running_sshd,
    unavailable_reason,
    write_known_hosts,
)
from vitedge.calibration.sources import CIFAR10_CLASSES
from vitedge.core.cpu import read_hwcaps, read_kernel_arch
from vitedge.core.errors import VitedgeError
from vitedge.targets.bundle_build import build_bundle
from vitedge.targets.remote import bench_board, bench_remote, parse_target, ssh_command
from vitedge.workflows.board import bench_board_rows, board_facts

SENTINEL = "vitedge-pwned"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real sshd; the tests that need one skip (saying why) where none is installed, the
    argument checks below run everywhere."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no OpenSSH server to test against: {reason}")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as ssh_server:
        yield ssh_server


def test_sshd_is_found_off_the_path(tmp_path, monkeypatch):
    """sshd lives in an sbin folder that a normal user's PATH lacks: PATH first, then the usual
    places, and $VITEDGE_SSHD wins over both."""
    fake = tmp_path / "bin" / "sshd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.delenv("VITEDGE_SSHD", raising=False)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(sshd, "SSHD_PLACES", ())
    assert find_sshd() == fake
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_sshd() is None and "no sshd on PATH" in unavailable_reason()
    monkeypatch.setattr(sshd, "SSHD_PLACES", (str(tmp_path / "absent"), str(fake)))
    assert find_sshd() == fake
    monkeypatch.setenv("VITEDGE_SSHD", str(tmp_path / "nope"))
    assert find_sshd() is None and "VITEDGE_SSHD" in unavailable_reason()


def bench(server, source: Path, python: Path | str, **options):
    options.setdefault("identity", server.identity)
    options.setdefault("known_hosts", server.known_hosts)
    options.setdefault("seconds", 0.3)
    return bench_remote(source, server.target, python=str(python), **options)


def test_bench_over_ssh_returns_speed_top1_and_board(server, onnx_artifact, bundle_python, image_folder, tmp_path):
    progress: list[str] = []
    row = bench(
        server, onnx_artifact, bundle_python, data=image_folder, batch=2, threads=1, on_progress=progress.append
    )
    paths = sorted(image_folder.rglob("*.png"))
    truth = np.array([CIFAR10_CLASSES.index(p.parent.name) for p in paths])
    expected_top1 = 100.0 * float((vitedge_logits(onnx_artifact, paths).argmax(axis=1) == truth).mean())
    assert row["top1"] == pytest.approx(expected_top1) and row["eval_count"] == 40
    assert row["it_per_s"] == pytest.approx(2000.0 / row["latency_ms"]["p50"]) and row["latency_ms"]["p50"] > 0
    assert (row["target"], row["batch"], row["runtime"], row["precision"]) == (server.target, 2, "onnxruntime", "fp32")
    # one thread, as the board's runtime reports it and as its CPU time shows (the percentile
    # arithmetic itself is checked on a fake clock in test_bundle)
    assert row["detail"]["threads"] == 1 and row["cpu_per_wall"] <= 1.05, row
    assert row["board"]["versions"]["onnxruntime"] and row["board"]["machine"] and row["board"]["python"]
    assert row["board"]["hwcaps"] == list(read_hwcaps())  # the same machine: the bundle's vendored reader agrees
    assert row["board"]["kernel_arch"] == read_kernel_arch() and not board_facts(row["board"])[0].emulated
    assert any(line.startswith("vitedge-remote: running on") for line in progress)
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")  # a ready bundle travels as is
    assert bench(server, bundle, bundle_python)["it_per_s"] > 0


def test_hostile_file_names_execute_nothing(server, onnx_artifact, bundle_python, tmp_path):
    home = Path.home()
    for place in (home, tmp_path):
        (place / SENTINEL).unlink(missing_ok=True)
    data = tmp_path / "data"
    names = [
        f"$(cd;touch {SENTINEL}).png",
        f"`cd;touch {SENTINEL}`.png",
        f"x;cd;touch {SENTINEL};.png",
        'it\'s "quoted".png',
        "a b  c.png",
        f"| touch {SENTINEL} &.png",
    ]
    for label in ("kitten", f"dog $(cd;touch {SENTINEL})"):  # neither a model label: numbered in sorted order
        (data / label).mkdir(parents=True)
    from PIL import Image

    pixels = np.zeros((32, 32, 3), np.uint8)
    for name in names:
        Image.fromarray(pixels).save(data / "kitten" / name, format="PNG")
        Image.fromarray(pixels).save(data / f"dog $(cd;touch {SENTINEL})" / name, format="PNG")
    hostile_dir = tmp_path / f"my $(cd;touch {SENTINEL}) 'bundle'"
    bundle = build_bundle(onnx_artifact, hostile_dir / "b;touch x")
    row = bench(server, bundle, bundle_python, data=data)
    assert row["eval_count"] == 2 * len(names)
    with pytest.raises(VitedgeError, match="has no"):
        bench(server, bundle, f"python3;cd;touch {SENTINEL}")
    for place in (home, tmp_path, Path.cwd()):
        assert not (place / SENTINEL).exists(), f"a file name was executed as a command ({place / SENTINEL})"


def test_changed_host_key_is_refused_even_with_accept_new(server, onnx_artifact, bundle_python, tmp_path):
    impostor = keygen(tmp_path / "other_host_key", "impostor")
    known_hosts = write_known_hosts(tmp_path / "known_hosts", server.host, server.port, impostor)
    for accept_new in (False, True):
        with pytest.raises(VitedgeError, match="host key of 127.0.0.1:.* has CHANGED") as caught:
            bench(server, onnx_artifact, bundle_python, known_hosts=known_hosts, accept_new_host_key=accept_new)
        assert "ssh-keygen -R" in caught.value.hint
    assert known_hosts.read_text().split()[2] == impostor.split()[1]  # left untouched


def test_unknown_host_key_needs_explicit_acceptance(server, onnx_artifact, bundle_python, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with pytest.raises(VitedgeError, match="is not in") as caught:
        bench(server, onnx_artifact, bundle_python, known_hosts=known_hosts)
    assert "--accept-new-host-key" in caught.value.hint
    assert (
        bench(server, onnx_artifact, bundle_python, known_hosts=known_hosts, accept_new_host_key=True)["it_per_s"] > 0
    )
    assert server.host_public_key.split()[1] in known_hosts.read_text()


def test_dead_port_and_auth_failure(server, onnx_artifact, bundle_python, tmp_path):
    dead = f"ssh://{server.user}@127.0.0.1:{free_port()}"
    with pytest.raises(VitedgeError, match="connection refused"):
        bench_remote(
            onnx_artifact,
            dead,
            identity=server.identity,
            known_hosts=server.known_hosts,
            python=str(bundle_python),
            connect_timeout=3,
        )
    keygen(tmp_path / "stranger", "not authorized")
    with pytest.raises(VitedgeError, match="refused the login") as caught:
        bench(server, onnx_artifact, bundle_python, identity=tmp_path / "stranger")
    assert "authorized_keys" in caught.value.hint
    with pytest.raises(VitedgeError, match="identity file .* not found"):
        bench(server, onnx_artifact, bundle_python, identity=tmp_path / "absent")


def test_board_without_python_or_runtime(server, onnx_artifact, bundle_python, tmp_path):
    with pytest.raises(VitedgeError, match="has no '/opt/absent/python3'") as caught:
        bench(server, onnx_artifact, "/opt/absent/python3")
    assert "--python" in caught.value.hint
    # a Python with numpy and Pillow but not the bundle's runtime (openvino)
    bundle = build_bundle(onnx_artifact, tmp_path / "ov-bundle", runtime="openvino")
    with pytest.raises(VitedgeError, match=f"openvino is not installed for {bundle_python}") as caught:
        bench(server, bundle, bundle_python)
    assert (
        f"on the board run: {bundle_python} -m pip install 'numpy>=1.24' 'pillow>=10' 'openvino>=2024.4'"
        in caught.value.hint
    )
    bare = make_venv(tmp_path / "bare-venv", ())  # a Python with nothing installed
    with pytest.raises(VitedgeError, match="missing Python package 'numpy'") as caught:
        bench(server, onnx_artifact, bare)
    assert f"{bare} -m pip install 'numpy>=1.24' 'pillow>=10' 'onnxruntime>=1.17'" in caught.value.hint


def test_out_of_time_keeps_what_finished_and_leaves_nothing_on_the_board(
    server, onnx_artifact, bundle_python, tmp_path
):
    """Three bundles, the second hangs (its Python sleeps first): the board stops itself at the
    limit, the first keeps its result, the other two say why they have none, and nothing of
    the run is left running or on disk there (ssh has no pty, so killing the client alone
    would leave both behind)."""
    nap = "sleep 7919"  # a length nothing else sleeps for, to look for afterwards
    python = tmp_path / "python-that-hangs-in-the-second-bundle"
    python.write_text(f'#!/bin/sh\ncase "$PWD" in */bundles/1) {nap};; esac\nexec {bundle_python} "$@"\n')
    python.chmod(0o755)
    before = set(Path("/tmp").glob("vitedge.*"))
    entries = bench_board(
        [onnx_artifact] * 3,
        server.target,
        identity=server.identity,
        known_hosts=server.known_hosts,
        seconds=0.3,
        python=str(python),
        run_timeout=20,
    )
    assert entries[0]["benches"][0]["it_per_s"] > 0
    hung, never = entries[1]["error"], entries[2]["error"]
    assert hung.message.endswith("did not finish within the 20 s limit: the board stopped it"), hung.message
    assert "not run: the 20 s limit passed before its turn (the board stopped it)" in never.message
    assert "--board-timeout" in hung.hint and "--samples" in hung.hint
    assert set(Path("/tmp").glob("vitedge.*")) == before
    left = subprocess.run(["pgrep", "-f", nap], capture_output=True, text=True)
    assert left.returncode == 1, f"still running on the board: {left.stdout}"


def test_a_failing_bundle_names_the_boards_own_python(server, onnx_artifact, tmp_path):
    """The hint to rerun a failed bundle by hand names the interpreter the user chose."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "error: the model would not load" >&2\nexit 1\n')
    python.chmod(0o755)
    with pytest.raises(VitedgeError, match=r"the bundle failed \(exit 1\): the model would not load") as caught:
        bench(server, onnx_artifact, python)
    assert f"run `{python} run_bundle.py bench` there" in caught.value.hint


def test_a_bundle_killed_on_the_board_is_named(server, onnx_artifact, tmp_path):
    """SIGKILL on the board (its out-of-memory killer, for a batch that does not fit) is said as
    such, with what to change (before: "the bundle failed (exit 137): Killed")."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "bench: batch 8, warming up" >&2\nkill -9 $$\n')
    python.chmod(0o755)
    with pytest.raises(
        VitedgeError,
        match=r"the bundle was killed on the board \(exit 137: SIGKILL, most often its out-of-memory killer\)",
    ) as caught:
        bench(server, onnx_artifact, python)
    assert "--batch 1,8" in caught.value.hint


def test_a_board_that_never_answers_is_cut_off_with_what_finished_kept():
    """The client's own limit (the board's did not fire: frozen, or its clock jumped): bundles
    that ended keep their results (or their own error: a failed command ends a bundle's turn),
    the one the board was in is cut short, the rest never ran, and the message says the board
    may still be running."""
    mark, status = remote.BUNDLE_MARK, remote.STATUS_MARK
    stdout = f"{mark}1/4\n{{}}\n{status}0\n{{}}\n{status}0\n{mark}2/4\n{status}3\n{mark}3/4\n{{}}\n{status}0\n"
    board = parse_target("ssh://pi@board")
    done, failed, cut, never = remote._out_of_time(
        stdout, remote._sections(stdout, 4), 2, board, 60, board_stopped=False
    )
    assert done is None and failed is None
    assert cut["error"].message == (
        f"ssh://pi@board: did not finish within the 60 s limit: the board did not answer for "
        f"{remote.CLIENT_GRACE_S:g} s more, so ssh was closed (it may still be running there)"
    )
    assert never["error"].message.startswith("ssh://pi@board: not run: the 60 s limit passed before its turn")
    # the limit struck between two bundles: the first one's results all arrived, so they stand
    first_done = f"{mark}1/2\n{{}}\n{status}0\n{{}}\n{status}0\n"
    kept, next_one = remote._out_of_time(first_done, remote._sections(first_done, 2), 2, board, 60, board_stopped=True)
    assert kept is None and "not run" in next_one["error"].message
    assert remote._out_of_time("", [[], []], 2, board, 60, board_stopped=True)[0]["error"].message.endswith(
        "not run: the 60 s limit passed before its turn (the board stopped it)"
    )


def test_remote_hints_name_only_options_vitedge_bench_has():
    """Every --option a board error tells the user to change is one `vitedge bench` takes."""
    import typer

    from vitedge.cli import app

    bench = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    options = {name for param in bench.params for name in param.opts if name.startswith("--")}
    prose = [  # the module's sentences (run_bundle.py's own arguments are single words)
        node.value
        for node in ast.walk(ast.parse(Path(remote.__file__).read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value
    ]
    named = {option for text in prose for option in re.findall(r"(?<![\w-])--[a-z][a-z-]+", text)}
    board_commands = {"--now"}  # `systemctl enable --now ssh`, run on the board
    assert {"--board-timeout", "--python", "--identity"} <= named <= options | board_commands, named - options


@pytest.mark.parametrize(
    "target",
    [
        "ssh://-oProxyCommand=touch@x",
        "ssh://host/path",
        "http://host",
        "ssh://u@host:99999",
        "ssh://-x@host",
        "ssh://",
        "ssh://u:pw@host",
    ],
)
def test_bad_targets_are_refused_before_ssh_runs(target):
    with pytest.raises(VitedgeError):
        parse_target(target)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_timeout": 0}, "time limit must be > 0 s"),
        ({"seconds": 0}, "seconds > 0"),
        ({"batches": (0,)}, "batch and threads must be ≥ 1"),
    ],
)
def test_a_board_request_that_cannot_run_is_refused_before_the_images_are_written(options, message):
    """`vitedge bench --target ssh://…` writes the evaluation images (1,000 PNGs by default)
    before the SSH session; a request bench_board would refuse must not cost that first."""

    def folder_for(*_):
        raise AssertionError("the images were written for a request that cannot run")

    request = {"batches": (1,), "seconds": 1.0, "run_timeout": None, **options}
    with pytest.raises(VitedgeError, match=re.escape(message)):
        bench_board_rows(
            ["artifact"],
            "ssh://pi@127.0.0.1:9",
            folder_for=folder_for,
            identity=None,
            accept_new_host_key=False,
            known_hosts=None,
            threads=1,
            data="cifar10",
            samples=1000,
            **request,
        )


def test_ssh_argv_checks_host_keys_and_ends_options():
    argv = ssh_command(
        parse_target("ssh://pi@board.local:2222"),
        identity=None,
        known_hosts=None,
        accept_new_host_key=False,
        connect_timeout=5,
    )
    assert argv[0] == "ssh" and argv[-2:] == ["--", "board.local"]
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv and "ConnectTimeout=5" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "pi"
    assert "StrictHostKeyChecking=accept-new" in ssh_command(
        parse_target("ssh://b"), identity=None, known_hosts=None, accept_new_host_key=True, connect_timeout=5
    )
    assert str(parse_target("ssh://pi@[fe80::1]:22")) == "ssh://pi@[fe80::1]:22"


@pytest.fixture(scope="module")
def three_runtimes(tmp_path_factory, tiny_source, executorch_artifact):
    """The tiny checkpoint as ONNX, OpenVINO and ExecuTorch fp32 artifacts (vitedge's own
    exporters), and a board Python that has all three runtimes and nothing of vitedge."""
    from tests.support.boards import EXECUTORCH_BOARD, make_linked_venv
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import export_artifact

    root = tmp_path_factory.mktemp("three-runtimes")
    loaded = load_model(str(tiny_source))
    artifacts = [export_artifact(loaded, to=fmt, precision="fp32", out=root / fmt) for fmt in ("onnx", "openvino")] + [
        executorch_artifact
    ]
    board = EXECUTORCH_BOARD["with_requirements"] + ("onnxruntime", "openvino")
    python = make_linked_venv(root / "venv", board, EXECUTORCH_BOARD["alone"])
    return artifacts, python


def test_one_bench_call_runs_all_three_runtimes_on_the_board(server, three_runtimes, own_cache, capsys, monkeypatch):
    """Acceptance (issue 21): `vitedge bench ONNX OPENVINO EXECUTORCH --target ssh://…` benches
    the three in one SSH session and prints them side by side: parity against the PyTorch
    reference on the same images, p50/p90/p99, peak memory, time to first answer, the board's
    CPU facts; and `vitedge targets` then recommends from what was measured there."""
    from tests.support.cli import cli
    from vitedge.core.cpu import probe_cpu
    from vitedge.targets import measured, remote

    artifacts, python = three_runtimes
    sessions: list[list[str]] = []
    real_run_ssh = remote.run_ssh

    def counted(argv, **options):  # noqa: ANN001, ANN003, ANN202 - remote.run_ssh's signature
        sessions.append(argv)
        return real_run_ssh(argv, **options)

    monkeypatch.setattr(remote, "run_ssh", counted)
    code, stdout, stderr = cli(
        capsys, monkeypatch, "bench", *map(str, artifacts), "--target", server.target,
        "--identity", str(server.identity), "--known-hosts", str(server.known_hosts), "--python", str(python),
        "--batch", "1,8", "--seconds", "0.3", "--threads", "1", "--samples", "40", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert len(sessions) == 1  # one SSH session for all three
    rows = json.loads(stdout)
    assert [r["measurement"]["runtime"] for r in rows] == ["onnxruntime", "openvino", "executorch"]
    cpu = probe_cpu()  # the "board" is this machine, reached over SSH
    for row in rows:
        m, parity = row["measurement"], row["parity"]
        assert parity["passed"] and parity["max_abs"] < 1e-4 and parity["top1_agreement"] == 1.0, row
        assert m["accuracy"]["samples"] == 40 and m["execution_precision"] == "f32" and m["threads"] == 1
        assert [t["batch"] for t in m["timings"]] == [1, 8]
        for timing in m["timings"]:
            assert 0 < timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"]
            assert timing["images_per_s"] == pytest.approx(timing["batch"] * timing["it_per_s"])
            assert timing["it_per_s"] == pytest.approx(1000.0 / timing["p50_ms"])
        assert m["peak_rss_mb"] > 20 and m["first_inference_ms"] > m["timings"][0]["p50_ms"]
        assert m["machine"]["cpu"] == cpu.model and m["machine"]["isa"] == list(cpu.isa)
        assert m["machine"]["cores"] == cpu.cores and "temperature_c" in m["machine"]
    # the same images, so the same top-1 from all three fp32 runtimes
    assert len({r["measurement"]["accuracy"]["top1"] for r in rows}) == 1
    code, table, told = cli(
        capsys, monkeypatch, "bench", *map(str, artifacts), "--target", server.target,
        "--identity", str(server.identity), "--known-hosts", str(server.known_hosts), "--python", str(python),
        "--batch", "1", "--seconds", "0.2", "--samples", "16", "--threads", str(cpu.cores + 1),
    )  # fmt: skip
    oversubscribed = f"threads {cpu.cores + 1} is more than the {cpu.cores} CPUs the board has"
    assert f"{oversubscribed}: the timings measure {cpu.cores + 1} threads sharing {cpu.cores} cores" in told, told
    assert code == 0 and "on the board" in table and "p99 ms" in table and "°C before→after" in table
    assert table.count("pass") >= 3 and f"board: {cpu.model}" in " ".join(table.split())
    board = measured.board_for(cpu, measured.load_store())
    model, latest = measured.latest(board)
    assert model.endswith("tiny.safetensors") and latest["where"] == server.target
    assert sorted(r["runtime"] for r in latest["rows"]) == ["executorch", "onnxruntime", "openvino"]
    fastest = max(latest["rows"], key=lambda r: r["it_per_s_b1"])  # all three passed parity
    assert latest["recommended"] == fastest["name"] and all(r["parity_passed"] for r in latest["rows"])


def test_a_runtime_the_board_lacks_does_not_stop_the_others(server, three_runtimes, bundle_python, own_cache):
    """numpy, Pillow and onnxruntime only on the board: the ONNX row, and a warning naming the
    pip line for the ExecuTorch one."""
    from vitedge.workflows.pipeline import bench

    artifacts, _ = three_runtimes
    with pytest.warns(UserWarning, match="did not run: .*executorch is not installed") as caught:
        rows = bench(
            [str(artifacts[0]), str(artifacts[2])],
            target=server.target,
            identity=server.identity,
            known_hosts=server.known_hosts,
            python=str(bundle_python),
            batches=(1,),
            seconds=0.2,
            threads=1,
            samples=8,
        )
    assert [r.measurement.runtime for r in rows] == ["onnxruntime"] and rows[0].parity.passed
    assert any("torch>=2.14,<2.15" in str(w.message) for w in caught)
