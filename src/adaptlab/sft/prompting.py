"""Prompting baselines for a generation task: the same test split and metrics as SFT, no weights changed.

Zero-shot asks the model the test prompt as is; k-shot puts k training conversations (one draw, seeded) before
it as earlier user/assistant turns, the way chat models are given demonstrations. The held-out loss is the
loss of the reference replies with those turns in context, so it is comparable with a tuned model's.
"""

from __future__ import annotations

import time

import numpy as np

from adaptlab.errors import AdaptlabError


def evaluate_prompting(model: str, splits, *, shots: int = 0, seed: int = 0, max_new_tokens: int = 48,
                       generate_limit: int | None = 256, device: str | None = None) -> dict:
    """A manifest-shaped result (``strategy``, ``params``, ``base_model``, ``data``, ``metrics``, ``details``)."""
    from adaptlab.models.causal import base_record, load_causal_lm
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import generate_replies, reply_metrics, sequence_loss
    from adaptlab.sft.template import encode_conversation, encode_prompt, ensure_chat_template, prompt_and_reference

    if splits.kind != "chat":
        raise AdaptlabError(f"data '{splits.train.source}' is plain text: prompting needs prompts and replies to score")
    if shots > len(splits.train):
        raise AdaptlabError(f"--shots {shots} is more than the {len(splits.train)} training examples")
    lm, tokenizer, ref = load_causal_lm(model, device)
    ensure_chat_template(tokenizer)
    rng = np.random.default_rng([seed, 7])
    demonstrations = [turn for i in rng.choice(len(splits.train), shots, replace=False)
                      for turn in splits.train.records[i] if turn["role"] != "system"]
    with_shots = [_with_demonstrations(messages, demonstrations) for messages in splits.test.records]
    encoded = [e for e in (encode_conversation(tokenizer, m, 100_000) for m in with_shots) if e is not None]
    started = time.perf_counter()
    test = sequence_loss(lm, encoded, pad_id(tokenizer))
    asked = [prompt_and_reference(m) for m in with_shots[:generate_limit]]
    replies = generate_replies(lm, tokenizer, [encode_prompt(tokenizer, m) for m, _ in asked], max_new_tokens)
    scores = reply_metrics(replies, [reference for _, reference in asked])
    scores.pop("per_example")
    samples = [{"prompt": m[-1]["content"], "reference": r, "output": o}
               for (m, r), o in list(zip(asked, replies["texts"]))[:5]]
    return {
        "strategy": "zero-shot" if shots == 0 else f"{shots}-shot",
        "params": {"model": model, "shots": shots, "seed": seed, "max_new_tokens": max_new_tokens},
        "base_model": base_record(model, ref), "data": splits.describe(),
        "metrics": {"test": {**test, **scores}},
        "cost": {"trainable_params": 0, "eval_seconds": round(time.perf_counter() - started, 3)},
        "details": {"samples": samples},
    }


def _with_demonstrations(messages: list[dict], demonstrations: list[dict]) -> list[dict]:
    """Demonstration turns after any system message, before the conversation itself."""
    system = [t for t in messages[:1] if t["role"] == "system"]
    return system + demonstrations + messages[len(system):]
