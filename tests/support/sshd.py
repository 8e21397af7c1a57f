"""A real OpenSSH server for tests: sshd (found by `find_sshd`) on 127.0.0.1 at a free high port, as
the current user, with throwaway host and client keys, so the remote target's whole path
(host-key checking, key auth, quoting, streaming, timeouts) runs against the real thing."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# sshd is rarely on a normal user's PATH: look there, then where distributions and Homebrew
# put it; $VITEDGE_SSHD names one explicitly.
SSHD_PLACES = (
    "/usr/sbin/sshd",
    "/usr/local/sbin/sshd",
    "/sbin/sshd",
    "/opt/homebrew/sbin/sshd",
    "/usr/lib/openssh/sshd",
)


def find_sshd() -> Path | None:
    """The OpenSSH server binary: $VITEDGE_SSHD, then PATH, then the usual sbin folders."""
    named = os.environ.get("VITEDGE_SSHD")
    candidates = [named] if named else [shutil.which("sshd"), *SSHD_PLACES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    identity: Path  # client private key that the server accepts
    known_hosts: Path  # holds exactly this server's host key
    host_public_key: str

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    """A passphrase-less ed25519 key pair; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, capture_output=True
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def unavailable_reason() -> str | None:
    if find_sshd() is None:
        named = os.environ.get("VITEDGE_SSHD")
        where = (
            f"$VITEDGE_SSHD={named} is not an executable"
            if named
            else f"no sshd on PATH or in {', '.join(SSHD_PLACES)}"
        )
        return f"{where} (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is absent (apt-get install openssh-client)"
    return None


def write_known_hosts(path: Path, host: str, port: int, public_key: str) -> Path:
    key_type, key = public_key.split()[:2]
    path.write_text(f"[{host}]:{port} {key_type} {key}\n")
    return path


@contextlib.contextmanager
def running_sshd(folder: Path, *, timeout: float = 10.0) -> Iterator[SshServer]:
    """Start sshd in the foreground (-D) under `folder`, wait until it accepts connections,
    yield how to reach it, and stop it (by its own pid) afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key = folder / "host_ed25519"
    host_public = keygen(host_key, "vitedge-test-host")
    identity = folder / "client_ed25519"
    (folder / "authorized_keys").write_text(keygen(identity, "vitedge-test-client") + "\n")
    port = free_port()
    user = getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"AllowUsers {user}",
                f"PermitRootLogin {'yes' if os.geteuid() == 0 else 'no'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "StrictModes no",
                "UsePAM no",
                "X11Forwarding no",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log = (folder / "sshd.log").open("w")
    sshd = find_sshd()
    assert sshd is not None, unavailable_reason()
    process = subprocess.Popen(
        [str(sshd), "-D", "-e", "-f", str(config), "-p", str(port), "-h", str(host_key)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {process.returncode}: {(folder / 'sshd.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")
            time.sleep(0.05)
        known_hosts = write_known_hosts(folder / "known_hosts", "127.0.0.1", port, host_public)
        yield SshServer("127.0.0.1", port, user, identity, known_hosts, host_public)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
