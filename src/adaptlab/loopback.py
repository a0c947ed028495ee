"""An ASGI app served by uvicorn on a free loopback port in a daemon thread: the ranking app's background mode (its
tests and the README's screenshots) and the tests that need a real HTTP server (lm-evaluation-harness, a served
judge or question writer)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def serve_in_background(app, what: str = "the app", timeout: float = 20.0) -> Iterator[str]:
    """Start ``app``, wait until it accepts connections, yield its root URL (``http://127.0.0.1:PORT``); stop it on
    exit."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{what} did not start within {timeout:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
