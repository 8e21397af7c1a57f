"""The `vitedge` command line: small Typer functions that parse options and call library code."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .core.cpu import bound_default_pools
from .core.errors import VitedgeError, printable
from .core.verbosity import set_verbose

app = typer.Typer(
    name="vitedge",
    help="Compress, export, verify and benchmark Vision Transformers for CPUs, GPUs and edge boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 200)  # scripts and logs get the whole table
_state = {"debug": False}

# `vitedge --help` groups the commands into these panels (rich_help_panel of each command).
MAIN_JOB = "Main job"
EXPORT = "Export, verify and measure"
INT8 = "int8"
COMPRESSION = "Compression"
EDGE = "Edge and targets"
TRAINING = "Training"


def _version(value: bool) -> None:
    if value:
        out.print(f"vitedge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show the libraries' own warnings and progress bars (NNCF, torch)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vitedge: from a PyTorch ViT to a verified, benchmarked edge artifact."""
    _state["debug"] = debug
    set_verbose(verbose)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
    console.print(f"[yellow]warning:[/] {escape(str(message).splitlines()[0])}", highlight=False, soft_wrap=True)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage-error base as this Typer raises it: Typer 0.2x vendors Click (its
    exceptions derive from typer.TyperException, not click.ClickException); older Typer raises
    click's own."""
    import click

    vendored = getattr(typer, "TyperException", None)
    return (click.ClickException, vendored) if vendored is not None else (click.ClickException,)


class Stopped(BaseException):
    """SIGTERM (`kill`, `timeout`, a job scheduler) or SIGHUP (a closed terminal or ssh
    session) raised where Python is, like Ctrl-C: every `finally` runs, so a half-written output
    folder is deleted and a measuring process is stopped instead of left running on the CPU
    the next measurement needs. A BaseException, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
    raise Stopped(signum)


def _stop_cleanly_on_signals() -> dict[int, object]:
    """Only signals left at their default (`nohup` sets SIGHUP to ignored, and that is kept);
    returns what to restore, so an in-process caller (a test, a notebook) keeps its own."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, object] = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            previous[number] = signal.signal(number, _raise_stopped)
    return previous


def run() -> None:
    """Console-script entry: user errors become one red line and exit code 2."""
    bound_default_pools(os.environ)  # before any command imports torch
    warnings.showwarning = _one_line_warning
    previous = _stop_cleanly_on_signals()
    try:
        _run_app()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _in_help_order() -> None:
    """`app`'s commands in COMMAND_MODULES' order, each module's as it registered them: a module
    imported before `vitedge.cli` (`from vitedge.commands.int8 import ...` in a script) registers
    its commands last, after the loop below has run, and would move its panel to the end. A
    command registered from elsewhere goes after them."""

    def place(command: typer.models.CommandInfo) -> int:
        module = command.callback.__module__.rpartition(".")[2] if command.callback else ""
        return COMMAND_MODULES.index(module) if module in COMMAND_MODULES else len(COMMAND_MODULES)

    app.registered_commands.sort(key=place)


def _run_app() -> None:
    _in_help_order()
    try:
        code = app(standalone_mode=False)
    except Stopped as exc:
        console.print(f"[red]stopped by {signal.Signals(exc.signum).name}[/]")
        sys.exit(128 + exc.signum)
    except VitedgeError as exc:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {escape(printable(exc.message))}", highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"[dim]hint:[/] {escape(printable(exc.hint))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[red]aborted[/]")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        if isinstance(exc, _usage_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if code == 130:  # Typer turns Ctrl-C into a returned 130 under standalone_mode=False
        console.print("[red]aborted[/]")
    sys.exit(code if isinstance(code, int) else 0)


# Each area's commands live in vitedge/commands/; importing a module registers its commands,
# and `vitedge --help` lists the panels in this order (the main job first).
COMMAND_MODULES = ("run", "study", "export", "measure", "int8", "compress", "edge", "train")
for _module in COMMAND_MODULES:
    importlib.import_module(f".commands.{_module}", __package__)
