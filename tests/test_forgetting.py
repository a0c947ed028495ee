"""The forgetting probe's zero-shot Rotten Tomatoes accuracy is label scoring by ``LabelScorer`` (the scorer of the
classification ``zero-shot`` entry), on plain models and on every kind of PEFT model, virtual tokens included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptlab.prompting.scoring import LabelScorer
from adaptlab.sft.evaluate import RT_LABEL_WORDS, RT_QUESTION, rotten_tomatoes_probe, rt_accuracy, rt_prompts

SENTENCES = 8  # real Rotten Tomatoes sentences, balanced


@pytest.fixture(scope="module")
def probe():
    return rotten_tomatoes_probe(SENTENCES)


def _rendered(tokenizer, texts) -> list[str]:
    """The probe's prompts as text, rendered by the tokenizer's chat template (not through the probe's code)."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": RT_QUESTION + t}], tokenize=False,
                                          add_generation_prompt=True) for t in texts]


def _by_hand(model, tokenizer, texts) -> np.ndarray:
    """log p(label word | prompt) from one full forward per (prompt, word): no cache, no batching, all logits."""
    out = np.zeros((len(texts), len(RT_LABEL_WORDS)))
    for i, text in enumerate(_rendered(tokenizer, texts)):
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        for k, word in enumerate(RT_LABEL_WORDS):
            label = tokenizer(word, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + label])).logits[0, -(len(prompt) + len(label)):]
            logprobs = torch.log_softmax(logits.float(), -1)
            out[i, k] = sum(logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(label))
    return out


def _tiny(tiny_llama, kind: str):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptlab.sft.template import ensure_chat_template

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ensure_chat_template(tokenizer)
    configs = {"lora": LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
               "prompt-tuning": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
               "prefix-tuning": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)}
    if kind != "plain":
        model = get_peft_model(model, configs[kind]).eval()
    return model, tokenizer


@pytest.mark.parametrize("kind", ["plain", "lora", "prompt-tuning", "prefix-tuning"])
def test_rt_accuracy_is_label_scorer_accuracy_on_the_same_prompts(tiny_llama, probe, kind):
    """rt_accuracy == the accuracy of LabelScorer scoring the rendered prompts directly (no shared prefix), and
    those scores are the label words' full log-likelihoods computed by hand, virtual tokens included."""
    model, tokenizer = _tiny(tiny_llama, kind)
    texts, labels = probe
    rendered = _rendered(tokenizer, texts)
    assert [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rendered] == rt_prompts(tokenizer, texts)
    direct = LabelScorer(model, tokenizer, reuse_prefix=False).score([("", r) for r in rendered], RT_LABEL_WORDS)
    np.testing.assert_allclose(direct, _by_hand(model, tokenizer, texts), atol=1e-4)
    assert rt_accuracy(model, tokenizer, texts, labels) == round(float(np.mean(direct.argmax(1) == labels)), 4)
    if kind != "plain":  # the starting model, as SFTJob probes it: the adapter switched off
        with model.disable_adapter():
            base = LabelScorer(model, tokenizer, reuse_prefix=False).score([("", r) for r in rendered], RT_LABEL_WORDS)
            assert rt_accuracy(model, tokenizer, texts, labels) == round(float(np.mean(base.argmax(1) == labels)), 4)
        # the adapter (or its virtual tokens) was in the scores: on this random model 5 virtual tokens among ~70
        # move them by ~5e-4, a hundred times the float32 noise of the comparisons above
        assert np.abs(direct - base).max() > 2e-4
        plain, _ = _tiny(tiny_llama, "plain")
        np.testing.assert_allclose(base, _by_hand(plain, tokenizer, texts), atol=1e-4)


def test_the_shared_prefix_cache_changes_no_score(tiny_llama, probe):
    """rt_accuracy reads the prompts' common opening once (LabelScorer's prefix cache); the scores are those of
    scoring each whole prompt."""
    model, tokenizer = _tiny(tiny_llama, "lora")
    texts, _ = probe
    prompts = rt_prompts(tokenizer, texts)
    shared = 10
    assert all(p[:shared] == prompts[0][:shared] for p in prompts)
    split = LabelScorer(model, tokenizer).score_ids([(p[:shared], p[shared:]) for p in prompts], RT_LABEL_WORDS)
    whole = LabelScorer(model, tokenizer, reuse_prefix=False).score_ids([([], p) for p in prompts], RT_LABEL_WORDS)
    np.testing.assert_allclose(split, whole, atol=1e-4)
    assert LabelScorer(_tiny(tiny_llama, "prompt-tuning")[0], tokenizer).reuse_prefix is False  # virtual tokens come first


@pytest.mark.slow
def test_smollm2_rt_accuracy_is_the_zero_shot_label_scores(probe):
    """On the packaged SmolLM2: "negative" and "positive" are one token each, so LabelScorer's full label-word
    likelihoods pick what the next-token logits pick; the probe's accuracy is the by-hand accuracy."""
    from adaptlab.models.causal import load_causal_lm

    model, tokenizer, _ = load_causal_lm("smollm2-135m", "cpu")
    texts, labels = probe
    assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in RT_LABEL_WORDS)
    by_hand = _by_hand(model, tokenizer, texts)
    accuracy = rt_accuracy(model, tokenizer, texts, labels)
    assert accuracy == round(float(np.mean(by_hand.argmax(1) == labels)), 4)
    assert accuracy >= 0.5  # the instruct model does the task zero-shot (0.75 on these 8 sentences, as before LabelScorer)
