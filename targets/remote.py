"""Benchmark a board over SSH: copy the bundle there, run `run_bundle.py` with the board's own
Python, stream its progress, and bring back one result row.

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
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import VitedgeError
from ..core.manifest import read_manifest, verify_checksums
from .bundle_build import REQUIREMENTS, build_bundle, is_bundle

EXIT_NO_PYTHON = 127
EXIT_NO_RUNTIME = 3  # run_bundle.py's exit code when numpy, Pillow or the runtime is missing
PROGRESS_PREFIXES = ("bench:", "eval:", "vitedge-remote:")
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


def remote_script(python: str, bench_args: list[str], with_data: bool) -> str:
    """The sh script the board runs: check Python, unpack the tar from stdin into a private
    temp folder (removed on exit), bench, then optionally eval. Every value is quoted."""
    py = '"$HOME"/' + shlex.quote(python[2:]) if python.startswith("~/") else shlex.quote(python)
    lines = [
        f"command -v {py} >/dev/null 2>&1 || {{ echo 'vitedge-remote: no-python' >&2; exit {EXIT_NO_PYTHON}; }}",
        'd=$(mktemp -d "${TMPDIR:-/tmp}/vitedge.XXXXXX") || exit 1',
        "trap 'rm -rf \"$d\"' EXIT",
        "trap 'exit 143' HUP INT TERM",
        'tar -xf - -C "$d" || { echo "vitedge-remote: unpacking the bundle failed" >&2; exit 1; }',
        'cd "$d/bundle" || exit 1',
        'echo "vitedge-remote: running on $(uname -n) ($(uname -m))" >&2',
        f"{py} run_bundle.py bench --json {' '.join(shlex.quote(a) for a in bench_args)} || exit $?",
    ]
    if with_data:
        lines.append(f'{py} run_bundle.py eval "$d/data" --json || exit $?')
    return "\n".join(lines) + "\n"


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
    packages = [
        line.strip()
        for line in (bundle / REQUIREMENTS).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return f"{shlex.quote(python)} -m pip install {' '.join(shlex.quote(p) for p in packages)}"


def _send_tar(stream, bundle: Path, data: Path | None, errors: list[BaseException]) -> None:
    """Write bundle/ (and data/) as a tar stream into ssh's stdin. File names go inside the
    archive, never onto a command line. A closed pipe means the board stopped reading (it
    reported why on stderr), so that is not an error here."""
    try:
        with tarfile.open(fileobj=stream, mode="w|") as archive:
            archive.add(bundle, arcname="bundle")
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
    argv: list[str], *, bundle: Path, data: Path | None, run_timeout: float, on_progress: Callable[[str], None] | None
) -> tuple[int, str, str]:
    """Run ssh with the tar on stdin; stream stderr lines; (exit code, stdout, stderr)."""
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
        threading.Thread(target=_send_tar, args=(process.stdin, bundle, data, send_errors), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stdout, out_lines, None), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stderr, err_lines, on_progress), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        code = process.wait(timeout=run_timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise VitedgeError(
            f"the board did not finish within {run_timeout:g} s (last: {_last_line(chr(10).join(err_lines)) or 'nothing'})",
            "raise --run-timeout, or lower --seconds / use fewer --data images",
        ) from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    for thread in threads:
        thread.join(timeout=10)
    if send_errors:
        raise send_errors[0]
    return code, "\n".join(out_lines), "\n".join(err_lines)


def bench_remote(
    artifact_or_bundle: Path,
    target: str,
    *,
    identity: Path | None = None,
    accept_new_host_key: bool = False,
    known_hosts: Path | None = None,
    connect_timeout: float = 10,
    run_timeout: float = 600,
    batch: int = 1,
    seconds: float = 10.0,
    threads: int | None = None,
    data: Path | None = None,
    python: str = "python3",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark an artifact (bundled on the fly) or a bundle on the board at `target`
    (`ssh://user@host[:port]`): it/s and latency percentiles at `batch`, top-1 on `data`
    (an ImageFolder) if given, and the board's platform, CPU and runtime versions."""
    ssh_target = parse_target(target)
    source = Path(artifact_or_bundle)
    if batch < 1 or seconds <= 0 or (threads is not None and threads < 1):
        raise VitedgeError("batch and threads must be ≥ 1 and seconds > 0", "e.g. --batch 1 --seconds 10")
    if data is not None and not Path(data).is_dir():
        raise VitedgeError(f"--data {data} is not a folder", "pass an ImageFolder: one subfolder of images per class")
    argv = ssh_command(
        ssh_target,
        identity=identity,
        known_hosts=known_hosts,
        accept_new_host_key=accept_new_host_key,
        connect_timeout=connect_timeout,
    )
    bench_args = ["--batch", str(batch), "--seconds", f"{seconds:g}"] + (["--threads", str(threads)] if threads else [])
    with tempfile.TemporaryDirectory(prefix="vitedge-remote-") as scratch:
        if is_bundle(source):
            bundle = source
            verify_checksums(bundle, read_manifest(bundle))
        else:
            bundle = build_bundle(source, Path(scratch) / "bundle")
        manifest = read_manifest(bundle)
        script = remote_script(python, bench_args, data is not None)
        started = time.monotonic()
        code, stdout, stderr = run_ssh(
            [*argv, "sh -c " + shlex.quote(script)],
            bundle=bundle,
            data=Path(data) if data else None,
            run_timeout=run_timeout,
            on_progress=on_progress,
        )
        pip = _pip_command(python, bundle)
    if code == 255:
        raise _ssh_error(stderr, ssh_target, known_hosts=known_hosts, connect_timeout=connect_timeout)
    if code == EXIT_NO_PYTHON and "vitedge-remote: no-python" in stderr:
        raise VitedgeError(
            f"{ssh_target} has no {python!r} on its PATH",
            "install it there (sudo apt install python3), or name the board's interpreter with --python /path/to/python3",
        )
    if code == EXIT_NO_RUNTIME:
        missing = _board_error(stderr).split(": run `")[0]  # its own pip line names a temp folder
        raise VitedgeError(
            f"{ssh_target}: {missing}",
            f"on the board run: {pip}  (on Raspberry Pi OS inside a venv: python3 -m venv ~/vitedge-env, then use --python ~/vitedge-env/bin/python)",
        )
    if code != 0:
        raise VitedgeError(
            f"{ssh_target}: the bundle failed (exit {code}): {_board_error(stderr)}",
            "copy the bundle to the board and run `python3 run_bundle.py bench` there to see more",
        )
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    bench = next((r for r in results if "latency_ms" in r), None)
    scored = next((r for r in results if "top1" in r), None)
    if bench is None or (data is not None and scored is None):
        raise VitedgeError(
            f"{ssh_target}: the board printed no result",
            f"its output ended with: {_last_line(stderr) or _last_line(stdout) or 'nothing'}",
        )
    return {
        "target": str(ssh_target),
        "runtime": bench["runtime"],
        "device": str(ssh_target),
        "format": manifest["format"],
        "precision": manifest["precision"],
        "batch": bench["batch"],
        "threads": bench["threads"],
        "detail": bench.get("detail", {}),  # what the board's runtime reports (its thread count)
        "cpu_per_wall": bench.get("cpu_per_wall"),
        "runs": bench["runs"],
        "it_per_s": bench["it_per_s"],
        "latency_ms": bench["latency_ms"],
        "top1": scored["top1"] if scored else None,
        "eval_count": scored["count"] if scored else None,
        "board": bench["board"],
        "wall_s": time.monotonic() - started,
    }


def _board_error(stderr: str) -> str:
    """run_bundle.py's own one-line error, else the last thing the board said."""
    errors = [line[len("error: ") :] for line in stderr.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else _last_line(stderr) or "no message"
