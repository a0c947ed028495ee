"""Generation under load on loopback: batched decoding vs one request at a time, side by side.

SmolLM2-135M-Instruct (the packaged Q4_1 GGUF de-quantized to float) served by `adaptlab serve --generator`
twice: with batched decoding (default: concurrent requests share every forward pass) and with
`--generation-batch 1` (one request at a time). At 1, 4 and 16 concurrent clients, each client sends
`/v1/completions` requests (64 new tokens, greedy, different prompts) back to back over keep-alive connections;
tokens/s counts the completion tokens the server reports in `usage`.

    python benchmarks/serve_generation.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
from _common import save
from serve_load import _serve

LEVELS = (1, 4, 16)
MODES = {"batched": [], "one_at_a_time": ["--generation-batch", "1"]}
PROMPTS = [f"Here is a short story about {thing}. Once upon a time" for thing in
           ("a lighthouse", "a fox", "a violin", "the moon", "a baker", "a river", "a clock", "a storm",
            "a garden", "a robot", "a library", "a mountain", "a ship", "a letter", "a painter", "a bridge")]


async def _load(url: str, clients: int, rounds: int, max_tokens: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    latencies, tokens = [], 0

    async def request(reader, writer, prompt: str) -> int:
        body = json.dumps({"model": "smollm2-135m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"server answered {head[:80]!r}")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        return json.loads(await reader.readexactly(length))["usage"]["completion_tokens"]

    async def client(index: int) -> None:
        nonlocal tokens
        reader, writer = await asyncio.open_connection(host, int(port))
        for round_ in range(rounds):
            started = time.perf_counter()
            got = await request(reader, writer, PROMPTS[(index + round_ * clients) % len(PROMPTS)])
            tokens += got  # not `tokens += await ...`: that reads `tokens` before the wait and loses updates
            latencies.append(time.perf_counter() - started)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(clients)])
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "completion_tokens": tokens,
            "tokens_per_second": round(tokens / wall, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for mode, options in MODES.items():
        server, url = _serve(["--generator", "smollm2-135m", *options])
        try:
            asyncio.run(_load(url, 1, 1, 8))  # warm-up
            for clients in LEVELS:  # a lone client sends more requests: its latency is the figure compared
                rounds = max(args.rounds, 4) if clients == 1 else args.rounds
                row = {"mode": mode, **asyncio.run(_load(url, clients, rounds, args.max_tokens))}
                rows.append(row)
                print(row, flush=True)
        finally:
            server.kill()
    get = lambda mode, clients: next(r for r in rows if r["mode"] == mode and r["clients"] == clients)
    save("serve_generation", {
        "model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "max_tokens": args.max_tokens, "rounds": args.rounds,
        "results": rows,
        "throughput_ratio_16_clients": round(get("batched", 16)["tokens_per_second"] / get("one_at_a_time", 16)["tokens_per_second"], 3),
        "single_client_latency_ratio": round(get("batched", 1)["p50_ms"] / get("one_at_a_time", 1)["p50_ms"], 3),
    })


if __name__ == "__main__":
    main()
