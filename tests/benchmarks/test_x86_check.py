"""benchmarks/x86_check.py: a bundle run as an emulated older x86 CPU agrees with this machine
within its precision's bounds and is named with that CPU's ISA; the check fails when it is not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.cpus import EMULATED_X86, needs_qemu_x86, x86_model_below_this_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import x86_check  # noqa: E402

pytestmark = needs_qemu_x86


def test_an_int8_bundle_on_an_emulated_older_cpu_passes_and_is_named(default_int8_artifact, tmp_path, monkeypatch):
    model = x86_model_below_this_cpu()
    if model is None:
        pytest.skip("this CPU has no extension numpy probes beyond an SSE4.2 Nehalem's: nothing tells emulation")
    out = tmp_path / "x86.json"
    argv = ["--artifact", str(default_int8_artifact), "--cpus", model, "--images", "4", "--out", str(out)]
    assert x86_check.main(argv) == 0
    seen = json.loads(out.read_text())[model]
    assert seen["name_checked"] and seen["emulated"] and seen["isa"] == list(EMULATED_X86[model])
    assert json.loads(out.read_text())["problems"] == []
    (name, logits), *others = json.loads(out.read_text())["logits"].items()  # each comparison's figures
    assert not others and name == f"{default_int8_artifact.name} on {model}"
    assert logits["samples"] == 4 and logits["passed"] and logits["cosine_mean"] >= 0.995, logits
    # expecting another ISA than the emulated CPU reports makes the check fail
    monkeypatch.setitem(x86_check.CPUS, model, ("no such extension",))
    assert x86_check.main(argv) == 1
    assert "not the emulated CPU's" in json.loads(out.read_text())["problems"][0]
