"""Structured output: constrain a causal LM's next token to a grammar (a JSON schema, any JSON object, or a tool
call), through xgrammar, a grammar engine built for this (token masks computed from the grammar and the
tokenizer's vocabulary, no hand-written regexes).

- ``Grammars(tokenizer, vocab_size)`` compiles (and caches) grammars for one tokenizer: ``json_schema(schema)``,
  ``json_object()``, ``tool_calls(tools, choice)``. A schema that is not valid JSON Schema, or that the engine
  cannot compile, raises ``AdaptlabError`` with one line saying why (the server answers it as a 400).
- ``Constraint`` follows one generation: ``mask(logits)`` sets every token the grammar does not allow next to
  -inf (in place), ``accept(token)`` advances it. Each row of a batch has its own, so constrained and free rows
  share forward passes.
- ``GrammarLogitsProcessor`` plugs a constraint into transformers' ``generate`` (``adaptlab generate
  --json-schema``).

JSON is generated compact (``", "`` and ``": "`` separators, no free whitespace): a small model given free
whitespace can emit newlines until it runs out of tokens.

Tool calls use the Hermes/Qwen convention, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``: with
``tool_choice`` "required" or a named function the reply *is* one call (a JSON object constrained to the
functions' parameter schemas); with "auto" the reply is free text in which a call, once the model opens
``<tool_call>``, must follow its function's schema. ``parse_tool_calls`` reads the calls back out.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import TYPE_CHECKING, ClassVar

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    import torch

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


def _engine():
    try:
        import xgrammar
    except ImportError:  # pragma: no cover - a dependency; the message says what to install
        raise AdaptlabError("structured output needs the xgrammar package: pip install xgrammar") from None
    return xgrammar


def _reason(exc: Exception) -> str:
    """The engine's message without its C++ source location prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", text)


def check_schema(schema, where: str = "the JSON schema") -> dict | bool:
    """``schema`` if it is a valid JSON Schema (draft 2020-12 rules), else ``AdaptlabError`` saying why."""
    if not isinstance(schema, (dict, bool)):
        raise AdaptlabError(f"{where} must be a JSON object, not {type(schema).__name__}")
    try:
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(schema)
    except ImportError:  # the grammar engine still refuses what it cannot compile
        pass
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise AdaptlabError(f"{where} is not a valid JSON schema{f' at {path}' if path else ''}: {exc.message}") from None
    return schema


def read_schema(path, where: str | None = None) -> dict | bool:
    """A JSON Schema file (``adaptlab generate --json-schema``, the ``json-schema`` reward), checked before any model
    loads; ``where`` names it in errors (default: ``--json-schema file 'PATH'``)."""
    from pathlib import Path

    path = Path(path)
    where = where or f"--json-schema file '{path}'"
    if not str(path) or not path.is_file():
        raise AdaptlabError(f"{where} does not exist")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaptlabError(f"{where} is not JSON: {' '.join(str(exc).split())[:160]}") from None
    return check_schema(schema, where)


class Grammars:
    """Compiled grammars for one tokenizer (and the model's logits width, which may exceed the vocabulary)."""

    _cache: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, tokenizer, vocab_size: int | None = None) -> None:
        xgr = _engine()
        self.tokenizer, self.vocab_size = tokenizer, vocab_size or len(tokenizer)
        stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size, stop_token_ids=stops)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2)

    @classmethod
    def of(cls, tokenizer, vocab_size: int | None = None) -> Grammars:
        """The shared instance for ``tokenizer`` (building its vocabulary table takes a fraction of a second)."""
        with cls._lock:
            found = cls._cache.get(tokenizer, {})
            key = vocab_size or len(tokenizer)
            if key not in found:
                found[key] = cls(tokenizer, key)
                cls._cache[tokenizer] = found
            return found[key]

    def json_schema(self, schema, where: str = "the JSON schema"):
        check_schema(schema, where)
        try:
            return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)
        except Exception as exc:  # the engine's RuntimeError: unsupported keyword, unresolvable $ref...
            raise AdaptlabError(f"{where} cannot be used for constrained decoding: {_reason(exc)}") from None

    def json_object(self):
        return self.json_schema({"type": "object"})

    def tool_calls(self, tools: list[dict], mode: str, name: str | None = None):
        """The grammar of a reply under ``tools`` (OpenAI's ``[{"type": "function", "function": {...}}]``):
        ``mode`` "required" (one call to any tool, ``{"name", "arguments"}``), "named" (one call to function
        ``name``: its arguments only), or "auto" (text, with any ``<tool_call>`` in it well formed)."""
        functions = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
        for function, parameters in functions.items():
            check_schema(parameters, f"the parameters of tool '{function}'")
        if mode == "required":
            return self.json_schema({"anyOf": [call_schema(n, p) for n, p in functions.items()]}, "the tools' parameters")
        if mode == "named":
            return self.json_schema(functions[name], f"the parameters of tool '{name}'")
        tags = [{"type": "tag", "begin": f'{TOOL_OPEN}{{"name": {json.dumps(name)}, "arguments": ',
                 "content": {"type": "json_schema", "json_schema": parameters}, "end": f"}}{TOOL_CLOSE}"}
                for name, parameters in functions.items()]
        tag = {"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": [TOOL_OPEN], "tags": tags,
                                                    "at_least_one": False, "stop_after_first": False}}
        try:
            return self.compiler.compile_structural_tag(json.dumps(tag))
        except Exception as exc:
            raise AdaptlabError(f"the tools cannot be used for constrained decoding: {_reason(exc)}") from None

    def constraint(self, compiled) -> Constraint:
        return Constraint(compiled, self.vocab_size)

    @property
    def token_bytes(self) -> list[bytes]:
        """Each token id's bytes as it appears in text (special tokens by their name)."""
        if not hasattr(self, "_token_bytes"):
            self._token_bytes = list(self.info.decoded_vocab)
        return self._token_bytes


def call_schema(name: str, parameters) -> dict:
    """One tool call as a JSON object: the function's name and its arguments."""
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


class Constraint:
    """One generation under a compiled grammar."""

    def __init__(self, compiled, vocab_size: int) -> None:
        xgr = _engine()
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Disallowed next tokens of ``logits`` (a float vector, at least ``vocab_size`` wide) set to -inf, in
        place; columns past the grammar's vocabulary are never allowed."""
        xgr = _engine()
        self.matcher.fill_next_token_bitmask(self.bitmask, 0)
        row = logits.view(1, -1)
        xgr.apply_token_bitmask_inplace(row[:, : self.vocab_size], self.bitmask.to(logits.device))
        if row.shape[1] > self.vocab_size:
            row[:, self.vocab_size:] = float("-inf")
        return logits

    def accept(self, token: int) -> bool:
        return bool(self.matcher.accept_token(int(token)))

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()


class GrammarLogitsProcessor:
    """transformers' ``LogitsProcessor`` protocol over one ``Constraint`` per batch row."""

    def __init__(self, constraints: list[Constraint], prompt_length: int) -> None:
        self.constraints, self.prompt_length = constraints, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.prompt_length:  # the token chosen at the previous step
            for row, constraint in enumerate(self.constraints):
                if not constraint.finished:
                    constraint.accept(int(input_ids[row, -1]))
        scores = scores.float()
        for row, constraint in enumerate(self.constraints):
            if not constraint.finished:
                constraint.mask(scores[row])
        return scores


def parse_tool_calls(text: str) -> tuple[str, list[dict]]:
    """(the text outside any ``<tool_call>`` block, the calls as ``{"name", "arguments"}``) from a reply."""
    calls, outside, position = [], [], 0
    for match in re.finditer(re.escape(TOOL_OPEN) + r"(.*?)" + re.escape(TOOL_CLOSE), text, flags=re.DOTALL):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            outside.append(text[position: match.start()])
            position = match.end()
            calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
    outside.append(text[position:])
    return "".join(outside).strip(), calls


def tools_instruction(tools: list[dict]) -> str:
    """A system message describing ``tools`` and the call format, for chat templates that do not render tools."""
    described = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    return ("You can call functions. The available functions, as JSON:\n" + described +
            f'\nTo call one, reply with {TOOL_OPEN}{{"name": NAME, "arguments": {{...}}}}{TOOL_CLOSE}.')
