"""benchmarks/x86_check.py: a bundle run as an emulated Haswell agrees with this machine within
its precision's bounds and is named with the Haswell's ISA; the check fails when it is not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.cpus import needs_qemu_x86

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import x86_check  # noqa: E402

pytestmark = needs_qemu_x86


def test_an_int8_bundle_on_an_emulated_haswell_passes_and_is_named(default_int8_artifact, tmp_path, monkeypatch):
    out = tmp_path / "x86.json"
    argv = ["--artifact", str(default_int8_artifact), "--cpus", "Haswell-v4", "--images", "4", "--out", str(out)]
    assert x86_check.main(argv) == 0
    seen = json.loads(out.read_text())
    assert seen["problems"] == [] and seen["Haswell-v4"]["emulated"] and seen["Haswell-v4"]["isa"] == ["AVX2", "FMA"]
    # expecting another ISA than the emulated CPU reports makes the check fail
    monkeypatch.setitem(x86_check.CPUS, "Haswell-v4", ["AVX2", "FMA", "AVX512F"])
    assert x86_check.main(argv) == 1
    assert "not the emulated CPU's" in json.loads(out.read_text())["problems"][0]
