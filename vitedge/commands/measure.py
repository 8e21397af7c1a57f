"""`vitedge` commands that measure: eval, bench."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from ..cli import EXPORT, app, console, out
from ..core.errors import VitedgeError
from ..targets.remote import RUN_TIMEOUT_S
from .common import home_expanded, parse_samples, refuse_options_given


def _batches(value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise VitedgeError(
            f"--batch must be a comma-separated list of sizes, got {value!r}", "e.g. --batch 1,8"
        ) from None
    if not batches or min(batches) < 1:
        raise VitedgeError(f"--batch needs positive sizes, got {value!r}", "e.g. --batch 1,8")
    return batches


@app.command("eval", rich_help_panel=EXPORT)
def eval_command(
    model: str = typer.Argument(
        "vitedge-cifar10", help="Model: vitedge-cifar10, a timm name, hf-hub:org/name, or a .safetensors/.pth file."
    ),
    data: str = typer.Option(
        "cifar10",
        help="Labelled images: cifar10, cifar10:train, a .npz with x/y, or a folder with one subfolder per class.",
    ),
    samples: str = typer.Option("all", help="How many images (class-balanced, seeded), or 'all'."),
    arch: str | None = typer.Option(None, help="Architecture of a bare .pth/.safetensors (timm name)."),
    pretrained: bool = typer.Option(False, help="Load timm's pretrained weights for a timm name."),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Top-1 / top-5 accuracy of a PyTorch model on labelled images."""
    from ..workflows.pipeline import evaluate

    result = evaluate(
        model, data, parse_samples(samples), arch=arch, pretrained=pretrained, threads=threads, console=console
    )
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(result)))
    else:
        out.print(f"{model} on {data}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  ({result.samples} images)")


@app.command("bench", rich_help_panel=EXPORT)
def bench_command(
    ctx: typer.Context,
    items: list[str] = typer.Argument(
        ...,
        help="Artifact folders (from `vitedge export`) and/or models (anything `eval` takes).",
        callback=home_expanded,
    ),
    target: str = typer.Option("cpu", help="cpu, cuda, tensorrt, openvino-gpu, or ssh://user@host[:port] for a board."),
    data: str | None = typer.Option("cifar10", help="Labelled images for top-1 ('' to skip accuracy)."),
    samples: str = typer.Option("1000", help="Images for accuracy, or 'all'."),
    batch: str = typer.Option("1,8", help="Batch sizes to time, comma-separated."),
    threads: int = typer.Option(2, min=1, help="Intra-op threads for every runtime."),
    runs: int = typer.Option(20, min=1, help="Timed calls per batch size (at least 1 s), after warm-up."),
    identity: Path | None = typer.Option(None, help="SSH private key for an ssh:// target.", callback=home_expanded),
    accept_new_host_key: bool = typer.Option(False, help="ssh:// only: trust a board's host key on first contact."),
    known_hosts: Path | None = typer.Option(
        None,
        help="ssh:// only: known_hosts file to check the board's key against (default: ssh's own).",
        callback=home_expanded,
    ),
    seconds: float = typer.Option(10.0, help="ssh:// only: timed seconds per batch size on the board."),
    python: str = typer.Option("python3", help="ssh:// only: the board's Python (e.g. ~/vitedge-env/bin/python)."),
    board_timeout: float = typer.Option(
        RUN_TIMEOUT_S,
        help="ssh:// only: seconds the whole board session may take; the board then stops itself, and the artifacts that finished keep their results.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Measure accuracy, it/s, latency, size and peak memory of artifacts or models; on an ssh:// board, all of them in one session, with parity, p50/p90/p99 and the board's CPU facts."""
    if not target.startswith("ssh://"):
        refuse_options_given(
            ctx,
            ("identity", "accept_new_host_key", "known_hosts", "seconds", "python", "board_timeout"),
            f"for an ssh:// board, not --target {target}",
            "drop those options (--runs sets how long a local row is timed), or pass --target ssh://user@host",
        )
    else:
        refuse_options_given(
            ctx, ("runs",), "for a row timed here, not on an ssh:// board", "drop it: --seconds sets a board's timing"
        )
    if not data:
        refuse_options_given(ctx, ("samples",), "for accuracy, which --data '' skips", "drop it, or name --data")
    from ..workflows.pipeline import bench
    from ..workflows.report import print_board_table, print_table

    rows = bench(
        items,
        target=target,
        data=data or None,
        samples=parse_samples(samples),
        batches=_batches(batch),
        threads=threads,
        runs=runs,
        identity=identity,
        accept_new_host_key=accept_new_host_key,
        known_hosts=known_hosts,
        seconds=seconds,
        python=python,
        board_timeout=board_timeout,
        console=console,
    )
    if as_json:
        out.print_json(json.dumps([row.to_dict() for row in rows], default=str))
        return
    print_table(rows, out, title=f"vitedge bench ({target})")
    if target.startswith("ssh://"):
        print_board_table(rows, out, title=f"on the board {target}")
