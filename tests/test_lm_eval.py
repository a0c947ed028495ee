"""lm-evaluation-harness scores a model served by adaptlab: ``local-completions`` against ``/v1/completions`` (a real
HTTP server on loopback) on the shipped local tasks (``adaptlab.serve.evaltasks``), a few items, and its
log-likelihoods are the model's own."""

from __future__ import annotations

import math
import re

import pytest
import torch

from adaptlab.loopback import serve_in_background

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'lm-eval[api]')")


@pytest.fixture(scope="module")
def server(tiny_llama):
    from adaptlab.serve import ServeOptions, create_app, load_registry

    registry = load_registry({}, [f"tiny={tiny_llama}"], None, "cpu")
    with serve_in_background(create_app(registry, ServeOptions()), "adaptlab serve") as root:
        yield registry, f"{root}/v1/completions"


def evaluate(url: str, tokenizer, task: str, limit: int, **options) -> dict:
    from lm_eval.tasks import TaskManager

    from adaptlab.serve.evaltasks import TASKS_DIR

    return lm_eval.simple_evaluate(
        model="local-completions", tasks=[task], limit=limit, log_samples=True,
        model_args=f"base_url={url},model=tiny,tokenizer={tokenizer},tokenizer_backend=huggingface,max_retries=1",
        task_manager=TaskManager(include_path=str(TASKS_DIR)), **options)


def sum_logprob(model, context: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return float(logprobs.gather(1, targets[:, None])[len(context) - 1:, 0].sum())


def test_lm_eval_scores_the_shipped_sentiment_task_through_the_server(server, tiny_llama):
    """The harness's loglikelihoods equal the served model's; its accuracy is adaptlab's probe's on those items."""
    import numpy as np

    from adaptlab.sft.evaluate import rt_accuracy

    registry, url = server
    generator = registry.generators["tiny"]
    result = evaluate(url, tiny_llama, "adaptlab_rt_sentiment", 3, apply_chat_template=True)
    samples = result["samples"]["adaptlab_rt_sentiment"]
    assert len(samples) == 3 and 0 <= result["results"]["adaptlab_rt_sentiment"]["acc,none"] <= 1
    tokenizer = generator.tokenizer
    texts, labels = [], []
    for sample in samples:
        for k, (context, word) in enumerate(sample["arguments"]):
            assert word == ("negative", "positive")[k] and context.endswith("assistant\n")  # the chat template's
            served, _ = sample["resps"][k][0]
            context_ids = tokenizer(context.rstrip(), add_special_tokens=False)["input_ids"]
            whole = tokenizer(context + word, add_special_tokens=False)["input_ids"]
            assert served == pytest.approx(sum_logprob(generator.model, context_ids, whole[len(context_ids):]), abs=1e-3)
        question = sample["doc"]["question"]
        texts.append(question.split("Review: ", 1)[1])
        labels.append(sample["doc"]["label"])
    harness = np.mean([s["acc"] for s in samples])
    assert rt_accuracy(generator.model, tokenizer, texts, np.array(labels)) == pytest.approx(harness)


def test_lm_eval_perplexity_task_matches_the_models_own_loss(server, tiny_llama):
    registry, url = server
    generator = registry.generators["tiny"]
    result = evaluate(url, tiny_llama, "adaptlab_wiki_ppl", 2)
    samples = result["samples"]["adaptlab_wiki_ppl"]
    prefix = generator.tokenizer.bos_token_id if generator.tokenizer.bos_token_id is not None else generator.tokenizer.eos_token_id
    total, words = 0.0, 0
    for sample in samples:
        text = sample["doc"]["text"]
        ids = generator.tokenizer(text, add_special_tokens=False)["input_ids"]
        total += sum_logprob(generator.model, [prefix], ids)
        words += len(re.split(r"\s+", text))  # as the harness counts them
    assert result["results"]["adaptlab_wiki_ppl"]["word_perplexity,none"] == pytest.approx(math.exp(-total / words), rel=1e-3)
