"""What giving ONNX Runtime's calibrator vitedge's thread count gains inside a CPU quota: the same
calibration (`exporter.quantize.calibration_ranges`, MinMax) timed with ORT's own pool (sized
from the host's cores: what `create_calibrator` opens) and with `core.cpu.runtime_threads`'
count, each in a fresh process in a real cgroup v1 `cpu` group with `--quota` CPUs of time,
rounds interleaved, the ratio taken per round.

    python benchmarks/calibration_threads.py --out benchmarks/results/calibration_threads.json

Needs root and cgroup v1's cpu controller (as the CI machines have); elsewhere it says so and
stops. The quota is the machine's measured limit here: it is written beside the figures with
this CPU, and the load average before and after. Check that nothing else runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cpu_formats import on_this_machine, write_result  # noqa: E402 - beside this script

CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
MODES = ("ort-own-pool", "vitedge-threads")


def prepare(model: str, work: Path) -> Path:
    """The model's fp32 export, pre-processed, as static int8 export calibrates it."""
    from vitedge.compress.registry import load_model
    from vitedge.exporter.export import ExportOptions
    from vitedge.workflows.int8_eval import prepare_onnx

    return prepare_onnx(load_model(model), ExportOptions(), work)


def calibrate(model: str, prepared: Path, images: int, mode: str) -> dict[str, Any]:
    """One calibration, timed: in `ort-own-pool` the calibrator keeps the session ORT opened."""
    import vitedge.exporter.quantize as quantize
    from vitedge.calibration.calibset import build_calibration_set
    from vitedge.calibration.sources import open_source
    from vitedge.compress.registry import load_model
    from vitedge.core.cpu import runtime_threads, usable_cpus

    config = load_model(model).data_config
    calibration = build_calibration_set(open_source("cifar10:train"), config, images, seed=0, cache=False)
    threads = runtime_threads(None)
    if mode == "ort-own-pool":
        quantize.runtime_threads = lambda _threads: None  # ORT's session as create_calibrator opened it
    with quantize.quiet_ort(), tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        quantize.calibration_ranges(prepared, calibration, "input", "minmax", quantize.DEFAULT_OP_TYPES, Path(work), 1)
        seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "vitedge_threads": threads, "usable_cpus": usable_cpus()[0]}


def in_cgroup(group: Path, argv: list[str]) -> dict[str, Any]:
    """`argv` run in `group` (joined before exec), its one JSON line read back."""

    def join() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))

    done = subprocess.run(argv, preexec_fn=join, capture_output=True, text=True, check=True)  # noqa: PLW1509
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_group(quota: float) -> Path:
    group = CGROUP_V1_CPU / f"vitedge-bench-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(quota * PERIOD_US)))
    except OSError as error:
        if group.is_dir():
            group.rmdir()
        raise SystemExit(
            f"no cgroup v1 cpu group can be made here ({error}): run as root on a host with cgroup v1's cpu controller"
        ) from None
    return group


def measure(args: argparse.Namespace) -> dict[str, Any]:
    group = make_group(args.quota)
    try:
        with tempfile.TemporaryDirectory() as work:
            prepared = prepare(args.model, Path(work))
            rounds = []
            for _ in range(args.rounds):
                row = {}
                for mode in MODES:
                    child = [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--model",
                        args.model,
                        "--prepared",
                        str(prepared),
                    ]
                    row[mode] = in_cgroup(group, [*child, "--images", str(args.images)])
                rounds.append(row)
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            (CGROUP_V1_CPU / "cgroup.procs").write_text(pid)
        group.rmdir()
    ratios = [r["ort-own-pool"]["seconds"] / r["vitedge-threads"]["seconds"] for r in rounds]
    return {
        "rounds": rounds,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "seconds_median": {m: statistics.median(r[m]["seconds"] for r in rounds) for m in MODES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--quota", type=float, default=1.0, help="CPUs of time per period the group may use")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration_threads.json"))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(calibrate(args.model, args.prepared, args.images, args.child)))
        return
    result = on_this_machine(
        lambda: measure(args),
        model=args.model,
        images=args.images,
        quota_cpus=args.quota,
        host_cpus=os.cpu_count(),
        rounds=args.rounds,
        method="minmax, batch 1",
    )
    seconds = result["seconds_median"]
    vitedge_threads = result["rounds"][0]["vitedge-threads"]["vitedge_threads"]
    table = "\n".join(
        [
            f"ORT calibration of {args.model}, {args.images} images, in a {args.quota:g}-CPU quota on {result['cpu']}",
            "",
            "| calibrator session | seconds (median) |",
            "|---|---|",
            f"| ORT's own pool (host's cores: {os.cpu_count()} logical) | {seconds['ort-own-pool']:.2f} |",
            f"| vitedge's count ({vitedge_threads} thread(s)) | {seconds['vitedge-threads']:.2f} |",
            "",
            f"ORT's own / vitedge's: {result['ratio_median']:.2f}× (per round: "
            + ", ".join(f"{r:.2f}" for r in result["ratio_per_round"])
            + ")",
        ]
    )
    write_result(args.out, result, table + "\n")


if __name__ == "__main__":
    main()
