"""Before anything asks the Hugging Face Hub for a name: is it a typo of a local name, and can the Hub be reached?

Offline, ``datasets`` and ``transformers`` retry for half a minute and end in a raw socket error. A name that is
one edit away from a packaged dataset or model is almost always a typo, so it is refused with a suggestion; any
other Hub name is tried only after a two-second check that the Hub's host answers (``HF_HUB_OFFLINE=1`` skips
the check and refuses at once).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlparse

from adaptlab.errors import AdaptlabError

CONNECT_TIMEOUT = 2.0  # seconds to wait for the Hub's host to accept a connection
#: what a Hub dataset or model id looks like (``name`` or ``owner/name``): anything else is not tried on the Hub
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_hub_name(name: str, kind: str, local_names: Iterable[str], option: str) -> None:
    """Refuse ``name`` (about to be fetched from the Hub as a ``kind``: dataset or model) with one line when it
    looks like a typo of one of ``local_names`` or when the Hub cannot be reached."""
    local_names = list(local_names)
    close = difflib.get_close_matches(name.lower(), local_names, n=1, cutoff=0.75)
    if close and "/" not in name:
        raise AdaptlabError(f"{option} '{name}' is not a known {kind}; did you mean {close[0]}? "
                            f"(packaged: {', '.join(local_names)})")
    reason = hub_unreachable()
    if reason:
        raise AdaptlabError(f"{option} '{name}' is not a packaged {kind} ({', '.join(local_names)}) or a local path, and "
                            f"the Hugging Face Hub is not reachable ({reason}); use a packaged name or a local path")


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hub cannot be used from here, or None if its host accepts a connection (checked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "offline: HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        return f"offline? {host}: {exc.strerror or type(exc).__name__}"
    return None
