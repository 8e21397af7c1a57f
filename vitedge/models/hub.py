"""The Hugging Face Hub where it answers, its local cache at once where it does not.

The hub's client retries a host it cannot reach five times, with back-off, before it falls back
to the files it cached: 27 s and ten lines of retry messages for a model it held all along (and
the same again for a `--arch hf-hub:…` checkpoint, whose config timm fetches). So before a load
that may reach the hub, one TCP connection to the hub's endpoint is tried; where none is made
within `PROBE_S`, the load runs as `HF_HUB_OFFLINE=1` would make it: from the cache, or failing
at once, in one line naming the cache looked in. Behind a proxy a direct connection says
nothing about the client's, so there the probe is skipped and the client left to its retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from ..core.errors import VitedgeError

PROBE_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def answers(endpoint: str, timeout: float = PROBE_S) -> bool:
    """Whether `endpoint`'s host takes a TCP connection within `timeout` seconds."""
    url = urlparse(endpoint)
    if not url.hostname:
        return False
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_hint(spec: str, host: str) -> str:
    """How to load `spec` without the hub: a timm repo's model is a timm name (`--arch` builds
    it from timm's own registry, no config to fetch). (A `transformers:` id never gets here:
    `load_transformers` turns the client's error into its own one line first.)"""
    name = spec.removeprefix("hf-hub:").removeprefix("timm/")
    local = f"--arch {name.split('.')[0]}" if "/" not in name else "--arch NAME (its timm architecture)"
    return f"load it once where {host} answers (it is cached then), or pass its weights: --model weights.safetensors {local}"


@contextlib.contextmanager
def hub_or_cache(spec: str) -> Iterator[bool]:
    """Run the block online where the hub answers (its retry messages kept quiet), else offline
    from the cache, yielding whether it went offline; `spec` missing from the cache then is one
    line saying so."""
    import huggingface_hub.constants as hub
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    told = hub.HF_HUB_OFFLINE  # the user's HF_HUB_OFFLINE=1
    proxied = any(os.environ.get(variable) for variable in PROXY_VARIABLES)
    unanswered = not told and not proxied and not answers(hub.ENDPOINT)
    if unanswered:
        hub.HF_HUB_OFFLINE = True
    try:
        yield told or unanswered
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):  # what the client raises for a file it has not cached
        if not (told or unanswered):
            raise
        host = urlparse(hub.ENDPOINT).hostname or hub.ENDPOINT
        why = "HF_HUB_OFFLINE is set" if told else f"{host} did not answer"
        raise VitedgeError(
            f"{spec} is not in the Hugging Face cache ({hub.HF_HUB_CACHE}) and {why}", offline_hint(spec, host)
        ) from None
    finally:
        if unanswered:
            hub.HF_HUB_OFFLINE = False
        quiet.setLevel(level)
