"""Benchmark a board over SSH: copy one or more bundles there in one session (the ONNX
Runtime, OpenVINO and ExecuTorch artifacts of one model, say), run each one's
`run_bundle.py` with the board's own Python, stream its progress, and bring back one result
per bundle: timings, scores, logits and the board's facts.

Why the system `ssh` and not paramiko: the board is reached exactly as the user's own
`ssh board` reaches it, with their `~/.ssh/config` (aliases, ProxyJump, ports), their agent
and hardware keys, certificates, hashed known_hosts entries and OpenSSH's own host-key
checks, all of which paramiko would have to reimplement or would silently skip; and it adds
no dependency (OpenSSH ships with Linux, macOS and Windows 10+). The price is that errors
arrive as text on stderr, which `_ssh_error` maps to clear messages from OpenSSH's stable
wording.

Safety: ssh is started from an argv list (never a local shell); the one remote command is
`sh -c SCRIPT` where every value that comes from the user (the Python path, numbers) is
`shlex.quote`d; files travel as a tar stream on ssh's stdin, so no file name ever reaches a
shell on either side. Host keys are checked against known_hosts (`StrictHostKeyChecking=yes`)
unless the caller explicitly accepts a new one (`accept-new`, which still refuses a changed
key). The whole run is bounded by `run_timeout`, the connection by `connect_timeout`.

Time limit: the board enforces `run_timeout` itself (see `_watchdog`): ssh without a pty
sends the board no hangup when the client is killed, so a client-side kill alone would leave
the board's Python running and its temp folder behind. The client waits a little longer
(`CLIENT_GRACE_S`) and kills ssh only if the board never answers. Bundles that finished
before the limit keep their results; only the one cut short and those after it report an
error.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import VitedgeError
from ..core.io import scratch_folder
from ..core.manifest import read_manifest, verify_checksums
from .bundle_build import REQUIREMENTS, build_bundle, is_bundle

EXIT_NO_PYTHON = 127
EXIT_NO_RUNTIME = 3  # run_bundle.py's exit code when numpy, Pillow or the runtime is missing
EXIT_KILLED = 128 + 9  # the shell's status of a command ended by SIGKILL (the kernel's OOM killer)
PROGRESS_PREFIXES = ("bench:", "eval:", "vitedge-remote:")
DATA_PLACEHOLDER = "@DATA@"  # an argument that names the data folder unpacked on the board
RUN_TIMEOUT_S = 1800.0  # ViT-B scoring 1,000 images on a Raspberry Pi 4 takes most of this
CLIENT_GRACE_S = 30.0  # beyond the board's own limit, before the client gives up on it
TIMEOUT_MARK = "vitedge-remote: out of time after"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_:.%-]+$")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{host}{port}"


def parse_target(target: str) -> SshTarget:
    """`ssh://[user@]host[:port]` → SshTarget; refuses anything ssh could read as an option."""
    parts = urlsplit(target)
    hint = "write it as ssh://user@host or ssh://user@host:2222"
    try:
        port = parts.port
    except ValueError:
        raise VitedgeError(f"bad port in {target!r}", hint) from None
    if (
        parts.scheme != "ssh"
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.password
    ):
        raise VitedgeError(f"not an SSH target: {target!r}", hint)
    if not _HOST.match(parts.hostname) or parts.hostname.startswith("-"):
        raise VitedgeError(f"bad host name {parts.hostname!r} in {target!r}", hint)
    if parts.username is not None and not _NAME.match(parts.username):
        raise VitedgeError(f"bad user name {parts.username!r} in {target!r}", hint)
    return SshTarget(parts.hostname, parts.username, port)


def ssh_command(
    target: SshTarget,
    *,
    identity: Path | None,
    known_hosts: Path | None,
    accept_new_host_key: bool,
    connect_timeout: float,
) -> list[str]:
    """The ssh argv up to and including the destination (the remote command follows)."""
    argv = [
        "ssh",
        "-o", "BatchMode=yes",  # never prompt for a password or passphrase: fail instead
        "-o", f"StrictHostKeyChecking={'accept-new' if accept_new_host_key else 'yes'}",
        "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if known_hosts is not None:
        argv += ["-o", f'UserKnownHostsFile="{Path(known_hosts).expanduser()}"']
    if identity is not None:
        identity = Path(identity).expanduser()
        if not identity.is_file():
            raise VitedgeError(
                f"identity file {identity} not found", "pass --identity with the private key the board accepts"
            )
        argv += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    return [*argv, "--", target.host]


BUNDLE_MARK = "vitedge-remote: bundle "
STATUS_MARK = "@status "


def _shell_arg(arg: str) -> str:
    return '"$d"/data' if arg == DATA_PLACEHOLDER else shlex.quote(arg)


def _watchdog(limit_s: float) -> list[str]:
    """Lines that make the board stop itself once `limit_s` has passed: a background loop says
    so on stderr, then sends TERM to the session's process group (sshd makes each session a
    group of its own: this script, the Python it runs, anything that Python started), and the
    script's traps remove the temp folder. The loop checks once a second that the script still
    runs and ends with it; its `sleep` holds none of the session's output, so it never keeps
    the SSH channel open, and the script's EXIT trap kills it."""
    seconds = max(1, math.ceil(limit_s))
    loop = (
        "trap - EXIT HUP INT TERM; "
        f"end=$(($(date +%s) + {seconds})); "
        'while [ "$(date +%s)" -lt "$end" ]; do '
        'sleep 1 </dev/null >/dev/null 2>&1; kill -0 "$main" 2>/dev/null || exit 0; done; '
        f'echo "{TIMEOUT_MARK} {seconds} s" >&2; kill -TERM 0'
    )
    return ["main=$$", f"( {loop} ) </dev/null >/dev/null &", "watchdog=$!"]


def remote_script(python: str, runs: list[list[list[str]]], limit_s: float = RUN_TIMEOUT_S) -> str:
    """The sh script the board runs: check Python, unpack the tar from stdin into a private
    temp folder (removed on exit), then for each bundle (bundles/0, bundles/1, ...) run its
    `run_bundle.py` commands in turn, each in a process of its own (so each reports its own
    peak memory and time to first answer). `runs[i]` lists bundle i's argument lists. A
    command that fails ends that bundle's turn, not the others': every command's exit status
    is printed after it on stdout. After `limit_s` the board stops everything it started
    (`_watchdog`). Every value is quoted."""
    py = '"$HOME"/' + shlex.quote(python[2:]) if python.startswith("~/") else shlex.quote(python)
    lines = [
        f"command -v {py} >/dev/null 2>&1 || {{ echo 'vitedge-remote: no-python' >&2; exit {EXIT_NO_PYTHON}; }}",
        'd=$(mktemp -d "${TMPDIR:-/tmp}/vitedge.XXXXXX") || exit 1',
        *_watchdog(limit_s),
        'trap \'kill "$watchdog" 2>/dev/null; rm -rf "$d"\' EXIT',
        "trap 'exit 143' HUP INT TERM",
        'tar -xf - -C "$d" || { echo "vitedge-remote: unpacking the bundle failed" >&2; exit 1; }',
        'echo "vitedge-remote: running on $(uname -n) ($(uname -m))" >&2',
        f'run() {{ "$@"; s=$?; echo "{STATUS_MARK}$s"; return $s; }}',
    ]
    for number, commands in enumerate(runs):
        steps = " && ".join(f"run {py} run_bundle.py {' '.join(_shell_arg(a) for a in args)}" for args in commands)
        mark = f"{BUNDLE_MARK}{number + 1}/{len(runs)}"
        lines += [f'echo "{mark}"; echo "{mark}" >&2', f'cd "$d/bundles/{number}" && {{ {steps}; }}']
    return "\n".join([*lines, "exit 0"]) + "\n"


def _ssh_error(stderr: str, target: SshTarget, *, known_hosts: Path | None, connect_timeout: float) -> VitedgeError:
    """OpenSSH's exit 255: name the cause from its (stable) messages."""
    where = f"{target.host}:{target.port or 22}"
    key_entry = f"[{target.host}]:{target.port}" if target.port else target.host
    hosts_file = str(known_hosts) if known_hosts else "~/.ssh/known_hosts"
    if (
        "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr
        or "has changed and you have requested strict checking" in stderr
    ):
        return VitedgeError(
            f"the host key of {where} has CHANGED since it was recorded in {hosts_file}: refusing to connect (someone may be intercepting, or the board was reinstalled)",
            f"if you know the board was reinstalled: ssh-keygen -R {shlex.quote(key_entry)} -f {shlex.quote(hosts_file)}, then retry with --accept-new-host-key",
        )
    if "Host key verification failed" in stderr:
        return VitedgeError(
            f"the host key of {where} is not in {hosts_file}",
            "check the board's fingerprint, then retry with --accept-new-host-key (or add it with ssh-keyscan)",
        )
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return VitedgeError(
            f"{where} refused the login ({_last_line(stderr)})",
            "pass --identity KEY and put KEY.pub in the board's ~/.ssh/authorized_keys (ssh-copy-id does it)",
        )
    if "Connection refused" in stderr:
        return VitedgeError(
            f"cannot connect to {where}: connection refused",
            "is the board on and its SSH server running on that port? (sudo systemctl enable --now ssh)",
        )
    if "timed out" in stderr:
        return VitedgeError(
            f"cannot connect to {where}: no answer within {connect_timeout:g} s",
            "check the address, the network, and that the board is on",
        )
    if any(
        s in stderr
        for s in (
            "No route to host",
            "Network is unreachable",
            "Could not resolve hostname",
            "Name or service not known",
        )
    ):
        return VitedgeError(
            f"cannot reach {where}: {_last_line(stderr)}", "check the host name or address and the network"
        )
    return VitedgeError(
        f"ssh to {where} failed: {_last_line(stderr) or 'no message'}",
        "try `ssh` to the board by hand to see what is wrong",
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _pip_command(python: str, bundle: Path) -> str:
    """The pip line for the board, from the bundle's requirements.txt (its option lines, such
    as an extra index, become options of the command)."""
    lines = [
        line.strip()
        for line in (bundle / REQUIREMENTS).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packages = [shlex.quote(line) for line in lines if not line.startswith("-")]
    options = [" ".join(shlex.quote(part) for part in line.split()) for line in lines if line.startswith("-")]
    return f"{shlex.quote(python)} -m pip install {' '.join(packages + options)}"


def _send_tar(stream, bundles: list[Path], data: Path | None, errors: list[BaseException]) -> None:
    """Write bundles/0, bundles/1, ... (and data/) as a tar stream into ssh's stdin. File names
    go inside the archive, never onto a command line. A closed pipe means the board stopped
    reading (it reported why on stderr), so that is not an error here."""
    try:
        with tarfile.open(fileobj=stream, mode="w|") as archive:
            for number, bundle in enumerate(bundles):
                archive.add(bundle, arcname=f"bundles/{number}")
            if data is not None:
                archive.add(data, arcname="data")
    except (BrokenPipeError, ConnectionResetError):
        pass
    except BaseException as exc:  # noqa: BLE001 - reported by the caller, after ssh ends
        errors.append(exc)
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _read_lines(stream, sink: list[str], on_progress: Callable[[str], None] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        sink.append(line)
        if on_progress and line.startswith(PROGRESS_PREFIXES):
            on_progress(line)


def run_ssh(
    argv: list[str],
    *,
    bundles: list[Path],
    data: Path | None,
    run_timeout: float,
    on_progress: Callable[[str], None] | None,
) -> tuple[int | None, str, str]:
    """Run ssh with the tar on stdin; stream stderr lines; (exit code, stdout, stderr). The
    board stops itself at `run_timeout`; if ssh has not ended `CLIENT_GRACE_S` later it is
    killed and the exit code is None (what arrived until then is kept)."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise VitedgeError(
            "no `ssh` client on this machine", "install OpenSSH (apt-get install openssh-client)"
        ) from None
    out_lines: list[str] = []
    err_lines: list[str] = []
    send_errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_send_tar, args=(process.stdin, bundles, data, send_errors), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stdout, out_lines, None), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stderr, err_lines, on_progress), daemon=True),
    ]
    for thread in threads:
        thread.start()
    code: int | None
    try:
        code = process.wait(timeout=run_timeout + CLIENT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    except BaseException:
        process.kill()
        process.wait()
        raise
    for thread in threads:
        thread.join(timeout=10)
    if send_errors and code is not None:
        raise send_errors[0]
    return code, "\n".join(out_lines), "\n".join(err_lines)


def _out_of_time(
    stdout: str,
    outputs: list[list[str]],
    expected: int,
    ssh_target: SshTarget,
    run_timeout: float,
    *,
    board_stopped: bool,
) -> list[dict[str, Any] | None]:
    """After the limit: None for each bundle that finished (its results, or its own error,
    stand), an error for the one cut short and for each that never started. The board marks
    each bundle as it starts on `stdout`; `outputs` are its lines split by bundle (`_sections`).
    One finished when its `expected` commands all reported their exit status, or one failed
    (which ends its turn)."""
    started = {
        int(line[len(BUNDLE_MARK) :].split("/")[0]) - 1 for line in stdout.splitlines() if line.startswith(BUNDLE_MARK)
    }
    statuses = [[int(line[len(STATUS_MARK) :]) for line in lines if line.startswith(STATUS_MARK)] for lines in outputs]
    hint = (
        f"raise --board-timeout (now {run_timeout:g} s), or time fewer batch sizes, "
        "fewer --seconds, or fewer images (--samples)"
    )
    stopped = (
        "the board stopped it"
        if board_stopped
        else f"the board did not answer for {CLIENT_GRACE_S:g} s more, so ssh was closed (it may still be running there)"
    )
    errors: list[dict[str, Any] | None] = []
    for number, codes in enumerate(statuses):
        if number in started and (len(codes) >= expected or any(codes)):
            errors.append(None)
        elif number in started:
            message = f"{ssh_target}: did not finish within the {run_timeout:g} s limit: {stopped}"
            errors.append({"error": VitedgeError(message, hint)})
        else:
            message = f"{ssh_target}: not run: the {run_timeout:g} s limit passed before its turn ({stopped})"
            errors.append({"error": VitedgeError(message, hint)})
    return errors


def _session_error(
    code: int, stderr: str, ssh_target: SshTarget, python: str, known_hosts: Path | None, connect_timeout: float
) -> VitedgeError | None:
    """Why the whole SSH session failed (ssh itself, no Python there, the script), or None."""
    if code == 255:
        return _ssh_error(stderr, ssh_target, known_hosts=known_hosts, connect_timeout=connect_timeout)
    if code == EXIT_NO_PYTHON and "vitedge-remote: no-python" in stderr:
        return VitedgeError(
            f"{ssh_target} has no {python!r} on its PATH",
            "install it there (sudo apt install python3), or name the board's interpreter with --python /path/to/python3",
        )
    if code != 0:
        return VitedgeError(
            f"{ssh_target}: the board's script failed (exit {code}): {_last_line(stderr) or 'no message'}",
            "try `ssh` to the board by hand to see what is wrong",
        )
    return None


def _sections(text: str, count: int) -> list[list[str]]:
    """The lines of the board's stdout or stderr, split by bundle (the script marks each)."""
    sections: list[list[str]] = [[] for _ in range(count)]
    current = None
    for line in text.splitlines():
        if line.startswith(BUNDLE_MARK):
            current = int(line[len(BUNDLE_MARK) :].split("/")[0]) - 1
        elif current is not None:
            sections[current].append(line)
    return sections


def _bundle_result(
    stdout: list[str], stderr: list[str], expected: int, ssh_target: SshTarget, python: str, bundle: Path
) -> dict[str, Any]:
    """One bundle's JSON results, or {"error": VitedgeError} saying why it has none."""
    results = [json.loads(line) for line in stdout if line.startswith("{")]
    statuses = [int(line[len(STATUS_MARK) :]) for line in stdout if line.startswith(STATUS_MARK)]
    failed = next((code for code in statuses if code != 0), None)
    if failed == EXIT_NO_RUNTIME:
        missing = _board_error("\n".join(stderr)).split(": run `")[0]  # its own pip line names a temp folder
        return {
            "error": VitedgeError(
                f"{ssh_target}: {missing}",
                f"on the board run: {_pip_command(python, bundle)}  (on Raspberry Pi OS inside a venv: python3 -m venv ~/vitedge-env, then use --python ~/vitedge-env/bin/python)",
            )
        }
    if failed == EXIT_KILLED:
        return {
            "error": VitedgeError(
                f"{ssh_target}: the bundle was killed on the board (exit {failed}: SIGKILL, most often its "
                "out-of-memory killer)",
                "time smaller batches (--batch 1,8), or free the board's memory; `dmesg` there names the killer",
            )
        }
    if failed is not None:
        return {
            "error": VitedgeError(
                f"{ssh_target}: the bundle failed (exit {failed}): {_board_error(chr(10).join(stderr))}",
                f"copy the bundle to the board and run `{python} run_bundle.py bench` there to see more",
            )
        }
    if len(results) < expected:
        return {
            "error": VitedgeError(
                f"{ssh_target}: the board printed no result",
                f"its output ended with: {_last_line(chr(10).join(stderr)) or _last_line(chr(10).join(stdout)) or 'nothing'}",
            )
        }
    benches = [r for r in results if "latency_ms" in r]
    scored = next((r for r in results if "top1" in r), None)
    return {"benches": benches, "eval": scored}


def checked_board_request(
    target: str, batches: tuple[int, ...], seconds: float, threads: int | None, run_timeout: float | None
) -> tuple[SshTarget, float]:
    """The board and its time limit (RUN_TIMEOUT_S when None), or the one-line error of a
    request that cannot run: checked before anything is prepared for the board."""
    ssh_target = parse_target(target)
    if not batches or min(batches) < 1 or seconds <= 0 or (threads is not None and threads < 1):
        raise VitedgeError("batch and threads must be ≥ 1 and seconds > 0", "e.g. --batch 1 --seconds 10")
    run_timeout = RUN_TIMEOUT_S if run_timeout is None else run_timeout
    if not run_timeout > 0:
        raise VitedgeError(f"the board's time limit must be > 0 s, not {run_timeout:g}", "e.g. --board-timeout 1800")
    return ssh_target, run_timeout


def bench_board(
    sources: list[Path],
    target: str,
    *,
    identity: Path | None = None,
    accept_new_host_key: bool = False,
    known_hosts: Path | None = None,
    connect_timeout: float = 10,
    run_timeout: float | None = None,
    batches: tuple[int, ...] = (1,),
    seconds: float = 10.0,
    threads: int | None = None,
    data: Path | None = None,
    logits: bool = False,
    python: str = "python3",
    on_progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark several artifacts (each bundled on the fly) or bundles on the board at
    `target` in one SSH session, one after another, each batch size and the scoring of `data`
    (an ImageFolder; with `logits`, every image's logits too) in a process of its own. One
    entry per source, in order: its bench results (one per batch size), its eval result, the
    manifest, or `error` (a VitedgeError) when that bundle could not run there (a runtime the
    board lacks does not stop the others; past `run_timeout`, RUN_TIMEOUT_S when None, those
    that finished keep their results)."""
    if not sources:
        raise VitedgeError("nothing to benchmark", "name one or more artifact folders")
    ssh_target, run_timeout = checked_board_request(target, batches, seconds, threads, run_timeout)
    if data is not None and not Path(data).is_dir():
        raise VitedgeError(f"--data {data} is not a folder", "pass an ImageFolder: one subfolder of images per class")
    argv = ssh_command(
        ssh_target,
        identity=identity,
        known_hosts=known_hosts,
        accept_new_host_key=accept_new_host_key,
        connect_timeout=connect_timeout,
    )
    timing = ["--seconds", f"{seconds:g}"] + (["--threads", str(threads)] if threads else [])
    commands = [["bench", "--json", "--batch", str(batch), *timing] for batch in batches]
    if data is not None:
        commands.append(
            ["eval", DATA_PLACEHOLDER, "--json", *(["--threads", str(threads)] if threads else [])]
            + (["--logits"] if logits else [])
        )
    with scratch_folder("vitedge-remote-") as scratch:
        bundles = []
        for number, source in enumerate(Path(s) for s in sources):
            if is_bundle(source):
                verify_checksums(source, read_manifest(source))
                bundles.append(source)
            else:
                bundles.append(build_bundle(source, Path(scratch) / f"bundle-{number}"))
        manifests = [read_manifest(bundle) for bundle in bundles]
        script = remote_script(python, [commands for _ in bundles], run_timeout)
        started = time.monotonic()
        code, stdout, stderr = run_ssh(
            [*argv, "sh -c " + shlex.quote(script)],
            bundles=bundles,
            data=Path(data) if data else None,
            run_timeout=run_timeout,
            on_progress=on_progress,
        )
        outputs, errors = _sections(stdout, len(bundles)), _sections(stderr, len(bundles))
        board_stopped = code == 143 and TIMEOUT_MARK in stderr
        if code is None or board_stopped:
            late = _out_of_time(stdout, outputs, len(commands), ssh_target, run_timeout, board_stopped=board_stopped)
        else:
            failure = _session_error(code, stderr, ssh_target, python, known_hosts, connect_timeout)
            if failure:
                raise failure
            late = [None] * len(bundles)
        entries = [
            {
                "source": str(source),
                "manifest": manifest,
                **(cut or _bundle_result(out, err, len(commands), ssh_target, python, bundle)),
            }
            for source, manifest, bundle, out, err, cut in zip(
                sources, manifests, bundles, outputs, errors, late, strict=True
            )
        ]
    elapsed = time.monotonic() - started
    return [{**entry, "target": str(ssh_target), "wall_s": elapsed} for entry in entries]


def bench_remote(
    artifact_or_bundle: Path,
    target: str,
    *,
    identity: Path | None = None,
    accept_new_host_key: bool = False,
    known_hosts: Path | None = None,
    connect_timeout: float = 10,
    run_timeout: float | None = None,
    batch: int = 1,
    seconds: float = 10.0,
    threads: int | None = None,
    data: Path | None = None,
    python: str = "python3",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark one artifact (bundled on the fly) or bundle on the board at `target`
    (`ssh://user@host[:port]`): it/s and latency percentiles at `batch`, top-1 on `data`
    (an ImageFolder) if given, and the board's platform, CPU and runtime versions."""
    entry = bench_board(
        [Path(artifact_or_bundle)],
        target,
        identity=identity,
        accept_new_host_key=accept_new_host_key,
        known_hosts=known_hosts,
        connect_timeout=connect_timeout,
        run_timeout=run_timeout,
        batches=(batch,),
        seconds=seconds,
        threads=threads,
        data=data,
        python=python,
        on_progress=on_progress,
    )[0]
    if "error" in entry:
        raise entry["error"]
    bench, scored, manifest = entry["benches"][0], entry["eval"], entry["manifest"]
    return {
        "target": entry["target"],
        "runtime": bench["runtime"],
        "device": entry["target"],
        "format": manifest["format"],
        "precision": manifest["precision"],
        "batch": bench["batch"],
        "threads": bench["threads"],
        "detail": bench.get("detail", {}),  # what the board's runtime reports (its thread count)
        "cpu_per_wall": bench.get("cpu_per_wall"),
        "runs": bench["runs"],
        "it_per_s": bench["it_per_s"],
        "latency_ms": bench["latency_ms"],
        "first_inference_ms": bench.get("first_inference_ms"),
        "peak_rss_mb": bench.get("peak_rss_mb"),
        "top1": scored["top1"] if scored else None,
        "eval_count": scored["count"] if scored else None,
        "board": bench["board"],
        "wall_s": entry["wall_s"],
    }


def _board_error(stderr: str) -> str:
    """run_bundle.py's own one-line error, else the last thing the board said."""
    errors = [line[len("error: ") :] for line in stderr.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else _last_line(stderr) or "no message"
