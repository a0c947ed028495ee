"""How good a causal LM is at a generation task, and how much of what it knew it kept.

- ``sequence_loss``: token-weighted next-token loss on labelled tokens (held-out loss; perplexity = exp(loss)).
- ``generate_replies``: batched greedy generation from rendered prompts (left-padded), reporting for each reply
  whether the model stopped by itself (emitted its end-of-turn token) or ran into ``max_new_tokens``.
- ``reply_metrics``: exact match and token F1 (SQuAD normalisation) and ROUGE-L against the references.
- ``forgetting_probe``: perplexity on general text no training saw, and zero-shot Rotten Tomatoes accuracy by
  label scoring (``LabelScorer``, as the classification ``zero-shot`` entry scores); measured before and after
  tuning, the deltas are the forgetting.

Every function works on plain and PEFT models alike (prompt tuning's virtual tokens included). None of them
chooses a precision: they run in the caller's autocast context, and ``SFTJob.evaluate`` runs them all under the
job's ``Runtime.autocast()``, so ``--precision bf16`` means bf16 autocast in evaluation as in training.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from adaptlab._io import write_json
from adaptlab.errors import AdaptlabError
from adaptlab.metrics import exact_match, rouge_l, token_f1
from adaptlab.models.loading import pad_batch, pad_id
from adaptlab.sft.template import IGNORE, encode_text

RT_QUESTION = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\nReview: "
RT_LABEL_WORDS = ("negative", "positive")  # the reply scored for label 0 and label 1
RT_SAMPLE = 200  # Rotten Tomatoes test-pool sentences scored for the forgetting probe
GENERAL_MAX_TOKENS = 128  # tokens of each general text scored (the opening of a Wikipedia summary)


@torch.inference_mode()
def sequence_loss(model, examples: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int = 16) -> dict:
    """``{"loss", "perplexity", "tokens"}`` over the labelled tokens of ``examples`` ((ids, labels) pairs)."""
    from adaptlab.training.module import causal_lm_loss

    total, tokens = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))  # similar lengths, little padding
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start : start + batch_size]]
        ids, mask = pad_batch([ids for ids, _ in batch], pad)
        labels, _ = pad_batch([labels for _, labels in batch], IGNORE)
        inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        loss, count = causal_lm_loss(model, {k: v.to(model.device) for k, v in inputs.items()}, reduction="sum")
        total += float(loss)
        tokens += count
    loss = total / max(tokens, 1)
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "tokens": tokens}


@torch.inference_mode()
def generate_replies(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int = 16) -> dict:
    """Greedy replies to token-id ``prompts``: ``{"texts", "lengths", "stopped", "seconds", "tokens"}``."""
    eos = tokenizer.eos_token_id
    texts, lengths, stopped = [""] * len(prompts), [0] * len(prompts), [False] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    start_time = time.perf_counter()
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        ids, mask = pad_batch([prompts[i] for i in members], pad_id(tokenizer), side="left")
        output = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=pad_id(tokenizer), eos_token_id=eos)
        for row, i in enumerate(members):
            new = output[row, ids.shape[1]:].tolist()
            end = new.index(eos) if eos in new else len(new)
            texts[i] = tokenizer.decode(new[:end], skip_special_tokens=True).strip()
            lengths[i], stopped[i] = end, eos in new
    seconds = time.perf_counter() - start_time
    return {"texts": texts, "lengths": lengths, "stopped": stopped, "seconds": seconds, "tokens": sum(lengths)}


def reply_metrics(replies: dict, references: Sequence[str]) -> dict:
    """Means over the replies; ``per_example`` keeps the ROUGE-L, F1 and EM lists for paired comparisons."""
    texts = replies["texts"]
    per_example = {
        "exact_match": [exact_match(t, (r,)) for t, r in zip(texts, references)],
        "token_f1": [token_f1(t, (r,)) for t, r in zip(texts, references)],
        "rouge_l": [rouge_l(t, r) for t, r in zip(texts, references)],
    }
    summary = {name: round(float(np.mean(values)), 4) for name, values in per_example.items()}
    return {
        **summary, "n": len(texts), "mean_length": round(float(np.mean(replies["lengths"])), 2),
        "stopped": round(float(np.mean(replies["stopped"])), 4),
        "generated_tokens_per_second": round(replies["tokens"] / max(replies["seconds"], 1e-9), 1),
        "per_example": per_example,
    }


def rotten_tomatoes_probe(size: int = RT_SAMPLE) -> tuple[list[str], np.ndarray]:
    """A fixed sample of Rotten Tomatoes sentences (balanced, seed 0): the zero-shot classification probe."""
    from adaptlab.data import load_data

    data = load_data("rotten_tomatoes")
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(np.flatnonzero(data.labels == k), size // 2, replace=False) for k in (0, 1)])
    return [data.texts[i] for i in chosen], data.labels[chosen]


def forgetting_sample(size: int = RT_SAMPLE, forgetting_text: str | None = None) -> tuple[list[str], tuple]:
    """(general texts, Rotten Tomatoes probe) for ``forgetting_probe``: ``size`` sentences, and the default
    general sample (64 held-out Wikipedia summaries) cut to a third of ``size`` (at least 8) so that a smaller
    probe is cheaper on both halves; a ``forgetting_text`` file is used whole."""
    from adaptlab.data.generation import general_text_sample, load_generation_data

    if forgetting_text is None:
        general = general_text_sample()[: max(8, size // 3)]
    else:
        data = load_generation_data(forgetting_text)
        if data.kind != "text":
            raise AdaptlabError(f"--forgetting-text '{forgetting_text}' must be plain text (.txt, or .jsonl rows with 'text')")
        general = data.records
    return general, rotten_tomatoes_probe(size)


def rt_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The probe's prompts: ``RT_QUESTION`` and the sentence as a user turn, rendered as inference renders it."""
    from adaptlab.sft.template import encode_prompt

    return [encode_prompt(tokenizer, [{"role": "user", "content": RT_QUESTION + t}]) for t in texts]


def rt_accuracy(model, tokenizer, texts: Sequence[str], labels: np.ndarray, batch_size: int = 16) -> float:
    """Zero-shot accuracy: the assistant's reply to the ``RT_QUESTION`` chat prompt scored as "negative" or
    "positive" by ``adaptlab.prompting.scoring.LabelScorer`` (each label word's full log-likelihood), the scorer
    of the classification ``zero-shot`` entry; the prompt is this probe's own, not that entry's template. The
    tokens every prompt starts with (the chat template's opening and the question) are read once and shared
    through the scorer's key/value cache; prompt-learning PEFT models are scored through their full forward."""
    from adaptlab.prompting.scoring import LabelScorer

    prompts = rt_prompts(tokenizer, texts)
    if not prompts:
        raise AdaptlabError("the Rotten Tomatoes probe has no sentence to score")
    shared = 0  # the common opening, short of the shortest prompt's last token (each query keeps one)
    while shared < min(len(p) for p in prompts) - 1 and len({p[shared] for p in prompts}) == 1:
        shared += 1
    items = [(p[:shared], p[shared:]) for p in prompts]
    scores = LabelScorer(model, tokenizer, batch_size=batch_size).score_ids(items, RT_LABEL_WORDS)
    return round(float(np.mean(scores.argmax(1) == np.asarray(labels))), 4)


def forgetting_probe(model, tokenizer, general_texts: Sequence[str], rt: tuple[list[str], np.ndarray]) -> dict:
    """``{"general_ppl", "rt_accuracy"}`` for one model (call before and after tuning)."""
    examples = [chunk for text in general_texts for chunk in encode_text(tokenizer, text, GENERAL_MAX_TOKENS)[:1]]
    general = sequence_loss(model, examples, pad_id(tokenizer))
    return {"general_ppl": general["perplexity"], "rt_accuracy": rt_accuracy(model, tokenizer, *rt)}


def cached_probe(cache: Path | None, compute: Callable[[], dict]) -> dict:
    """The starting model's probe read from ``cache`` if it is there, else computed (and written when a cache
    is given): a comparison probes each base model once, not once per run."""
    if cache is not None and cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    probe = compute()
    if cache is not None:
        write_json(cache, probe)
    return probe


def forgetting_deltas(before: dict, after: dict) -> dict:
    """Before, after and the change (perplexity also as a relative change)."""
    return {
        "before": before, "after": after,
        "general_ppl_delta": round(after["general_ppl"] - before["general_ppl"], 3),
        "general_ppl_relative": round(after["general_ppl"] / before["general_ppl"] - 1, 4),
        "rt_accuracy_delta": round(after["rt_accuracy"] - before["rt_accuracy"], 4),
    }
