"""A model behind an OpenAI-compatible server (``adaptlab serve``, vLLM, llama.cpp's server, a hosted API), named
``http://HOST:PORT/v1#MODEL``: what ``rag eval --judge`` and ``rag adapt --generator`` accept besides a local
causal LM. The standard library's HTTP client: nothing to install for it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from adaptlab.errors import AdaptlabError


def is_served(spec: str | None) -> bool:
    return spec is not None and spec.startswith(("http://", "https://"))


def check_spec(spec: str, option: str) -> None:
    if is_served(spec) and not spec.partition("#")[2].strip():
        raise AdaptlabError(f"{option} '{spec}' names no model: append #MODEL, e.g. {spec}#smollm2-135m")


def probe(spec: str, option: str) -> None:
    """The server answers ``GET /models`` and serves the model: checked before any work."""
    url, _, model = spec.partition("#")
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10) as response:
            served = [m.get("id") for m in json.loads(response.read()).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError, AttributeError) as exc:
        raise AdaptlabError(f"{option} {url}: no usable reply ({type(exc).__name__}: {exc}); is the server running?") from None
    if served and model not in served:
        raise AdaptlabError(f"{option} {url} does not serve '{model}'; it serves {', '.join(map(str, served))}")


def reply(spec: str, prompt: str, max_tokens: int, option: str) -> str:
    """The model's greedy reply to one user message."""
    url, _, model = spec.partition("#")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"] or ""
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise AdaptlabError(f"{option} {url}: no usable reply ({type(exc).__name__}: {exc})") from None
