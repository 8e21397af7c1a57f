"""OpenVINO's ARM int8 on a dynamic batch, the upstream bug vitedge works around: the same
OpenVINO int8 IR compiled with its dynamic batch and reshaped to a static one, on the same
images, here (x86) and on emulated ARM boards (aarch64 OpenVINO under qemu-aarch64, set up as
`arm64_check.py` sets it up, in the same --work folder). The static compile is what vitedge and
its bundles run (`targets.openvino.batch_compiler`); this shows whether the dynamic one still
differs, i.e. whether that workaround is still needed.

    sudo python benchmarks/openvino_arm_dynamic_batch.py [--artifact OPENVINO_INT8] [--boards pi4,pi5] [--qemu QEMU]

Exit 0: the dynamic compile agrees with the static one everywhere (cosine >= 0.999: the bug is
gone in this OpenVINO); 1: it does not somewhere (printed: cosine, largest difference, top-1
agreement); 2: it cannot run here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from arm64_check import (  # noqa: E402 - beside this script
    BOARDS,
    arm64_python,
    board_options,
    board_site,
    cannot_run,
    chosen_boards,
    openvino_int8,
    run_emulated,
    say,
)

# Runs under any Python with openvino and numpy: argv[1] the IR, argv[2] the .npy batch.
COMPARE = """
import json, sys
import numpy as np
import openvino as ov
core, x = ov.Core(), np.load(sys.argv[2])
config = {"INFERENCE_PRECISION_HINT": "f32"}
dynamic = core.compile_model(core.read_model(sys.argv[1]), "CPU", config)
static_model = core.read_model(sys.argv[1])
static_model.reshape(list(x.shape))
static = core.compile_model(static_model, "CPU", config)
a = np.concatenate([dynamic(x[i : i + 4])[0] for i in range(0, len(x), 4)])
b = static(x)[0]
cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print(json.dumps({"cosine_mean": float(cosine.mean()), "max_abs": float(np.abs(a - b).max()),
                  "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}))
"""
AGREE = 0.999


def test_images(artifact: Path, count: int) -> np.ndarray:
    """`count` CIFAR-10 test images, preprocessed as the artifact's manifest says."""
    from vitedge.calibration.preprocess import DataConfig, preprocess_batch
    from vitedge.calibration.sources import open_source
    from vitedge.core.manifest import read_manifest

    images = open_source("cifar10")
    config = DataConfig.from_dict(read_manifest(artifact)["data_config"])
    return preprocess_batch([images.get(i) for i in range(count)], config).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="an OpenVINO int8 artifact (default: vitedge-cifar10 int8)")
    board_options(parser, boards="pi4,pi5")
    args = parser.parse_args()
    reason = cannot_run(args.qemu)
    if reason:
        say(f"OpenVINO ARM dynamic-batch check cannot run here: {reason}")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    python = arm64_python(args.work, args.mirror)
    boards = chosen_boards(args.boards)
    if boards is None:
        return 2
    site = board_site(args.work, boards[0], python, "openvino", "", args.qemu)
    if isinstance(site, str):
        say(f"OpenVINO ARM dynamic-batch check cannot run here: {site}")
        return 2
    differ = []
    with tempfile.TemporaryDirectory(prefix="ov-arm-dynamic-") as scratch:
        scratch = Path(scratch)
        artifact = args.artifact or openvino_int8(scratch)
        script, batch = scratch / "compare.py", scratch / "images.npy"
        script.write_text(COMPARE)
        np.save(batch, test_images(artifact, args.images))
        argv = [str(script), str(artifact / "model.xml"), str(batch)]
        runs = {"x86": subprocess.run([sys.executable, *argv], capture_output=True, text=True)}
        runs |= {board: run_emulated(args.work, board, python, site, argv, args.qemu) for board in boards}
        for where, done in runs.items():
            if done.returncode != 0:
                say(f"{where}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                return 2
            seen = json.loads(done.stdout.strip().splitlines()[-1])
            name = where if where == "x86" else f"{where} ({BOARDS[where][0]})"
            say(
                f"{name}: dynamic against static batch: cosine {seen['cosine_mean']:.6f}, max |Δ| {seen['max_abs']:.3g},"
                f" top-1 agreement {100 * seen['top1_agreement']:.1f}%"
            )
            if seen["cosine_mean"] < AGREE:
                differ.append(name)
    say(f"the dynamic batch differs on: {', '.join(differ)}" if differ else "the dynamic batch agrees everywhere")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
