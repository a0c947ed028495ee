"""OpenAI-compatible routes, so the official ``openai`` client, LangChain/LlamaIndex's OpenAI connectors and
tools built for vLLM or llama.cpp talk to adaptlab unchanged.

- ``POST /v1/chat/completions``: ``messages`` rendered with the served model's chat template (an SFT artifact's
  own); ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``n``,
  ``stream`` (``chat.completion.chunk`` events, then ``data: [DONE]``; ``stream_options.include_usage``).
- ``POST /v1/completions``: a raw ``prompt`` (a string, a list of strings, or token ids: a list of integers or
  a list of such lists, as lm-evaluation-harness sends), the same sampling fields; ``logprobs`` (0 to 5
  alternatives per token: ``{tokens, token_logprobs, top_logprobs, text_offset}``), ``echo`` (the prompt is
  returned before the completion, with its tokens' log-probabilities when ``logprobs`` is set; the first token's
  is null) and ``max_tokens: 0`` with ``echo`` (the prompt's log-probabilities only: lm-evaluation-harness's
  ``local-completions`` loglikelihood requests).
- Log-probabilities on the chat route: ``logprobs: true`` and ``top_logprobs`` (0 to 20):
  ``logprobs.content = [{token, logprob, bytes, top_logprobs}]``. They are the model's own distribution, before
  temperature and any constraint.
- Structured output (``adaptlab.structured``, the xgrammar engine) on both routes: ``response_format``
  ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": ...}}`` hold the reply to
  JSON (to the schema); on the chat route ``tools`` with ``tool_choice`` ``"auto"`` (the default), ``"required"``
  or ``{"type": "function", "function": {"name": ...}}`` reply in OpenAI's shape (``message.tool_calls =
  [{id, type: "function", function: {name, arguments}}]``, ``finish_reason: "tool_calls"``), the arguments held
  to the function's parameter schema; ``"none"`` ignores the tools. A streamed reply with tools comes in one
  piece at the end (the calls are only known then). An invalid schema, an unknown ``tool_choice`` name or
  ``logprobs`` over the limit is a 400 that says which.
- ``POST /v1/embeddings``: ``input`` string or list, ``encoding_format`` float or base64, any served embedder.

The request's ``model`` picks a base generator or an adapter on it (``adaptlab.serve.generators``). Generation
runs through ``BatchedDecoder``: concurrent requests for one base share forward passes, streaming stays token
by token. Fields the server does not implement (penalties, ``best_of``...) are ignored, as vLLM does, but the numeric
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

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from adaptlab.errors import AdaptlabError
from adaptlab.serve.decoding import BatchedDecoder, Finished, Request
from adaptlab.serve import openai_shapes as shapes
from adaptlab.serve.openai_requests import (MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS, ChatRequest, CompletionRequest,
                                            EmbeddingRequest, Sampling)


def openai_router(registry, decoders: dict, executor, options, api_error) -> APIRouter:
    """The routes; ``decoders`` maps a served generator name to its ``BatchedDecoder``, ``api_error(status,
    kind, message)`` builds the exception the app turns into an error envelope."""
    router = APIRouter()
    in_flight = {"count": 0}

    def generator_for(name: str):
        if name not in registry.generators:
            raise api_error(404, "model_not_found", f"the model '{name}' does not exist; served: {', '.join(registry.generators) or 'none'}")
        return registry.generators[name]

    def requests_for(body: Sampling, prompt_ids: list[int], limit: int | None, adapter: str | None, *,
                     logprobs: int | None = None, prompt_logprobs: int | None = None, constraint=None) -> list[Request]:
        max_new = limit if limit is not None else min(options.max_new_tokens, 256)
        if max_new > options.max_new_tokens:
            raise api_error(400, "invalid_request_error", f"max_tokens {max_new}; at most {options.max_new_tokens} per request")
        return [Request(prompt_ids, max_new, body.temperature, body.top_p, None if body.seed is None else body.seed + i,
                        body.stops(), adapter, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                        constraint=None if constraint is None else constraint())
                for i in range(body.n)]

    def bad(message: str):
        return api_error(400, "invalid_request_error", message)

    def grammars_for(generator):
        from adaptlab.structured import Grammars

        return Grammars.of(generator.tokenizer, _logits_width(generator.model))

    def constraint_from(generator, compile_grammar):
        """A factory of constraints (one per generation) for the grammar ``compile_grammar(grammars)`` builds;
        a schema the engine refuses is a 400 saying why."""
        grammars = grammars_for(generator)
        try:
            compiled = compile_grammar(grammars)
        except AdaptlabError as exc:
            raise bad(str(exc)) from None
        return lambda: grammars.constraint(compiled)

    def response_constraint(body: Sampling, generator):
        fmt = body.response_format
        if fmt is None or fmt.get("type") == "text":
            return None
        if fmt.get("type") == "json_object":
            return constraint_from(generator, lambda g: g.json_object())
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or "schema" not in spec:
                raise bad('response_format.json_schema.schema is missing; send {"type": "json_schema", "json_schema": '
                          '{"name": ..., "schema": {...}}}')
            return constraint_from(generator, lambda g: g.json_schema(spec["schema"], "response_format.json_schema.schema"))
        raise bad(f"response_format.type {json.dumps(fmt.get('type'))} is not one of text, json_object, json_schema")

    def tool_mode(body: ChatRequest) -> tuple[list[dict], str, str | None] | None:
        """(tools, "auto" | "required" | "named", the named function) or None when no tool may be called."""
        tools, choice = body.tools, body.tool_choice
        if not tools:
            if choice not in (None, "none"):
                raise bad("tool_choice is set but tools is empty; send the functions in tools")
            return None
        for number, tool in enumerate(tools):
            function = tool.get("function")
            if tool.get("type", "function") != "function" or not isinstance(function, dict) \
                    or not isinstance(function.get("name"), str) or not function["name"]:
                raise bad(f'tools[{number}] must be {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}')
        names = [tool["function"]["name"] for tool in tools]
        if len(set(names)) < len(names):
            raise bad(f"tools names a function twice ({', '.join(names)})")
        if isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if choice.get("type") != "function" or not isinstance(name, str):
                raise bad('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}')
            if name not in names:
                raise bad(f"tool_choice names the function '{name}', which is not in tools ({', '.join(names)})")
            return tools, "named", name
        choice = choice or "auto"
        if choice == "none":
            return None
        if choice not in ("auto", "required"):
            raise bad(f"tool_choice '{choice}' is not one of none, auto, required (or a named function)")
        return tools, choice, None

    def refuse_unbatched(name: str, wants: bool) -> None:
        if wants and not isinstance(decoders[name], BatchedDecoder):
            raise bad(f"the model '{name}' is served one request at a time (a prompt-learning adapter): logprobs, "
                      "echo with max_tokens 0 and structured output are not available for it")

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

    async def respond(body: Sampling, name: str, requests: list[Request], kind: str, build, piece_logprobs=None,
                      whole: bool = False):
        """The reply: ``build(index, text, finished)`` makes each choice; streamed piece by piece (each piece's
        logprobs from ``piece_logprobs``), or, when ``whole``, as one piece at the end (tool calls)."""
        lanes = admit(requests)
        created, rid = int(time.time()), f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream and not whole:
            return StreamingResponse(_events(body, name, requests, kind, created, rid, run(name, requests, lanes), piece_logprobs),
                                     media_type="text/event-stream")
        texts, finished = [""] * len(requests), [None] * len(requests)
        async for index, item in run(name, requests, lanes):
            if isinstance(item, Finished):
                finished[index] = item
            else:
                texts[index] += item
        choices = [build(i, t, f) for i, (t, f) in enumerate(zip(texts, finished))]
        if body.stream:
            return StreamingResponse(_whole_events(body, name, choices, finished, created, rid), media_type="text/event-stream")
        return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
                "model": name, "choices": choices, "usage": shapes.usage(finished)}

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        generator = generator_for(body.model)
        if not body.messages:
            raise api_error(400, "invalid_request_error", "messages is empty; send at least one message")
        for number, message in enumerate(body.messages):
            if message.role in ("user", "system", "developer") and not message.text().strip():
                raise api_error(400, "invalid_request_error", f"messages[{number}] ({message.role}) has no text: its "
                                "content is empty or only whitespace")
        if body.top_logprobs is not None and body.top_logprobs > MAX_TOP_LOGPROBS:
            raise bad(f"top_logprobs {body.top_logprobs}; at most {MAX_TOP_LOGPROBS}")
        if body.top_logprobs and not body.logprobs:
            raise bad("top_logprobs needs logprobs: true")
        tools = tool_mode(body)
        if tools is not None and body.response_format and body.response_format.get("type") != "text":
            raise bad("send response_format or tools, not both (or tool_choice: \"none\")")
        template = generator.tokenizer.chat_template or ""
        messages = [shapes.template_message(m, "tool_calls" in template) for m in body.messages]
        extra = {}
        if tools is not None:
            if "tools" in template:
                extra["tools"] = tools[0]
            else:
                from adaptlab.structured import tools_instruction

                instruction = tools_instruction(tools[0])
                if messages[0]["role"] == "system":
                    messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + instruction}
                else:
                    messages.insert(0, {"role": "system", "content": instruction})
        prompt = generator.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
        ids = generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        _check_context(generator, ids, api_error)
        if tools is not None:
            constraint = constraint_from(generator, lambda g: g.tool_calls(*tools))
        else:
            constraint = response_constraint(body, generator)
        refuse_unbatched(body.model, bool(body.logprobs) or constraint is not None)
        top = (body.top_logprobs or 0) if body.logprobs else None
        requests = requests_for(body, ids, body.max_completion_tokens or body.max_tokens, generator.adapter,
                                logprobs=top, constraint=constraint)
        vocabulary = grammars_for(generator).token_bytes if body.logprobs else None
        eos = generator.tokenizer.eos_token_id

        def build(index: int, text: str, finished: Finished) -> dict:
            message, reason = {"role": "assistant", "content": text}, finished.reason
            calls = shapes.tool_calls(text, tools) if tools is not None and reason == "stop" else []
            if calls:
                rest = shapes.outside_calls(text) if tools[1] == "auto" else ""
                message, reason = {"role": "assistant", "content": rest or None, "tool_calls": calls}, "tool_calls"
            logprobs = None if vocabulary is None else {"content": shapes.chat_logprobs(finished.logprobs, vocabulary, eos), "refusal": None}
            return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}

        piece = None if vocabulary is None else (lambda p: {"content": shapes.chat_logprobs(p.logprobs, vocabulary, eos), "refusal": None})
        return await respond(body, body.model, requests, "chat", build, piece, whole=tools is not None)

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest):
        generator = generator_for(body.model)
        single = isinstance(body.prompt, str) or (bool(body.prompt) and isinstance(body.prompt[0], int))
        prompts = [body.prompt] if single else body.prompt
        if not prompts or len(prompts) > options.max_texts:
            raise api_error(400, "invalid_request_error", f"prompt must hold 1 to {options.max_texts} strings")
        width = _logits_width(generator.model)
        encoded = []
        for number, prompt in enumerate(prompts):
            where = "prompt" if single else f"prompt[{number}]"
            if isinstance(prompt, str):
                if not prompt.strip():
                    raise api_error(400, "invalid_request_error", f"{where} is empty or only whitespace; send text to complete")
                encoded.append(generator.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                continue
            if not prompt:
                raise bad(f"{where} has no tokens; send token ids to complete")
            wrong = next((t for t in prompt if not 0 <= t < width), None)
            if wrong is not None:
                raise bad(f"{where} holds the token id {wrong}; this model's ids are 0 to {width - 1}")
            encoded.append(list(prompt))
        for ids in encoded:
            _check_context(generator, ids, api_error)
        if body.logprobs is not None and body.logprobs > MAX_COMPLETION_LOGPROBS:
            raise bad(f"logprobs {body.logprobs}; at most {MAX_COMPLETION_LOGPROBS} alternatives per token")
        if body.max_tokens == 0 and not body.echo:
            raise bad("max_tokens 0 generates nothing; it is only useful with echo (the prompt's log-probabilities)")
        if body.echo and body.stream:
            raise bad("echo is not streamed; send stream: false")
        constraint = response_constraint(body, generator)
        refuse_unbatched(body.model, body.logprobs is not None or constraint is not None or body.max_tokens == 0)
        echoed = body.logprobs if body.echo else None
        requests = [r for ids in encoded for r in requests_for(body, ids, body.max_tokens, generator.adapter,
                                                              logprobs=body.logprobs, prompt_logprobs=echoed,
                                                              constraint=constraint)]
        texts = [p if isinstance(p, str) else generator.tokenizer.decode(p) for p in prompts for _ in range(body.n)]
        vocabulary = grammars_for(generator).token_bytes if body.logprobs is not None else None
        eos = generator.tokenizer.eos_token_id

        def build(index: int, text: str, finished: Finished) -> dict:
            records = (finished.prompt_logprobs or [] if body.echo else []) + (finished.logprobs or [])
            logprobs = None if vocabulary is None else \
                shapes.completion_logprobs(records, vocabulary, 0 if body.echo else len(texts[index]), eos)
            return {"index": index, "text": (texts[index] if body.echo else "") + text, "logprobs": logprobs,
                    "finish_reason": finished.reason}

        piece = None if vocabulary is None else (lambda p, start: shapes.completion_logprobs(p.logprobs, vocabulary, start, eos))
        return await respond(body, body.model, requests, "completion", build, piece)

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


def _logits_width(model) -> int:
    """How many token ids the model scores (its output layer's rows; may exceed the tokenizer's vocabulary)."""
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


async def _events(body: Sampling, name: str, requests: list[Request], kind: str, created: int, rid: str, items,
                  piece_logprobs=None):
    """Server-sent events in OpenAI's chunk format (each piece with its tokens' logprobs when asked for)."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    offsets = [0] * len(requests)

    def chunk(choices: list, **extra) -> str:
        payload = {"id": rid, "object": obj, "created": created, "model": name, "choices": choices, **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def choice(index: int, text: str | None, reason: str | None, first: bool = False) -> dict:
        logprobs = None
        if piece_logprobs is not None and text:
            logprobs = piece_logprobs(text) if kind == "chat" else piece_logprobs(text, offsets[index])
            offsets[index] += len(text)
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": logprobs}
        return {"index": index, "text": text or "", "finish_reason": reason, "logprobs": logprobs}

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
        yield chunk([], usage=shapes.usage(finished))
    yield "data: [DONE]\n\n"


async def _whole_events(body: Sampling, name: str, choices: list[dict], finished: list[Finished], created: int, rid: str):
    """A finished chat reply as chunks: the role, the content or tool calls in one delta, the finish reason."""
    def chunk(choices: list, **extra) -> str:
        payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name, "choices": choices, **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk([{"index": c["index"], "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
                 for c in choices])
    for c in choices:
        message = c["message"]
        delta = {"content": message["content"]} if message.get("content") else {}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield chunk([{"index": c["index"], "delta": delta, "finish_reason": None, "logprobs": c["logprobs"]}])
        yield chunk([{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"], "logprobs": None}])
    if (body.stream_options or {}).get("include_usage"):
        yield chunk([], usage=shapes.usage(finished))
    yield "data: [DONE]\n\n"
