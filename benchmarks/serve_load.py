"""Load test of `adaptlab serve` on loopback: micro-batching vs one forward pass per request, side by side.

A LoRA artifact on minilm (Rotten Tomatoes) is served three times: by `adaptlab serve` (defaults: micro-batching,
precision auto), by `adaptlab serve --no-batching` (one forward pass per request; with one-text requests `auto`
runs them in fp32, the faster precision for single texts) and by `adaptlab serve --precision fp32` (batching
alone, without bf16). At 1, 8 and 32 concurrent clients each client sends one-sentence classify requests back
to back over keep-alive connections. Bounded: at most --requests requests or --seconds seconds per level.
Then a poisoned batch: 10 good + 1 malformed + 10 good requests at once, 5 rounds, with a 50 ms batching
window (``poisoned_batch_good_failures``, target 0: a bad request fails alone).

    python benchmarks/serve_load.py [--requests 1200] [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    """Clients on raw keep-alive HTTP/1.1 connections: a load generator that costs little CPU, since it shares
    the two cores with the server (httpx's own per-request work would cap the measured throughput)."""
    host, port = url.removeprefix("http://").split(":")
    latencies, sent, deadline = [], 0, time.perf_counter() + seconds

    async def request(reader, writer, text: str) -> None:
        body = json.dumps({"texts": [text]}).encode()
        writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"server answered {head[:60]!r}")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)

    async def client():
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        await request(reader, writer, "warm-up")
        while sent < requests and time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            sent += 1
            started = time.perf_counter()
            await request(reader, writer, text)
            latencies.append(time.perf_counter() - started)
        writer.close()

    before = _forward_passes(url)
    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    wall = time.perf_counter() - started
    passes, texts_run = (after - start for after, start in zip(_forward_passes(url), before))
    return {"clients": clients, "requests": len(latencies), "requests_per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
            "texts_per_forward_pass": round(texts_run / passes, 1)}


async def _poisoned_batches(url: str, rounds: int = 5) -> dict:
    """10 good + 1 malformed (a lone surrogate, which no tokenizer encodes) + 10 good requests at once, ``rounds``
    times, on a server whose 50 ms window batches them together: the good ones must all succeed."""
    import httpx

    good = json.dumps({"texts": ["a fine film"]}).encode()
    bad = b'{"texts": ["\\ud800"]}'
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        replies = []
        for _ in range(rounds):
            bodies = [good] * 10 + [bad] + [good] * 10
            replies += await asyncio.gather(*[http.post("/v1/classify", content=body, headers=headers) for body in bodies])
    statuses = [(reply.request.content == bad, reply.status_code) for reply in replies]
    return {"rounds": rounds, "good_requests": sum(not is_bad for is_bad, _ in statuses),
            "poisoned_batch_good_failures": sum(not is_bad and code != 200 for is_bad, code in statuses),
            "bad_request_statuses": sorted({code for is_bad, code in statuses if is_bad})}


def _forward_passes(url: str) -> tuple[int, int]:
    import httpx

    (counters,) = httpx.get(f"{url}/health").json()["batches"].values()
    return counters["forward_passes"], counters["texts"]


def _model_throughput(artifact: str, texts: list[str], n: int = 320) -> dict:
    """Texts/s of the artifact called directly (no HTTP): the ceilings the server's ratios are bounded by; and
    how far bf16 batches move its answers on the test texts."""
    import torch

    from adaptlab.runner import Artifact

    predict = Artifact(artifact, device="cpu", progress=False).predict_proba
    out = {}
    for name, size, bf16 in (("fp32_batch_1", 1, False), ("fp32_batch_32", 32, False), ("bf16_batch_32", 32, True)):
        def run(batch, bf16=bf16):  # autocast entered per pass, as the server does
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return predict(batch)

        run(texts[:size])
        started = time.perf_counter()
        for start in range(0, n, size):
            run(texts[start:start + size])
        out[name] = round(n / (time.perf_counter() - started), 1)
    fp32 = np.concatenate([predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = np.concatenate([predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    out["bf16_vs_fp32"] = {"texts": len(texts), "same_label": float((fp32.argmax(1) == bf16.argmax(1)).mean()),
                           "max_probability_difference": float(np.abs(fp32 - bf16).max())}
    return out


CONFIGURATIONS = {  # result key -> extra `adaptlab serve` options
    "micro_batching": [],
    "one_forward_per_request": ["--no-batching"],
    "micro_batching_fp32": ["--precision", "fp32"],
}


def _serve(arguments: list[str]) -> tuple[subprocess.Popen, str]:
    """Start `adaptlab serve ARGUMENTS` on a free loopback port; return it and its URL once /health answers."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "adaptlab", "serve", *arguments, "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
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
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=500, val_size=100, test_size=600)
    artifact = os.path.join(tempfile.mkdtemp(), "rt-lora")
    adaptlab.train("lora", splits, artifact, model="minilm", epochs=1, progress=False)
    texts = list(splits.test.texts)
    model = _model_throughput(artifact, texts)
    print(model, flush=True)
    results = {}
    for key, options in CONFIGURATIONS.items():
        server, url = _serve([artifact, *options])
        try:
            results[key] = [asyncio.run(_load(url, texts, clients, args.requests, args.seconds)) for clients in LEVELS]
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(results, flush=True)
    server, url = _serve([artifact, "--batch-window-ms", "50"])
    try:
        poisoned = asyncio.run(_poisoned_batches(url))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(poisoned, flush=True)
    single = results["one_forward_per_request"]
    ratio = lambda key: {str(c): round(b["requests_per_second"] / u["requests_per_second"], 2)
                         for c, b, u in zip(LEVELS, results[key], single)}
    save("serve_load", {"artifact": "lora on minilm (Rotten Tomatoes)", "request": "one sentence per classify request",
                        "server": "adaptlab serve, defaults (max batch 32, window 5 ms, precision auto: bf16 autocast "
                                  "for passes of 8+ texts on this AMX CPU), uvicorn with uvloop + httptools",
                        "client": "raw asyncio HTTP/1.1 keep-alive connections, same machine",
                        "model_texts_per_second_without_http": model, "results": results,
                        "poisoned_batch": poisoned, "poisoned_batch_good_failures": poisoned["poisoned_batch_good_failures"],
                        "throughput_ratio_batching_vs_single": ratio("micro_batching"),
                        "throughput_ratio_batching_fp32_vs_single": ratio("micro_batching_fp32")})


if __name__ == "__main__":
    main()
