"""x86 CPUs this machine is not: run a bundle's `run_bundle.py classify`, `eval` and `info` under
qemu-x86_64 user emulation as older x86 CPUs and compare with the same bundle here. Haswell
(AVX2, FMA; no AVX-512, no VNNI) is the CPU on which ONNX Runtime's u8×s8 int8 products add
pairs in 16 bits and can saturate; Nehalem (SSE4.2) is the least OpenVINO's CPU plugin runs on.
Correctness only: emulated speed means nothing.

    python benchmarks/x86_check.py [--artifact ARTIFACT ...] [--cpus Haswell-v4,Nehalem-v2] [--qemu QEMU] [--out JSON]

Exit 0: for every artifact and CPU the emulated logits meet that artifact's own parity bounds
against this machine's (exporter.parity: fp32 max |Δ| <= 1e-4; int8 mean cosine >= 0.995 and
top-1 agreement >= 97%, since the int8 kernels differ by CPU and neither is the reference), the
ImageFolder top-1 of both is within the paired noise, and vitedge names the emulated CPU as
emulated with that CPU's ISA (its /proc/cpuinfo is this machine's, passed through by qemu);
1: a mismatch; 2: it cannot run here. Without --artifact it exports the embedded
vitedge-cifar10 model as `arm64_check.py` does (ONNX fp32, int8 dynamic and static, OpenVINO
fp32 and int8, calibrated on cifar10:train from $VITEDGE_DATA or the cache). Needs an x86
machine and qemu-user (`apt-get install qemu-user`); no root, no download: the emulated process
is this Python with its own packages.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arm64_check import (  # noqa: E402 - beside this script
    compare,
    compare_detail,
    compare_eval,
    default_artifacts,
    finish,
    run_bundle,
    sample_images,
    say,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/support/cpus.py: the emulated CPU models the tests use
from tests.support.cpus import EMULATED_X86 as CPUS  # noqa: E402
from tests.support.cpus import emulation_told  # noqa: E402


def emulated(qemu: str, cpu: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([qemu, "-cpu", cpu, sys.executable, *args], capture_output=True, text=True, timeout=1800)


def board_named(bundle: Path, qemu: str, cpu: str, here) -> tuple[dict, list[str]]:
    """How vitedge reads the board the bundle reports under emulation, and what is wrong with
    it. Where `here` (this machine's CpuInfo) has nothing numpy probes beyond `cpu`, emulation
    cannot be told (an emulated Haswell on an AVX2-only host looks like the host): the name
    is then not checked."""
    from vitedge.workflows.board import board_facts

    done = emulated(qemu, cpu, [str(bundle / "run_bundle.py"), "info", "--json"])
    if done.returncode != 0:
        return {}, [f"info on {cpu}: exit {done.returncode}: {done.stderr.strip()[-300:]}"]
    _, machine = board_facts(json.loads(done.stdout)["board"])
    seen = {k: machine[k] for k in ("cpu", "isa", "int8_dot", "emulated")}
    told = emulation_told(cpu, here)
    seen["name_checked"] = told
    say(f"{cpu} as vitedge names it: {json.dumps(seen)}")
    if not told:
        say(f"{cpu}: this CPU has no extension numpy probes beyond it, so emulation cannot be told; name not checked")
        return seen, []
    problems = [] if machine["emulated"] else [f"{cpu}: not named as emulated ({machine['cpu']})"]
    if machine["isa"] != list(CPUS[cpu]):
        problems.append(f"{cpu}: ISA {machine['isa']}, not the emulated CPU's {list(CPUS[cpu])}")
    return seen, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, action="append", help="artifact folder(s) (default: vitedge-cifar10)")
    parser.add_argument("--cpus", default=",".join(CPUS), help=f"qemu CPU models: {', '.join(CPUS)}")
    parser.add_argument("--qemu", default=shutil.which("qemu-x86_64-static") or "qemu-x86_64")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--out", type=Path, help="JSON of what was seen (each CPU, each comparison's figures)")
    args = parser.parse_args(argv)
    qemu = shutil.which(args.qemu)
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    if platform.machine() not in ("x86_64", "AMD64"):
        say(f"x86 check cannot run here: this machine is {platform.machine()}, and the emulated Python is this one")
        return 2
    if qemu is None:
        say(f"x86 check cannot run here: {args.qemu} is missing (apt-get install qemu-user)")
        return 2
    if not set(cpus) <= set(CPUS):
        say(f"unknown CPU(s) in --cpus {args.cpus}; choose from {', '.join(CPUS)}")
        return 2
    from vitedge.core.cpu import probe_cpu
    from vitedge.targets.bundle_build import build_bundle

    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    here = probe_cpu()
    say(f"here: {here.model}, ISA {here.isa_text}; emulating with {version[0] if version else qemu}")
    started = time.monotonic()
    problems: list[str] = []
    seen: dict = {"here": {"cpu": here.model, "isa": list(here.isa)}, "qemu": version[0] if version else qemu}
    with tempfile.TemporaryDirectory(prefix="x86-check-") as scratch:
        scratch = Path(scratch)
        images, tree = sample_images(scratch, args.images)
        for artifact in args.artifact or default_artifacts(scratch / "artifacts"):
            bundle = build_bundle(artifact, scratch / "bundles" / artifact.name)
            native = run_bundle(
                bundle, images, tree, lambda a: subprocess.run([sys.executable, *a], capture_output=True, text=True)
            )
            if isinstance(native, str):
                problems.append(f"{artifact.name} here: {native}")
                continue
            for cpu in cpus:
                if cpu not in seen:
                    seen[cpu], named = board_named(bundle, qemu, cpu, here)
                    problems += named
                there = run_bundle(bundle, images, tree, lambda a, c=cpu: emulated(qemu, c, a))
                if isinstance(there, str):
                    problems.append(f"{artifact.name} on {cpu}: {there}")
                    continue
                name = f"{artifact.name} on {cpu}"
                problems += compare(name, native[0], there[0], seen.setdefault("logits", {}))
                problems += compare_eval(name, native[1], there[1], there=cpu)
                problems += compare_detail(name, native[1], there[1], there=cpu)
    return finish("x86 check", problems, seen, args.out, label="MISMATCH", started=started)


if __name__ == "__main__":
    sys.exit(main())
