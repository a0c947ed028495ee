"""OpenAI-compatible routes, so the official ``openai`` client, LangChain/LlamaIndex's OpenAI connectors and
tools built for vLLM or llama.cpp talk to adaptlab unchanged.

- ``POST /v1/chat/completions``: ``messages`` rendered with the served model's chat template (an SFT artifact's
  own); ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``n``,
  ``stream`` (``chat.completion.chunk`` events, then ``data: [DONE]``; ``stream_options.include_usage``).
- ``POST /v1/completions``: a raw ``prompt`` (string or list of strings), the same sampling fields.
- ``POST /v1/embeddings``: ``input`` string or list, ``encoding_format`` float or base64, any served embedder.

The request's ``model`` picks a base generator or an adapter on it (``adaptlab.serve.generators``). Generation
runs through ``BatchedDecoder``: concurrent requests for one base share forward passes, streaming stays token
by token. Fields the server does not implement (tools, logprobs...) are ignored, as vLLM does, but the numeric
ones are still held to OpenAI's ranges, so a client's bug shows as a 422 rather than passing unnoticed. An empty
or whitespace-only prompt, or user/system message, is refused (400): the model would answer nothing in particular.
Unknown models are 404 and every error uses OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``.

Admission: at most ``max_concurrent`` generations are in flight (429 beyond). A request holds
``min(its generations, max_concurrent)`` of them and runs its generations through that many at a time, so one
larger than the limit (100 prompts under the default 64) is admitted once the server has room for it, in pieces,
instead of being refused forever.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.serve.decoding import Finished, Request
from adaptlab.serve.validation import CheckedBody


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields a server may not implement


class ContentPart(_Lenient):
    """One part of a message's content; only text parts are read (typed, so ``"text": 3`` is a 422, not a 500)."""

    type: str
    text: str | None = None


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class Sampling(_Lenient, CheckedBody):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: dict | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)  # accepted, not implemented
    frequency_penalty: float = Field(0.0, ge=-2, le=2)  # accepted, not implemented

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatRequest(Sampling):
    messages: list[Message]  # an empty list is refused by the route, with the other empty inputs (400)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None  # accepted, not implemented
    top_logprobs: int | None = Field(None, ge=0, le=20)  # accepted, not implemented


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)  # accepted, not implemented
    best_of: int | None = Field(None, ge=1, le=20)  # accepted, not implemented


class EmbeddingRequest(_Lenient, CheckedBody):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


def openai_router(registry, decoders: dict, executor, options, api_error) -> APIRouter:
    """The routes; ``decoders`` maps a served generator name to its ``BatchedDecoder``, ``api_error(status,
    kind, message)`` builds the exception the app turns into an error envelope."""
    router = APIRouter()
    in_flight = {"count": 0}

    def generator_for(name: str):
        if name not in registry.generators:
            raise api_error(404, "model_not_found", f"the model '{name}' does not exist; served: {', '.join(registry.generators) or 'none'}")
        return registry.generators[name]

    def requests_for(body: Sampling, prompt_ids: list[int], limit: int | None, adapter: str | None) -> list[Request]:
        max_new = limit or min(options.max_new_tokens, 256)
        if max_new > options.max_new_tokens:
            raise api_error(400, "invalid_request_error", f"max_tokens {max_new}; at most {options.max_new_tokens} per request")
        return [Request(prompt_ids, max_new, body.temperature, body.top_p, None if body.seed is None else body.seed + i,
                        body.stops(), adapter) for i in range(body.n)]

    def admit(requests: list[Request]) -> int:
        """How many of ``requests`` may be in flight at once (429 when the server lacks that room now)."""
        lanes = min(len(requests), options.max_concurrent)
        if in_flight["count"] + lanes > options.max_concurrent:
            raise api_error(429, "rate_limit_exceeded", f"{in_flight['count']} of {options.max_concurrent} generations "
                            f"running, this request needs {lanes}; retry shortly (or raise the server's --max-concurrent)")
        return lanes

    async def run(name: str, requests: list[Request], lanes: int):
        """(index, piece or Finished) from every request, interleaved as they are decoded, ``lanes`` at a time."""
        decoder = decoders[name]
        merged: asyncio.Queue = asyncio.Queue()
        gate = asyncio.Semaphore(lanes)

        async def pump(index: int, request: Request) -> None:
            async with gate:
                try:
                    async for item in decoder.stream(request):
                        await merged.put((index, item))
                except Exception as exc:  # surfaced to the reader below
                    await merged.put((index, exc))

        in_flight["count"] += lanes
        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
        try:
            remaining = len(requests)
            while remaining:
                index, item = await merged.get()
                if isinstance(item, Exception):
                    raise item
                remaining -= isinstance(item, Finished)
                yield index, item
        finally:
            in_flight["count"] -= lanes
            for task in tasks:
                task.cancel()

    async def respond(body: Sampling, name: str, requests: list[Request], kind: str):
        lanes = admit(requests)
        created, rid = int(time.time()), f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream:
            return StreamingResponse(_events(body, name, requests, kind, created, rid, run(name, requests, lanes)),
                                     media_type="text/event-stream")
        texts, finished = [""] * len(requests), [None] * len(requests)
        async for index, item in run(name, requests, lanes):
            if isinstance(item, Finished):
                finished[index] = item
            else:
                texts[index] += item
        choices = [{"index": i, "finish_reason": f.reason, "logprobs": None,
                    **({"message": {"role": "assistant", "content": t}} if kind == "chat" else {"text": t})}
                   for i, (t, f) in enumerate(zip(texts, finished))]
        return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
                "model": name, "choices": choices, "usage": _usage(finished)}

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        generator = generator_for(body.model)
        if not body.messages:
            raise api_error(400, "invalid_request_error", "messages is empty; send at least one message")
        for number, message in enumerate(body.messages):
            if message.role in ("user", "system", "developer") and not message.text().strip():
                raise api_error(400, "invalid_request_error", f"messages[{number}] ({message.role}) has no text: its "
                                "content is empty or only whitespace")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        prompt = generator.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        _check_context(generator, ids, api_error)
        requests = requests_for(body, ids, body.max_completion_tokens or body.max_tokens, generator.adapter)
        return await respond(body, body.model, requests, "chat")

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest):
        generator = generator_for(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > options.max_texts:
            raise api_error(400, "invalid_request_error", f"prompt must hold 1 to {options.max_texts} strings")
        for number, prompt in enumerate(prompts):
            if not prompt.strip():
                where = "prompt" if isinstance(body.prompt, str) else f"prompt[{number}]"
                raise api_error(400, "invalid_request_error", f"{where} is empty or only whitespace; send text to complete")
        encoded = [generator.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        for ids in encoded:
            _check_context(generator, ids, api_error)
        requests = [r for ids in encoded for r in requests_for(body, ids, body.max_tokens, generator.adapter)]
        return await respond(body, body.model, requests, "completion")

    @router.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        if body.model not in registry.embedders:
            raise api_error(404, "model_not_found", f"the embedding model '{body.model}' is not served; served: "
                            f"{', '.join(registry.embedders) or 'none (start the server with --embedder MODEL)'}")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > options.max_texts:
            raise api_error(400, "invalid_request_error", f"input must hold 1 to {options.max_texts} texts")
        embedder = registry.embedders[body.model]
        vectors = await asyncio.get_running_loop().run_in_executor(executor, embedder.embed, texts)
        encode = (lambda v: base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()) \
            if body.encoding_format == "base64" else (lambda v: [float(x) for x in v])
        tokens = sum(len(embedder.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts)
        return {"object": "list", "model": body.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]}

    return router


def _check_context(generator, ids: list[int], api_error) -> None:
    from adaptlab.models.loading import max_positions

    limit = max_positions(generator.model)
    if limit is not None and len(ids) >= limit:
        raise api_error(400, "context_length_exceeded", f"the prompt has {len(ids)} tokens; this model reads at most {limit}")


def _usage(finished: list[Finished]) -> dict:
    prompt = sum(f.prompt_tokens for f in finished[:1]) if len({f.prompt_tokens for f in finished}) == 1 else sum(f.prompt_tokens for f in finished)
    completion = sum(f.completion_tokens for f in finished)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _events(body: Sampling, name: str, requests: list[Request], kind: str, created: int, rid: str, items):
    """Server-sent events in OpenAI's chunk format."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(choices: list, **extra) -> str:
        payload = {"id": rid, "object": obj, "created": created, "model": name, "choices": choices, **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def choice(index: int, text: str | None, reason: str | None, first: bool = False) -> dict:
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}

    finished = []
    if kind == "chat":
        yield chunk([choice(i, None, None, first=True) for i in range(len(requests))])
    try:
        async for index, item in items:
            if isinstance(item, Finished):
                finished.append(item)
                yield chunk([choice(index, None, item.reason)])
            else:
                yield chunk([choice(index, item, None)])
    except Exception:  # the status line is gone: report the error in the stream, as OpenAI does (no internals)
        yield f"data: {json.dumps({'error': {'message': 'generation failed', 'type': 'internal_error', 'param': None, 'code': None}})}\n\n"
    if (body.stream_options or {}).get("include_usage") and finished:
        yield chunk([], usage=_usage(finished))
    yield "data: [DONE]\n\n"
