"""What vitedge's OpenVINO runner gains or loses by compiling a dynamic-batch IR with a static
input for each batch size (targets.openvino.batch_compiler, chosen because OpenVINO's ARM plugin
computes int8 wrong on a dynamic batch): the runner against the same IR compiled as it is, with
the same settings, timed side by side in paired rounds in one process (targets.paired), so the
machine's drift hits both alike.

    vitedge export vit_base_patch16_224 --to openvino --precision int8 --calib cifar10:train --out DIR
    python benchmarks/openvino_static_batch.py DIR --out benchmarks/results/openvino_static_batch_vit_base.json

Beside each ratio: the largest logit difference between the two compiles on the same random
images (both run the artifact's own precision; their kernels may block the sums differently).
Check that nothing else runs first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from cpu_formats import on_this_machine, write_result  # noqa: E402 - beside this script


def measure(folder: Path, threads: int, batches: tuple[int, ...], rounds: int, seconds: float) -> dict[str, Any]:
    import openvino as ov

    from vitedge.core.manifest import read_manifest
    from vitedge.targets.openvino import OpenVinoRunner, compile_config, runner_info
    from vitedge.targets.paired import Pair, paired_rounds
    from vitedge.targets.runners import open_artifact

    precision = read_manifest(folder)["precision"]
    static = open_artifact(folder, threads=threads)
    as_is = ov.Core().compile_model(str(folder / "model.xml"), "CPU", compile_config(precision, "cpu", threads=threads))
    dynamic = OpenVinoRunner(as_is, runner_info(as_is, precision=precision, device="cpu", threads=threads))
    size = tuple(as_is.input(0).get_partial_shape()[1:].to_shape())
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        images = rng.random((batch, *size), dtype=np.float32)
        difference = float(np.abs(static(images) - dynamic(images)).max())
        name = f"static batch {batch}"
        timed = paired_rounds([Pair(name, dynamic, static, images)], rounds=rounds, seconds=seconds)[name]
        rows.append(
            {
                "batch": batch,
                "static_over_dynamic": timed.ratio,  # median of per-round dynamic seconds / static seconds
                "round_ratios": list(timed.round_ratios),
                "static_images_per_s": batch / timed.median_s,
                "dynamic_images_per_s": batch / timed.reference_median_s,
                "max_abs_logit_difference": difference,
            }
        )
    return {"precision": precision, "runner": static.info.detail, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"OpenVINO {result['precision']} IR `{result['artifact']}`, static input per batch size (vitedge's "
        f"runner) against the IR compiled as it is; {result['cpu']}; {result['threads']} threads, "
        f"{result['rounds']} paired rounds.",
        "",
        "| batch | static img/s | dynamic img/s | static / dynamic (per round) | max logit difference |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        rounds = ", ".join(f"{x:.3f}" for x in row["round_ratios"])
        lines.append(
            f"| {row['batch']} | {row['static_images_per_s']:.1f} | {row['dynamic_images_per_s']:.1f} "
            f"| {row['static_over_dynamic']:.3f} ({rounds}) | {row['max_abs_logit_difference']:.2e} |"
        )
    lines += ["", f"Load average before / after: {result['load_before'][0]:.2f} / {result['load_after'][0]:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an OpenVINO artifact folder with a dynamic batch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_static_batch.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    result = on_this_machine(
        lambda: measure(args.artifact, args.threads, batches, args.rounds, args.seconds),
        artifact=args.artifact.name,
        threads=args.threads,
        rounds=args.rounds,
    )
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
