"""arm64 board over SSH: `vitedge bench --target ssh://…`, the whole user path (bundle, tar over
ssh, the board's own Python, results and parity back), against an emulated Raspberry Pi 5 behind
a real OpenSSH server on 127.0.0.1. Correctness only: emulated speed means nothing, and the check
is that vitedge says so.

    sudo python benchmarks/arm64_ssh_check.py [--artifact OPENVINO_ARTIFACT] [--work ~/.cache/vitedge/arm64]

The board's "python3" is Debian's arm64 Python with the aarch64 numpy, Pillow and OpenVINO wheels
(set up as `arm64_check.py` sets them up, in the same --work folder) under qemu-aarch64 user
emulation as a Cortex-A76, with /proc/cpuinfo left as that qemu shows it, as qemu-user and arm64
containers on an x86 machine do: qemu 7.2 (Debian bookworm's) passes the host's x86 text through,
newer ones (`--qemu`, e.g. Debian trixie's 10.0) write an ARM one for the emulated CPU.
(ONNX Runtime's cpuinfo library crashes on the x86 text at import, so the artifact is
OpenVINO's.) Two runs:

1. `--samples 100 --batch 1`: parity passes on the board; the board's CPU is named as emulated
   (from the x86 text, or from the kernel's x86_64 architecture where the text is ARM), with the
   ISA of the emulated CPU (NEON, fp16, dotprod: a Cortex-A76) read from its hwcaps, not the
   host's; vitedge warns that the speeds are the emulator's and keeps none of them.
2. `--samples 1000 --board-timeout 15`: exit 2 with the one-line time-limit error, the board
   stopped by itself (the run ends well before the client's own grace period), and nothing of
   the run left on the board: no temp folder, no emulated process.

Exit 0: both hold; 1: one does not (printed); 2: it cannot run here. Needs what
`arm64_check.py` needs (root, debootstrap, qemu-user-static, the Debian mirror and PyPI on the
first run) and an `sshd` (openssh-server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arm64_check import arm64_python, board_options, board_site, cannot_run, finish, openvino_int8, say  # noqa: E402 - beside this script

REPO = Path(__file__).resolve().parents[1]
QEMU_CPU = "cortex-a76"  # a Raspberry Pi 5
TIME_LIMIT_S = 15


def board_python(folder: Path, python: Path, site: Path, qemu: str) -> Path:
    """An executable the SSH session runs as the board's Python: the arm64 one, emulated."""
    wrapper = folder / "board-python3"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec env -i PATH=/usr/bin:/bin HOME="$HOME" PYTHONPATH={site} '
        f'{qemu} -cpu {QEMU_CPU} -L {python.parents[2]} {python} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def leftovers(before: set[Path], qemu: str) -> list[str]:
    """What the run left on the board (the same machine here): temp folders and qemu processes."""
    folders = sorted(str(p) for p in set(Path(tempfile.gettempdir()).glob("vitedge.*")) - before)
    found = subprocess.run(["pgrep", "-fa", f"{qemu} -cpu {QEMU_CPU}"], capture_output=True, text=True)
    return folders + [line for line in found.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="an OpenVINO artifact (default: vitedge-cifar10 int8)")
    board_options(parser)
    parser.add_argument("--out", type=Path, help="JSON of what was seen")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))  # tests/support/sshd.py: the loopback sshd the tests use
    from tests.support.sshd import running_sshd, unavailable_reason

    reason = cannot_run(args.qemu) or unavailable_reason()
    if reason:
        say(f"arm64 SSH check cannot run here: {reason}")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    python = arm64_python(args.work, args.mirror)
    qemu = shutil.which(args.qemu) or args.qemu
    site = board_site(args.work, "pi5", python, "openvino", "", qemu)
    if isinstance(site, str):
        say(f"arm64 SSH check cannot run here: {site}")
        return 2
    problems: list[str] = []
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    seen: dict[str, object] = {"qemu": version[0] if version else qemu, "qemu_cpu": QEMU_CPU}
    with tempfile.TemporaryDirectory(prefix="arm64-ssh-check-") as scratch:
        scratch = Path(scratch)
        artifact = args.artifact or openvino_int8(scratch / "artifacts")
        wrapper = board_python(scratch, python, site, qemu)
        before = set(Path(tempfile.gettempdir()).glob("vitedge.*"))
        with running_sshd(scratch / "sshd") as server:
            base = [
                "vitedge", "bench", str(artifact),
                "--target", f"ssh://{server.user}@127.0.0.1:{server.port}",
                "--identity", str(server.identity), "--known-hosts", str(server.known_hosts),
                "--python", str(wrapper), "--batch", "1", "--seconds", "3",
            ]  # fmt: skip
            env = {**os.environ, "COLUMNS": "200"}
            say("$ " + " ".join(base + ["--samples", "100", "--json"]))
            done = subprocess.run(base + ["--samples", "100", "--json"], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                problems.append(f"the bench failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            else:
                row = json.loads(done.stdout)[0]
                measured, parity = row["measurement"], row.get("parity") or {}
                machine = measured.get("machine") or {}
                seen["bench"] = {
                    "cpu": machine.get("cpu"),
                    "isa": machine.get("isa"),
                    "computes": measured.get("execution_precision"),
                    "products": (measured.get("detail") or {}).get("products"),
                    "kernels": (measured.get("detail") or {}).get("kernels"),
                    "timed_on": machine.get("timed_on"),
                    "parity_passed": parity.get("passed"),
                    "cosine_mean": parity.get("cosine_mean"),
                    "top1": (measured.get("accuracy") or {}).get("top1"),
                    "warned_emulated": "its it/s and latency are the emulator's" in done.stderr,
                }
                say(f"board as vitedge saw it: {json.dumps(seen['bench'])}")
                if "emulated" not in str(machine.get("cpu", "")):
                    problems.append(f"the board's CPU is not named as emulated: {machine.get('cpu')!r}")
                if machine.get("isa") != ["NEON", "fp16", "dotprod"]:
                    problems.append(
                        f"the board's ISA is not the Cortex-A76's (NEON, fp16, dotprod): {machine.get('isa')}"
                    )
                if not seen["bench"]["kernels"]:
                    problems.append("the board did not report which OpenVINO kernels ran")
                if not seen["bench"]["parity_passed"]:
                    problems.append(f"parity failed on the board: cosine {seen['bench']['cosine_mean']}")
                if not seen["bench"]["warned_emulated"]:
                    problems.append("no warning that the speeds are the emulator's")
            late = base + ["--samples", "1000", "--board-timeout", str(TIME_LIMIT_S)]
            say("$ " + " ".join(late))
            started = time.monotonic()
            done = subprocess.run(late, capture_output=True, text=True, env=env)
            took = time.monotonic() - started
            error = next((line for line in done.stderr.splitlines() if line.startswith("error: ")), "")
            seen["timeout"] = {"exit": done.returncode, "seconds": round(took, 1), "error": error}
            say(f"time limit run: exit {done.returncode} after {took:.1f} s: {error}")
            if done.returncode != 2 or not error.endswith(
                f"did not finish within the {TIME_LIMIT_S} s limit: the board stopped it"
            ):
                problems.append(
                    f"the time-limit run did not end as the board stopping itself: {done.stderr.strip()[-500:]}"
                )
        left = leftovers(before, qemu)
        seen["left_on_board"] = left
        if left:
            problems.append(f"left on the board: {left}")
    return finish("arm64 SSH check", problems, seen, args.out, label="PROBLEM")


if __name__ == "__main__":
    sys.exit(main())
