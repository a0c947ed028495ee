"""In-context learning: templates, label scoring (with and without the shared KV cache), demonstrations,
calibration, draws, artifacts, generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.data import load_data, split_data
from adaptlab.prompting.scoring import LabelScorer
from adaptlab.prompting.template import Demonstration, PromptTemplate
from conftest import read_json_lines, sentiment_rows, write_csv


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.mark.parametrize(
    "example, message",
    [
        ("Review: {label}", "{text} placeholder"),
        ("Review: {text}", "{label} placeholder"),
        ("{text} {label} {extra}", "only use {text} and {label}"),
        ("{label}: {text}", "put {label} after {text}"),
    ],
)
def test_bad_templates(example, message):
    with pytest.raises(AdaptlabError, match=message.replace("{", r"\{").replace("}", r"\}")):
        PromptTemplate("Classify.", example)


def test_plain_and_chat_rendering_share_a_prefix(tiny_lm):
    _, tokenizer = tiny_lm
    demos = [Demonstration("great film", 1), Demonstration("bad film", 0)]
    plain = PromptTemplate("Classify.", "Review: {text}\nSentiment: {label}", chat="off")
    prefix, query, lead = plain.render(tokenizer, demos, ["negative", "positive"], "fine acting")
    assert prefix == "Classify.\n\nReview: great film\nSentiment: positive\n\nReview: bad film\nSentiment: negative\n\nReview:"
    assert query == " fine acting\nSentiment:" and lead == " "
    chat = PromptTemplate("Classify.", "Review: {text}\nSentiment: {label}", chat="turns")
    p1, q1, lead = chat.render(tokenizer, demos, ["negative", "positive"], "fine acting")
    p2, _, _ = chat.render(tokenizer, demos, ["negative", "positive"], "another text")
    assert p1 == p2 and "<|im_start|>assistant\npositive<|im_end|>" in p1
    assert q1.startswith(" fine acting") and q1.endswith("<|im_start|>assistant\n") and lead == ""


def _reference_scores(model, tokenizer, items, continuations):
    """Straightforward: score every full sequence from scratch, reading all logits."""
    out = np.zeros((len(items), len(continuations)))
    for i, (prefix, query) in enumerate(items):
        context = tokenizer(prefix, add_special_tokens=False)["input_ids"] + tokenizer(query, add_special_tokens=False)["input_ids"]
        for k, cont in enumerate(continuations):
            label = tokenizer(cont, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + label])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
            out[i, k] = sum(logprobs[len(context) - 1 + j, t].item() for j, t in enumerate(label))
    return out


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("continuations", [[" positive", " extremely negative indeed"], [" positive", " negative"]])
def test_scorer_matches_full_recomputation_including_multi_token_labels(tiny_lm, reuse_prefix, continuations):
    """Mixed-length label words (one sequence per label) and single-token ones (one pass per query)."""
    model, tokenizer = tiny_lm
    items = [("Shared instruction and demos:", " first query text"), ("Shared instruction and demos:", " a much longer second query with words"),
             ("Another prefix", " third")]
    scorer = LabelScorer(model, tokenizer, batch_size=3, reuse_prefix=reuse_prefix)
    np.testing.assert_allclose(scorer.score(items, continuations), _reference_scores(model, tokenizer, items, continuations), atol=1e-4)
    normalized = LabelScorer(model, tokenizer, normalize_length=True).score(items, continuations)
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations]
    np.testing.assert_allclose(normalized, scorer.score(items, continuations) / lengths, atol=1e-4)


def test_empty_label_word_is_refused(tiny_lm):
    with pytest.raises(AdaptlabError, match="tokenizes to nothing"):
        LabelScorer(*tiny_lm).score([("p", "q")], ["", " yes"])


@pytest.mark.parametrize("selection", ["random", "balanced", "knn"])
def test_icl_strategy_artifact_reloads_to_identical_scores(selection, tiny_llama, tiny_bert, toy_splits, tmp_path):
    result = adaptlab.train("icl", toy_splits, tmp_path / "icl", model=str(tiny_llama), k=2, selection=selection,
                            draws=3, calibrate=True, embedding_model=str(tiny_bert), progress=False)
    manifest = result.manifest
    assert manifest["cost"]["trainable_params"] == 0
    if selection == "knn":
        assert "test_over_draws" not in manifest["metrics"]
    else:
        draws = manifest["metrics"]["test_over_draws"]
        assert len(draws["accuracy"]) == 3 and draws["chosen"] == int(np.argmax(manifest["details"]["prompting"]["val_accuracy_by_draw"]))
    prompt = json.loads((tmp_path / "icl" / "prompt.json").read_text())
    assert prompt["calibration"] is not None and len(prompt["calibration"]) == 2
    train_texts = set(toy_splits.train.texts)
    assert all(d["text"] in train_texts for d in prompt["demonstrations"])  # never from the test split
    texts = toy_splits.test.texts
    a = adaptlab.load_artifact(tmp_path / "icl", progress=False).predict_proba(texts)
    b = adaptlab.load_artifact(tmp_path / "icl", progress=False).predict_proba(texts)
    np.testing.assert_array_equal(a, b)
    assert (a.argmax(1) == toy_splits.test.labels).mean() == pytest.approx(manifest["metrics"]["test"]["accuracy"])


def test_the_validation_scores_of_the_draw_search_are_reused_and_timings_recompute(tiny_llama, toy_splits, tmp_path):
    """Choosing the draw scores the validation split; the job's validation metrics reuse those scores (an LM pass over
    it cost half a minute per prompting entry in compare) unless a timing asks for everything to be recomputed."""
    from adaptlab.methods import get_strategy

    strategy = get_strategy("icl")(model=str(tiny_llama), k=2, draws=2, calibrate=True, progress=False).fit(toy_splits, tmp_path)
    for index in range(2):
        strategy.use_variant(index)
        calls = []
        score = strategy.scorer_.score
        strategy.scorer_.score = lambda *a, **k: calls.append(1) or score(*a, **k)
        reused = strategy.predict_proba(toy_splits.val.texts)
        assert not calls
        with strategy.uncached():
            fresh = strategy.predict_proba(toy_splits.val.texts)
        assert calls and np.allclose(reused, fresh, atol=1e-6)
        strategy.scorer_.score = score


def test_balanced_draws_hold_each_class(tiny_llama, toy_splits, tmp_path):
    adaptlab.train("icl", toy_splits, tmp_path / "icl", model=str(tiny_llama), k=4, selection="balanced", draws=1, progress=False)
    labels = [d["label"] for d in json.loads((tmp_path / "icl" / "prompt.json").read_text())["demonstrations"]]
    assert sorted(labels) == [0, 0, 1, 1]


def test_generate_mode_and_label_words(tiny_llama, toy_splits, tmp_path):
    result = adaptlab.train("icl", toy_splits, tmp_path / "gen", model=str(tiny_llama), k=0, mode="generate",
                            label_words="neg=terrible,pos=great", progress=False)
    assert result.manifest["details"]["prompting"]["label_words"] == ["terrible", "great"]
    proba = adaptlab.load_artifact(tmp_path / "gen", progress=False).predict_proba(["x"])
    assert proba.shape == (1, 2) and proba.sum() == pytest.approx(1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k", "30", "--selection", "balanced"], "needs 15 'neg' demonstrations but the training split has"),
        (["--template", "Review: {label}"], "{text} placeholder"),
        (["--label-words", "happy=yes"], "unknown label(s) happy"),
        (["--k", "25", "--selection", "random"], "reads at most 256"),
        (["--selection", "nearest"], "--selection must be one of"),
    ],
)
def test_icl_bad_options_exit_2(args, message, tiny_llama, tmp_path, cli):
    rows = sentiment_rows(20)
    for row in rows:
        row["text"] = row["text"] + " with plenty of extra words to make every demonstration long enough"
    data = write_csv(tmp_path / "toy.csv", rows)
    code, _, err = cli("train", "icl", "--data", data, "--model", tiny_llama, "-o", tmp_path / "o", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_generate_command_streams_and_validates(tiny_llama, tmp_path, cli):
    code, out, err = cli("generate", "Say hello", "--model", tiny_llama, "--max-new-tokens", "5")
    assert code == 0, err
    assert out.endswith("\n")
    examples = tmp_path / "shots.jsonl"
    examples.write_text('{"input": "2+2", "output": "4"}\n{"question": "x"}\n')
    code, _, err = cli("generate", "3+3", "--model", tiny_llama, "--examples", examples)
    assert code == 2 and "line 2" in err
    code, _, err = cli("generate", "x", "--model", tiny_llama, "--template", "no placeholder")
    assert code == 2 and "{text}" in err


@pytest.mark.slow
def test_real_smollm2_zero_and_few_shot_on_rotten_tomatoes(tmp_path, cli):
    common = ["--data", "rotten_tomatoes", "--train-size", "200", "--val-size", "20", "--test-size", "60", "--json"]
    code, out, err = cli("train", "icl", *common, "--k", "0", "-o", tmp_path / "zero")
    assert code == 0, err[-2000:]
    assert json.loads(out)["metrics"]["test"]["accuracy"] > 0.62  # measured 0.74 zero-shot on 100 test sentences
    code, out, _ = cli("predict", tmp_path / "zero", "a gorgeous, funny and moving film", "--json")
    assert read_json_lines(out)[0]["label"] == "positive"
    # few-shot runs end to end; with 135M parameters it is barely above chance (see benchmarks/README.md)
    code, out, err = cli("train", "icl", *common, "--k", "4", "--draws", "2", "--calibrate", "-o", tmp_path / "four")
    assert code == 0, err[-2000:]
    draws = json.loads(out)["metrics"]["test_over_draws"]
    assert len(draws["accuracy"]) == 2 and draws["std"] >= 0


@pytest.mark.slow
def test_real_smollm2_soft_prompt_short_run(tmp_path):
    splits = adaptlab.load_splits("rotten_tomatoes", train_size=48, val_size=16, test_size=16)
    result = adaptlab.train("soft-prompt", splits, tmp_path / "sp", model="smollm2-135m", epochs=1, batch_size=8,
                            init_text="Classify the sentiment of this review", progress=False)
    assert result.manifest["cost"]["trainable_params"] == 20 * 576  # 20 virtual tokens x hidden size
    texts = splits.test.texts[:4]
    np.testing.assert_array_equal(adaptlab.load_artifact(tmp_path / "sp", progress=False).predict_proba(texts),
                                  adaptlab.load_artifact(tmp_path / "sp", progress=False).predict_proba(texts))

def test_soft_prompt_scores_match_plain_peft_and_reload(tiny_llama, toy_splits, tmp_path):
    from adaptlab.prompting.verbalizer import VerbalizerModel

    result = adaptlab.train("soft-prompt", toy_splits, tmp_path / "sp", model=str(tiny_llama), epochs=2, batch_size=8,
                            init_text="Classify the sentiment", progress=False)
    assert 0 < result.manifest["cost"]["trainable_params"] < 0.01 * result.manifest["cost"]["total_params"]
    loaded = adaptlab.load_artifact(tmp_path / "sp", progress=False)
    texts = toy_splits.test.texts
    np.testing.assert_array_equal(loaded.predict_proba(texts), adaptlab.load_artifact(tmp_path / "sp", progress=False).predict_proba(texts))
    # the verbalizer's label scores equal log-likelihoods read from the PEFT model's own forward pass
    strategy = loaded.strategy
    model: VerbalizerModel = strategy.model_
    prompt = strategy._encode(strategy.tokenizer_, [texts[0]])[0]
    got = model(torch.tensor([prompt]), torch.ones((1, len(prompt)), dtype=torch.long))[0]
    virtual = strategy.num_virtual_tokens
    for k, label in enumerate(strategy.label_ids_):
        with torch.no_grad():
            logits = model.peft(input_ids=torch.tensor([prompt + label])).logits[0]
        logprobs = torch.log_softmax(logits.float(), -1)
        expected = sum(logprobs[virtual + len(prompt) - 1 + j, t].item() for j, t in enumerate(label))
        assert got[k].item() == pytest.approx(expected, abs=1e-4)
    # single-token label words: one pass per prompt gives what a sequence per (prompt, label) gives, padding included
    assert all(len(label) == 1 for label in strategy.label_ids_)
    prompts = [strategy._encode(strategy.tokenizer_, [text])[0] for text in texts[:3]]
    width = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        torch.testing.assert_close(model._single_tokens(ids, mask), model._per_label(ids, mask), atol=1e-4, rtol=1e-4)
