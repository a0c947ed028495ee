"""OpenAI's reply shapes, as the routes of ``adaptlab.serve.openai_api`` write them: a request message as the chat
template reads it (tool calls included), tool calls parsed from a finished reply, chat and completion log-probabilities
(with lm-evaluation-harness's reading of the last entry in mind), and usage counts."""

from __future__ import annotations

import json
import uuid

from adaptlab.serve.decoding import Finished, TokenLogprob


def template_message(message, template_has_calls: bool) -> dict:
    """A request message as the chat template reads it; an assistant turn's tool calls written as the
    ``<tool_call>`` text the model is asked to produce, for templates that do not render ``tool_calls``."""
    role = "system" if message.role == "developer" else message.role
    calls = [c.get("function") or {} for c in message.tool_calls or [] if isinstance(c, dict)]
    if not calls:
        return {"role": role, "content": message.text()}
    if template_has_calls:
        return {"role": role, "content": message.text(), "tool_calls": message.tool_calls}
    from adaptlab.structured import TOOL_CLOSE, TOOL_OPEN

    def arguments(call: dict):
        try:
            return json.loads(call.get("arguments") or "{}") if isinstance(call.get("arguments"), str) else call.get("arguments")
        except json.JSONDecodeError:
            return call.get("arguments")

    written = "".join(f"{TOOL_OPEN}{json.dumps({'name': c.get('name'), 'arguments': arguments(c)}, ensure_ascii=False)}{TOOL_CLOSE}"
                      for c in calls)
    return {"role": role, "content": message.text() + written}


def tool_calls(text: str, tools: tuple) -> list[dict]:
    """The calls in a finished reply, in OpenAI's shape (``arguments`` a JSON string)."""
    _, mode, name = tools
    if mode == "named":
        found = [{"name": name, "arguments": text}]
    elif mode == "required":
        try:
            call = json.loads(text)
        except json.JSONDecodeError:
            return []
        found = [{"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}]
    else:
        from adaptlab.structured import parse_tool_calls

        found = [{"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)} for c in parse_tool_calls(text)[1]]
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": call} for call in found]


def outside_calls(text: str) -> str:
    from adaptlab.structured import parse_tool_calls

    return parse_tool_calls(text)[0]


def token_text(vocabulary: list[bytes], token: int) -> str:
    return vocabulary[token].decode("utf-8", errors="replace") if token < len(vocabulary) else ""


def chat_logprobs(records, vocabulary: list[bytes], eos: int | None = None) -> list[dict]:
    """OpenAI's chat ``logprobs.content``: one entry per token of the content (the end token is left out), with
    its bytes and alternatives."""
    def entry(token: int, logprob: float) -> dict:
        raw = vocabulary[token] if token < len(vocabulary) else b""
        return {"token": token_text(vocabulary, token), "logprob": logprob, "bytes": list(raw)}

    return [{**entry(r.token, r.logprob), "top_logprobs": [entry(t, lp) for t, lp in r.top]}
            for r in records or () if r.token != eos]


def completion_logprobs(records: list[TokenLogprob], vocabulary: list[bytes], offset: int, eos: int | None = None) -> dict:
    """OpenAI's completions ``logprobs``: ``tokens``, ``token_logprobs``, ``top_logprobs`` (token -> log-prob;
    null where the token has no prediction, the echoed prompt's first) and ``text_offset`` (from ``offset``). A
    reply that ended with the end token lists it last, as "" (it adds no text): lm-evaluation-harness reads the
    last entry as the generated token and the ones before it as the prompt's."""
    tokens, offsets = [], []
    for record in records:
        tokens.append("" if record.token == eos and record is records[-1] else token_text(vocabulary, record.token))
        offsets.append(offset)
        offset += len(tokens[-1])
    top = [None if r.logprob is None else {token_text(vocabulary, t): lp for t, lp in r.top} for r in records]
    return {"tokens": tokens, "token_logprobs": [r.logprob for r in records], "top_logprobs": top, "text_offset": offsets}


def usage(finished: list[Finished]) -> dict:
    prompt = sum(f.prompt_tokens for f in finished[:1]) if len({f.prompt_tokens for f in finished}) == 1 else sum(f.prompt_tokens for f in finished)
    completion = sum(f.completion_tokens for f in finished)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
