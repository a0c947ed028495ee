"""Reward *functions* for GRPO and RLOO: checks of a completion, each a score in [0, 1] (or the user's own number).

A reward is given as ``NAME[:ARGUMENT][@WEIGHT]`` (``--reward`` may be repeated; the weights combine them, as TRL's
``reward_weights``):

- ``exact``: 1 when the completion equals the reference answer (case, surrounding space and a final full stop
  ignored), else 0.
- ``numeric[:TOLERANCE]``: 1 when the last number in the completion is within TOLERANCE (default 1e-6) of the
  reference's number, else 0; a completion without a number scores 0.
- ``regex:PATTERN``: 1 when PATTERN (Python ``re``) matches the whole stripped completion, else 0.
- ``json-schema:FILE``: 1 when the completion is JSON that validates against the schema in FILE, else 0 (not JSON: 0).
- ``length:MIN-MAX``: 1 when the completion has MIN to MAX words, else 0.
- a directory: a reward-model artifact (``rlhf reward``): its score of (prompt, completion).
- ``module:function``: the user's function ``(prompts, completions, **columns) -> scores`` (``columns``: the data's
  other fields, e.g. ``answer``; a function taking only ``(prompts, completions)`` is called that way), one finite
  number per completion, checked on every call.

Everything that can be refused without a model is refused by ``check_rewards``, in one line, before any model loads.
A malformed completion gets the documented score (0), never an error. Each reward keeps its name, so TRL logs it on its
own every step (``rewards/numeric/mean``...).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import AdaptlabError

BUILTINS = ("exact", "numeric", "regex", "json-schema", "length")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class RewardSpec:
    kind: str  # a built-in's name, "model" (an artifact) or "function" (module:function)
    argument: str | None
    weight: float
    text: str  # as the user wrote it

    @property
    def name(self) -> str:
        """The name TRL logs it under."""
        return self.kind if self.kind in BUILTINS else Path(self.text.split("@")[0]).name.replace(":", ".")


def parse_reward(text: str) -> RewardSpec:
    """``NAME[:ARGUMENT][@WEIGHT]`` -> a ``RewardSpec`` (refused in one line when malformed)."""
    if not isinstance(text, str) or not text.strip():
        raise AdaptlabError("--reward is empty; give e.g. numeric, exact, regex:PATTERN, json-schema:FILE, length:1-20, a "
                            "reward-model artifact or module:function")
    body, at, weight_text = text.rpartition("@") if "@" in text else (text, "", "")
    weight = 1.0
    if at:
        try:
            weight = float(weight_text)
        except ValueError:
            raise AdaptlabError(f"--reward '{text}': the weight after @ must be a number, not '{weight_text}'") from None
        if not math.isfinite(weight):
            raise AdaptlabError(f"--reward '{text}': the weight must be a finite number")
    name, colon, argument = body.partition(":")
    if name in BUILTINS:
        return RewardSpec(name, argument if colon else None, weight, text)
    if Path(body).is_dir():
        return RewardSpec("model", body, weight, text)
    if colon and name and argument and name.replace(".", "").replace("_", "").isalnum():
        return RewardSpec("function", body, weight, text)
    raise AdaptlabError(f"--reward '{text}' is not a built-in ({', '.join(BUILTINS)}), a reward-model artifact directory "
                        "or module:function")


def check_rewards(texts: Sequence[str]) -> list[RewardSpec]:
    """Parse and check every reward before any model loads: patterns compile, schema files are valid JSON schemas,
    bands and tolerances are numbers, artifacts are reward models, functions import and are callable."""
    if not texts:
        raise AdaptlabError("--reward is required: e.g. --reward numeric (see the reward functions in the docs)")
    specs = [parse_reward(t) for t in texts]
    for spec in specs:
        _build(spec, check_only=True)
    return specs


def build_rewards(specs: Sequence[RewardSpec], device: str | None = None) -> list[Callable]:
    """TRL reward functions (``(prompts, completions, **columns) -> list[float]``), one per spec, each named."""
    return [_build(spec, device=device) for spec in specs]


def completion_text(completion) -> str:
    """TRL hands completions as text or, for conversational data, as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _normal(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _named(function: Callable, name: str) -> Callable:
    function.__name__ = name
    return function


def _build(spec: RewardSpec, check_only: bool = False, device: str | None = None) -> Callable | None:
    where = f"--reward '{spec.text}'"
    if spec.kind == "exact":
        return _named(lambda prompts, completions, answer=None, **_: [
            float(_normal(completion_text(c)) == _normal(str(a))) for c, a in zip(completions, _answers(answer, completions, where))],
            spec.name)
    if spec.kind == "numeric":
        try:
            tolerance = 1e-6 if spec.argument in (None, "") else float(spec.argument)
        except ValueError:
            raise AdaptlabError(f"{where}: the tolerance after numeric: must be a number") from None
        if not tolerance >= 0:
            raise AdaptlabError(f"{where}: the tolerance must be >= 0")

        def numeric(prompts, completions, answer=None, **_):
            scores = []
            for completion, reference in zip(completions, _answers(answer, completions, where)):
                got, want = last_number(completion_text(completion)), last_number(str(reference))
                scores.append(float(got is not None and want is not None and abs(got - want) <= tolerance))
            return scores

        return _named(numeric, spec.name)
    if spec.kind == "regex":
        try:
            pattern = re.compile(spec.argument or "")
        except re.error as exc:
            raise AdaptlabError(f"{where}: not a valid regular expression ({exc})") from None
        if not spec.argument:
            raise AdaptlabError(f"{where}: give the pattern, e.g. regex:^\\d+$")
        return _named(lambda prompts, completions, **_: [float(pattern.fullmatch(completion_text(c).strip()) is not None)
                                                          for c in completions], spec.name)
    if spec.kind == "json-schema":
        validator = _schema_validator(spec.argument, where)

        def schema(prompts, completions, **_):
            scores = []
            for completion in completions:
                try:
                    scores.append(float(validator.is_valid(json.loads(completion_text(completion)))))
                except (ValueError, RecursionError):
                    scores.append(0.0)
            return scores

        return _named(schema, spec.name)
    if spec.kind == "length":
        low, _, high = (spec.argument or "").partition("-")
        try:
            low, high = int(low), int(high)
        except ValueError:
            raise AdaptlabError(f"{where}: give the band in words as MIN-MAX, e.g. length:5-40") from None
        if not 0 <= low <= high:
            raise AdaptlabError(f"{where}: the band needs 0 <= MIN <= MAX")
        return _named(lambda prompts, completions, **_: [float(low <= len(completion_text(c).split()) <= high)
                                                          for c in completions], spec.name)
    if spec.kind == "model":
        from adaptlab.rlhf.rewards import check_reward

        check_reward(spec.argument)
        if check_only:
            return None
        from adaptlab.rlhf.rewards import load_reward

        scorer = load_reward(spec.argument, None, device)
        return _named(lambda prompts, completions, **_: scorer([completion_text(p) for p in prompts],
                                                               [completion_text(c) for c in completions]), spec.name)
    return _user_function(spec, where)


def _answers(answer, completions, where: str) -> list:
    if answer is None:
        raise AdaptlabError(f"{where} compares with the reference answer, but the data has none (prompt/completion or chat "
                            "data: the completion, or the last assistant turn, is the answer)")
    return list(answer)


def _schema_validator(argument: str | None, where: str):
    """The schema file read and checked as ``generate --json-schema`` reads it (one reader, one set of errors)."""
    import jsonschema

    from adaptlab.structured import read_schema

    return jsonschema.Draft202012Validator(read_schema(argument or "", f"{where}: the schema file '{argument}'"))


def _user_function(spec: RewardSpec, where: str) -> Callable:
    import importlib

    module, _, name = spec.argument.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise AdaptlabError(f"{where}: cannot import ({exc})") from None
    if not callable(function):
        raise AdaptlabError(f"{where} is not callable (got {type(function).__name__})")
    from adaptlab.rlhf.rewards import checked_reward

    parameters = inspect.signature(function).parameters.values()
    takes_columns = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters) or len(list(parameters)) > 2

    def two(prompts, completions):  # the reward sees text, as in PPO
        return function(prompts, completions)

    checked = checked_reward(two, where)

    def call(prompts, completions, **columns):
        texts = [completion_text(c) for c in completions]
        prompt_texts = [completion_text(p) for p in prompts]
        if takes_columns:
            return checked_reward(lambda p, c: function(p, c, **columns), where)(prompt_texts, texts)
        return checked(prompt_texts, texts)

    return _named(call, spec.name)
