"""Whether the user asked to see the libraries' own chatter (`vitedge --verbose`).

Kept in the environment, not a global, so the processes vitedge starts to time a runner
inherit the choice."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

VERBOSE_ENV = "VITEDGE_VERBOSE"
# Loggers that speak on every run of a CPU machine and tell the user nothing they can act on:
# torch's "No CUDA runtime is found, using CUDA_HOME=…" (imported through NNCF) among them, and
# torch's pytree note on an Enum that torchao registers (imported through ExecuTorch).
CHATTY_LOGGERS = ("torch.utils.cpp_extension", "torch.utils._pytree")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def set_verbose(on: bool) -> None:
    """The CLI's choice, for this process and the ones it starts."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if on else logging.ERROR)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence progress bars a library draws on rich's global console (NNCF's), unless verbose;
    vitedge's own bars use their own consoles and keep showing."""
    import rich

    console = rich.get_console()
    before = console.quiet
    console.quiet = before or not verbose()
    try:
        yield
    finally:
        console.quiet = before
