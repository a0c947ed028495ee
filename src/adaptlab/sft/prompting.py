"""Prompting baselines for a generation task: the same test split and metrics as SFT, no weights changed.

Zero-shot asks the model the test prompt as is; k-shot puts k training conversations before it as earlier
user/assistant turns, the way chat models are given demonstrations: either ``draws`` random draws (the one
with the lowest validation loss kept, every draw scored on test so the spread is visible) or, with
``selection="nearest"``, the k training examples whose prompts are closest to each prompt by embedding
(kNN demonstration selection, Liu et al. 2022). ``context`` rewrites every conversation before it is asked
(retrieval-augmented prompting puts the retrieved passages there). The held-out loss is the loss of the
reference replies with all of that in context, so it is comparable with a tuned model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from adaptlab.errors import AdaptlabError

SELECTIONS = ("random", "nearest")
EMBEDDER = "minilm"  # nearest-demonstration search
SAMPLE_ROWS = 5


def evaluate_prompting(model: str, splits, *, shots: int = 0, selection: str = "random", draws: int = 1, seed: int = 0,
                       context: Callable[[list[dict]], list[dict]] | None = None, max_new_tokens: int = 48,
                       generate_limit: int | None = 256, device: str | None = None) -> dict:
    """A manifest-shaped result (``strategy``, ``params``, ``base_model``, ``data``, ``metrics``, ``details``)
    plus ``per_example`` (the kept variant's per-test-example scores, for paired comparisons)."""
    from adaptlab.models.causal import base_record, load_causal_lm
    from adaptlab.sft.template import ensure_chat_template

    if splits.kind != "chat":
        raise AdaptlabError(f"data '{splits.train.source}' is plain text: prompting needs prompts and replies to score")
    if shots > len(splits.train):
        raise AdaptlabError(f"--shots {shots} is more than the {len(splits.train)} training examples")
    if selection not in SELECTIONS:
        raise AdaptlabError(f"selection must be one of {', '.join(SELECTIONS)}, not '{selection}'")
    if draws < 1:
        raise AdaptlabError(f"draws must be at least 1, not {draws}")
    lm, tokenizer, ref = load_causal_lm(model, device)
    ensure_chat_template(tokenizer)
    started = time.perf_counter()
    variants = _variants(splits, shots, selection, draws if shots and selection == "random" else 1, seed)
    val_losses = [_scored(lm, tokenizer, variant(splits.val.records, "val"), context, None, 0)["loss"] for variant in variants]
    chosen = int(np.argmin(val_losses))
    tests = [_scored(lm, tokenizer, variant(splits.test.records, "test"), context, generate_limit, max_new_tokens)
             for variant in variants]
    test = tests[chosen]
    metrics = {"test": test["metrics"], "val": {"loss": val_losses[chosen]}}
    if len(variants) > 1:
        rouge = [t["metrics"]["rouge_l"] for t in tests]
        metrics["test_over_draws"] = {"rouge_l": rouge, "val_loss": val_losses, "chosen": chosen,
                                      "mean": round(float(np.mean(rouge)), 4), "std": round(float(np.std(rouge)), 4)}
    name = "zero-shot" if shots == 0 else f"{shots}-shot" + ("-nearest" if selection == "nearest" else "")
    return {
        "strategy": name,
        "params": {"model": model, "shots": shots, "selection": selection, "draws": len(variants), "seed": seed,
                   "max_new_tokens": max_new_tokens},
        "base_model": base_record(model, ref), "data": splits.describe(), "metrics": metrics,
        "cost": {"trainable_params": 0, "eval_seconds": round(time.perf_counter() - started, 3),
                 "generated_tokens_per_second": test["metrics"].get("generated_tokens_per_second")},
        "details": {"samples": test["samples"]},
        "per_example": test["per_example"],
    }


def _scored(lm, tokenizer, conversations: list[list[dict]], context, generate_limit: int | None, max_new_tokens: int) -> dict:
    """Loss of the references in context; with ``max_new_tokens``, greedy replies to the first
    ``generate_limit`` prompts scored against them."""
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import generate_replies, reply_metrics, sequence_loss
    from adaptlab.sft.template import encode_conversation, encode_prompt, prompt_and_reference

    shown = [messages[-2]["content"] for messages in conversations]  # the prompt as written, before any context
    if context is not None:
        conversations = [context(messages) for messages in conversations]
    encoded = [e for e in (encode_conversation(tokenizer, m, 100_000) for m in conversations) if e is not None]
    loss = sequence_loss(lm, encoded, pad_id(tokenizer))
    if not max_new_tokens:
        return loss
    asked = [prompt_and_reference(m) for m in conversations[:generate_limit]]
    replies = generate_replies(lm, tokenizer, [encode_prompt(tokenizer, m) for m, _ in asked], max_new_tokens)
    scores = reply_metrics(replies, [reference for _, reference in asked])
    per_example = scores.pop("per_example")
    samples = [{"prompt": p, "reference": r, "output": o}
               for p, (_, r), o in list(zip(shown, asked, replies["texts"]))[:SAMPLE_ROWS]]
    return {"metrics": {**loss, **scores}, "per_example": per_example, "samples": samples}


def _variants(splits, shots: int, selection: str, draws: int, seed: int) -> list[Callable[[list, str], list]]:
    """Each variant maps (conversations, split name) to the same conversations with demonstrations added."""
    train = splits.train.records
    if shots == 0:
        return [lambda conversations, _: conversations]
    if selection == "nearest":
        neighbours = _nearest(splits, shots)
        return [lambda conversations, part: [_with_demonstrations(m, [t for i in neighbours[part][n] for t in _turns(train[i])])
                                             for n, m in enumerate(conversations)]]
    rng = np.random.default_rng([seed, 7])
    variants = []
    for _ in range(draws):
        demonstrations = [t for i in rng.choice(len(train), shots, replace=False) for t in _turns(train[i])]
        variants.append(lambda conversations, _, d=demonstrations: [_with_demonstrations(m, d) for m in conversations])
    return variants


def _nearest(splits, shots: int) -> dict[str, list[list[int]]]:
    """For each validation and test conversation, the ``shots`` training examples with the most similar last
    user message (cosine of normalised embeddings), least similar first so the closest sits next to the question."""
    from adaptlab.embeddings import Embedder

    embedder = Embedder(EMBEDDER, "mean", normalize=True, cache=False, progress=False)
    question = lambda messages: [t["content"] for t in messages if t["role"] == "user"][-1]
    train = embedder.embed([question(m) for m in splits.train.records])
    found = {}
    for part in ("val", "test"):
        queries = embedder.embed([question(m) for m in getattr(splits, part).records])
        order = np.argsort(-(queries @ train.T), axis=1)[:, :shots]
        found[part] = [row[::-1].tolist() for row in order]
    return found


def _turns(messages: list[dict]) -> list[dict]:
    return [turn for turn in messages if turn["role"] != "system"]


def _with_demonstrations(messages: list[dict], demonstrations: list[dict]) -> list[dict]:
    """Demonstration turns after any system message, before the conversation itself."""
    system = [t for t in messages[:1] if t["role"] == "system"]
    return system + demonstrations + messages[len(system):]
