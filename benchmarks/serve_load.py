"""Load test of `adaptlab serve` on loopback: micro-batching vs one forward pass per request, side by side.

A LoRA artifact on minilm (Rotten Tomatoes) is served twice, by `adaptlab serve` and by `adaptlab serve
--no-batching`; at 1, 8 and 32 concurrent clients each client sends one-sentence classify requests back to
back. Bounded: at most --requests requests or --seconds seconds per level.

    python benchmarks/serve_load.py [--requests 480] [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import save

LEVELS = (1, 8, 32)


async def _load(url: str, texts: list[str], clients: int, requests: int, seconds: float) -> dict:
    import httpx

    latencies, sent, deadline = [], 0, time.perf_counter() + seconds

    async def client(http):
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            sent += 1
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/classify", json={"texts": [text]})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await http.post(f"{url}/v1/classify", json={"texts": ["warm-up"]})
        started = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "requests_per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1)}


def _serve(artifact: str, batching: bool) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "adaptlab", "serve", artifact, "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command + ([] if batching else ["--no-batching"]), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=500, val_size=100, test_size=600)
    artifact = os.path.join(tempfile.mkdtemp(), "rt-lora")
    adaptlab.train("lora", splits, artifact, model="minilm", epochs=1, progress=False)
    texts = list(splits.test.texts)
    results = {}
    for batching in (True, False):
        server, url = _serve(artifact, batching)
        try:
            results["micro_batching" if batching else "one_forward_per_request"] = [
                asyncio.run(_load(url, texts, clients, args.requests, args.seconds)) for clients in LEVELS]
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(results, flush=True)
    ratios = {str(c): round(b["requests_per_second"] / u["requests_per_second"], 2)
              for c, b, u in zip(LEVELS, results["micro_batching"], results["one_forward_per_request"])}
    save("serve_load", {"artifact": "lora on minilm (Rotten Tomatoes)", "request": "one sentence per classify request",
                        "server": "adaptlab serve, defaults (max batch 32, window 5 ms)", "results": results,
                        "throughput_ratio_batching_vs_single": ratios})


if __name__ == "__main__":
    main()
