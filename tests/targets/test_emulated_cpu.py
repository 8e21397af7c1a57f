"""What a board's bundle says of an x86 CPU that lacks the host's features, whatever CPU runs the
suite: the bundle runs under qemu-x86_64 as an older CPU (a Haswell: AVX2 and FMA, no AVX-512,
VNNI or AMX; on a host with no more than that, a Nehalem: SSE4.2), while /proc/cpuinfo stays the
host's. vitedge must name that CPU as emulated, claim only what it can run, and so give the
advice of a CPU whose u8×s8 int8 saturates. And what a board's bundle says when its environment
caps oneDNN (OpenVINO's CPU kernels) below its CPU."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.boards import clean_env
from tests.support.cpus import EMULATED_X86, QEMU_X86, needs_qemu_x86, x86_model_below_this_cpu
from vitedge.core.cpu import arch_family, probe_cpu
from vitedge.targets.bundle_build import build_bundle
from vitedge.workflows.board import board_facts


def board_seen(bundle, python, cwd, *emulate: str, env: dict[str, str] | None = None) -> dict:
    """The bundle's `info` run by `python` (under `emulate`, a qemu command line, if given),
    with `env` added to its environment."""
    done = subprocess.run(
        [*emulate, str(python), str(bundle / "run_bundle.py"), "info", "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["board"]


@needs_qemu_x86
def test_an_emulated_older_cpu_is_named_and_claims_only_what_it_runs(onnx_artifact, bundle_python, tmp_path):
    model = x86_model_below_this_cpu()
    if model is None:
        pytest.skip("this CPU has no extension numpy probes beyond an SSE4.2 Nehalem's: nothing tells emulation")
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    here = board_seen(bundle, bundle_python, tmp_path)
    cpu, machine = board_facts(here)
    assert not machine["emulated"] and cpu.isa == probe_cpu().isa  # natively: what vitedge sees here

    there = board_seen(bundle, bundle_python, tmp_path, QEMU_X86, "-cpu", model)
    assert there["cpuinfo"] == here["cpuinfo"]  # qemu passes the host's text through
    assert not there["cpu_features"]["AVX512F"] and there["cpu_features"]["AVX2"] == ("AVX2" in EMULATED_X86[model])
    cpu, machine = board_facts(there)
    assert machine["emulated"] and machine["cpu"].startswith("x86_64 CPU, emulated")
    assert machine["isa"] == list(EMULATED_X86[model]) and machine["int8_dot"] == []
    assert cpu.u8s8_saturates and not cpu.bf16  # the int8 and bf16 advice of the CPU that runs


def test_a_boards_onednn_cap_is_reported_and_told(onnx_artifact, bundle_python, tmp_path):
    """A board whose environment sets ONEDNN_MAX_CPU_ISA: its bundle reports the cap, and
    vitedge keeps it where it rules out part of the board's ISA (any x86 CPU with AVX2 or more,
    capped at SSE4.1; never an ARM one), so its OpenVINO speeds are not kept as that CPU's."""
    bundle = build_bundle(onnx_artifact, tmp_path / "bundle")
    seen = board_seen(bundle, bundle_python, tmp_path, env={"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert seen["onednn_cap"] == "ONEDNN_MAX_CPU_ISA=SSE41"
    cpu, machine = board_facts(seen)
    binds = arch_family(cpu.arch) == "x86" and bool(cpu.isa)
    assert machine["onednn_cap"] == ("ONEDNN_MAX_CPU_ISA=SSE41" if binds else None)
    assert cpu.onednn_denied == (cpu.isa if binds else ())
    assert board_facts(board_seen(bundle, bundle_python, tmp_path))[1]["onednn_cap"] is None
