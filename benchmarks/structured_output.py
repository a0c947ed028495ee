"""Structured output through `adaptlab serve`: 200 chat requests asking for a JSON record, through the official
`openai` client, with and without `response_format: json_schema` (constrained decoding by xgrammar).

SmolLM2-135M-Instruct served by `adaptlab serve --generator smollm2-135m` on loopback. Each request asks for a JSON
object describing one Rotten Tomatoes sentence (the schema is also written in the prompt, so the unconstrained
model knows what is wanted); `--clients` threads send the requests (greedy, `max_tokens` 96). A reply is valid when
`json.loads` parses its content and it validates against the schema (`jsonschema`). Throughput counts completion
tokens (the server's `usage`) over wall time; the ratio is constrained / unconstrained, same server, same prompts.

    python benchmarks/structured_output.py [--requests 200] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
from _common import save
from serve_load import _serve

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["sentiment", "confidence", "summary"],
    "properties": {
        "sentiment": {"enum": ["positive", "negative"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "summary": {"type": "string", "maxLength": 80},
    },
}


def prompts(count: int) -> list[str]:
    from adaptlab.data import load_data

    texts = load_data("rotten_tomatoes").texts[:count]
    return [f"Read this movie review and reply with only a JSON object matching this JSON schema: {json.dumps(SCHEMA)}\n\n"
            f"Review: {text}" for text in texts]


def valid(content: str | None) -> bool:
    try:
        jsonschema.validate(json.loads(content or ""), SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def run(client: openai.OpenAI, asks: list[str], clients: int, max_tokens: int, constrained: bool) -> dict:
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}

    def ask(prompt: str):
        extra = {"response_format": fmt} if constrained else {}
        reply = client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, temperature=0, **extra)
        return reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        replies = list(pool.map(ask, asks))
    wall = time.perf_counter() - started
    tokens = sum(r[2] for r in replies)
    return {"constrained": constrained, "requests": len(replies), "completion_tokens": tokens,
            "wall_seconds": round(wall, 1), "tokens_per_second": round(tokens / wall, 1),
            "schema_valid_fraction": round(sum(valid(r[0]) for r in replies) / len(replies), 4),
            "finished_by_length": sum(r[1] == "length" for r in replies), "example": replies[0][0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    asks = prompts(args.requests)
    server, url = _serve(["--generator", "smollm2-135m"])
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        run(client, asks[:4], 4, 8, True)  # warm-up: first forward passes, the tokenizer's grammar tables
        free = run(client, asks, args.clients, args.max_tokens, False)
        print(free, flush=True)
        constrained = run(client, asks, args.clients, args.max_tokens, True)
        print(constrained, flush=True)
    finally:
        server.kill()
    save("structured_output", {
        "model": "smollm2-135m (SmolLM2-135M-Instruct)", "engine": "xgrammar", "clients": args.clients,
        "max_tokens": args.max_tokens, "schema": SCHEMA,
        "unconstrained": free, "constrained": constrained,
        "schema_valid_fraction": constrained["schema_valid_fraction"],
        "unconstrained_schema_valid_fraction": free["schema_valid_fraction"],
        "constrained_tokens_per_second_ratio": round(constrained["tokens_per_second"] / free["tokens_per_second"], 3),
    })


if __name__ == "__main__":
    main()
