"""Artifacts work outside adaptlab and never destroy what is there: tokenizer inside model directories, adapters
that name their base portably, a model card, refusal to overwrite, the user's umask."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.data import load_data, split_data
from conftest import MINILM_DIR, sentiment_rows, write_csv

FAST = {"epochs": 1, "batch_size": 8, "progress": False}


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)


def test_a_full_artifact_is_a_complete_model_directory_for_pipeline(tiny_bert, toy_splits, tmp_path):
    """Without the tokenizer in model/, transformers builds an empty one and every word is [UNK]."""
    from transformers import pipeline

    adaptlab.train("full", toy_splits, tmp_path / "full", model=str(tiny_bert), lr=1e-3, **FAST)
    assert (tmp_path / "full" / "model" / "tokenizer.json").is_file()
    texts = toy_splits.test.texts
    ours = adaptlab.load_artifact(tmp_path / "full", progress=False).predict_proba(texts)
    pipe = pipeline("text-classification", model=str(tmp_path / "full" / "model"), top_k=None)
    theirs = [{row["label"]: row["score"] for row in rows} for rows in pipe(texts)]
    np.testing.assert_allclose([[row[name] for name in toy_splits.label_names] for row in theirs], ours, atol=1e-5)
    card = (tmp_path / "full" / "README.md").read_text()
    assert 'pipeline("text-classification", model="ARTIFACT/model")' in card and "classification into neg, pos" in card


def test_a_mean_pooled_classifier_ships_as_a_sentence_transformer(tiny_sentence_bert, toy_splits, tmp_path):
    """A checkpoint that declares mean pooling (minilm) is classified from the token mean, which no transformers class
    does: its full and merged artifacts are sentence-transformers directories whose encode() gives the logits, and
    every PEFT method (LoRA, prefix, P-, prompt tuning: virtual tokens in the mask) trains and reloads on it."""
    from sentence_transformers import SentenceTransformer

    texts = toy_splits.test.texts
    adaptlab.train("full", toy_splits, tmp_path / "full", model=str(tiny_sentence_bert), lr=1e-3, **FAST)
    full = adaptlab.load_artifact(tmp_path / "full", progress=False)
    assert full.manifest["details"]["tokenization"]["pooling"] == "mean"
    logits = SentenceTransformer(str(tmp_path / "full" / "model"), device="cpu").encode(texts, convert_to_tensor=True)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), full.predict_proba(texts), atol=1e-5)
    assert "SentenceTransformer(\"ARTIFACT/model\").encode" in (tmp_path / "full" / "README.md").read_text()

    adaptlab.train("lora", toy_splits, tmp_path / "lora", model=str(tiny_sentence_bert), lr=1e-2, **FAST)
    from adaptlab.merge import merge_lora

    merge_lora(tmp_path / "lora", tmp_path / "merged")
    merged = SentenceTransformer(str(tmp_path / "merged" / "model"), device="cpu").encode(texts, convert_to_tensor=True)
    lora = adaptlab.load_artifact(tmp_path / "lora", progress=False).predict_proba(texts)
    np.testing.assert_allclose(torch.softmax(merged, -1).numpy(), lora, atol=1e-5)
    for method in ("prefix-tuning", "p-tuning", "prompt-tuning"):
        result = adaptlab.train(method, toy_splits, tmp_path / method, model=str(tiny_sentence_bert), **FAST)
        again = adaptlab.load_artifact(tmp_path / method, progress=False).predict_proba(texts)
        assert result.manifest["details"]["tokenization"]["pooling"] == "mean" and np.isfinite(again).all()
        assert "load this prompt-learning adapter with adaptlab" in (tmp_path / method / "README.md").read_text()


def test_training_refuses_to_replace_an_output_unless_told(tiny_bert, tmp_path, cli):
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(20))
    train = lambda output, *extra: cli("train", "lora", "--data", data, "--model", tiny_bert, "--epochs", "1", "-o", output, *extra)
    assert train(tmp_path / "art")[0] == 0
    before = (tmp_path / "art" / "manifest.json").read_text()
    code, _, err = train(tmp_path / "art")
    assert code == 2 and "already holds an artifact; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "art" / "manifest.json").read_text() == before  # untouched
    assert train(tmp_path / "art", "--overwrite")[0] == 0
    assert (tmp_path / "art" / "manifest.json").read_text() != before
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, _, err = train(mine, "--overwrite")
    assert code == 2 and "not an adaptlab artifact" in err and (mine / "thesis.tex").read_text() == "years of work"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, _, err = train(notes)
    assert code == 2 and "already holds a file" in err and notes.read_text() == "my notes"
    splits = split_data(load_data(data), seed=0)
    with pytest.raises(AdaptlabError, match="pass --overwrite"):
        adaptlab.train("lora", splits, tmp_path / "art", model=str(tiny_bert), **FAST)
    adaptlab.train("lora", splits, tmp_path / "art", model=str(tiny_bert), overwrite=True, **FAST)


def test_artifacts_get_the_users_umask_not_owner_only_permissions(tiny_bert, toy_splits, tmp_path):
    previous = os.umask(0o022)
    try:
        adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_bert), **FAST)
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)
    assert mode(tmp_path / "art") == 0o755 and mode(tmp_path / "art" / "manifest.json") == 0o644


def test_a_lora_adapter_names_its_base_portably_and_loads_with_plain_peft(toy_splits, tmp_path):
    """On the real packaged minilm: the adapter config names the Hub id (not this machine's site-packages), lists
    each module to save once, and the model card's recipe (base by name, real label names) reproduces adaptlab's
    predictions with plain transformers + PEFT."""
    from peft import PeftConfig

    adaptlab.train("lora", toy_splits, tmp_path / "lora", model="minilm", lr=1e-3, **FAST)
    adapter = tmp_path / "lora" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(config["modules_to_save"]) == len(set(config["modules_to_save"])) and "classifier" in config["modules_to_save"]
    card = (adapter / "README.md").read_text()
    assert card == (tmp_path / "lora" / "README.md").read_text() and "Model Card for" not in card  # not PEFT's template
    assert "sentence-transformers/all-MiniLM-L6-v2" in card and "accuracy" in card and '["neg", "pos"]' in card
    assert PeftConfig.from_pretrained(adapter).base_model_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"

    # minilm is a sentence-transformers model: its head reads the mean of the token vectors, and the card's recipe
    # (run as written, the base taken from the package: no network here) is that model in plain transformers + PEFT
    recipe = card.split("With transformers and PEFT alone")[1].split("```python\n")[1].split("```")[0]
    recipe = recipe.replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(MINILM_DIR))).replace("ARTIFACT", str(tmp_path / "lora"))
    scope: dict = {}
    exec(recipe, scope)
    model, tokenizer, texts = scope["model"], scope["tokenizer"], toy_splits.test.texts
    import torch

    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))
    ours = adaptlab.load_artifact(tmp_path / "lora", progress=False).predict_proba(texts)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), ours, atol=1e-5)
    assert scope["labels"] == ["neg", "pos"]


def test_an_output_is_never_an_input_or_inside_one(tiny_bert, tmp_path, cli):
    """`-o` pointing at the data, at a directory holding it, or inside an input project is refused with one line,
    and the input stays byte-identical, --overwrite or not."""
    from conftest import write_jsonl

    (tmp_path / "data").mkdir()
    data = write_csv(tmp_path / "data" / "toy.csv", sentiment_rows(10))
    before = data.read_bytes()
    for output, relation in ((data, "is the input"), (tmp_path / "data", "contains the input")):
        code, _, err = cli("train", "features", "--data", data, "--model", tiny_bert, "-o", output, "--overwrite")
        assert code == 2 and relation in err and len(err.strip().splitlines()) == 1, err
    assert data.read_bytes() == before
    pairs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 4)
    code, _, err = cli("rlhf", "reward", "--data", pairs, "-o", pairs, "--overwrite")
    assert code == 2 and "is the input" in err and pairs.read_text().count("\n") == 4
    from adaptlab.feedback import project

    project.new_project(tmp_path / "project", candidates_path=write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p", "responses": ["a", "b"]}]))
    database = (tmp_path / "project" / "feedback.sqlite").read_bytes()
    code, _, err = cli("feedback", "export", tmp_path / "project", "-o", tmp_path / "project" / "feedback.sqlite", "--overwrite")
    assert code == 2 and "lies inside the input" in err and (tmp_path / "project" / "feedback.sqlite").read_bytes() == database


def test_resume_refuses_a_checkpoint_made_for_other_data_or_settings(tiny_bert, toy_splits, tmp_path):
    from lightning.pytorch.callbacks import Callback

    class FailInEpoch2(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1:
                raise RuntimeError("power cut")

    common = {"model": str(tiny_bert), "batch_size": 8, "progress": False}
    with pytest.raises(RuntimeError, match="power cut"):
        adaptlab.train("lora", toy_splits, tmp_path / "art", epochs=3, lr=1e-3, callbacks=[FailInEpoch2()], **common)
    assert (tmp_path / "art.work" / "checkpoints" / "last.ckpt").exists()
    with pytest.raises(AdaptlabError, match=r"other settings: --lr \(0.001 -> 0.01\)"):
        adaptlab.train("lora", toy_splits, tmp_path / "art", epochs=3, lr=1e-2, resume=True, **common)
    other = split_data(load_data(write_csv(tmp_path / "other.csv", sentiment_rows(12))), seed=0)
    with pytest.raises(AdaptlabError, match="other settings: the data"):
        adaptlab.train("lora", other, tmp_path / "art", epochs=3, lr=1e-3, resume=True, **common)
    manifest = adaptlab.train("lora", toy_splits, tmp_path / "art", epochs=4, lr=1e-3, resume=True, **common).manifest
    assert manifest["training"]["resumed_from_epoch"] == 1  # more epochs is fine


@pytest.mark.parametrize("edit, needle", [
    (lambda m: [], "not an adaptlab artifact manifest"),
    (lambda m: {**m, "labels": ["a", "b", "c"]}, "edited or damaged after training"),
    (lambda m: {**m, "strategy": "head"}, "edited or damaged after training"),
    (lambda m: {**m, "base_model": {**m["base_model"], "fingerprint": "0" * 16}}, "edited or damaged after training"),
    (lambda m: {k: v for k, v in m.items() if k != "base_model"}, "edited or damaged after training"),
    # an artifact from before the manifest checksum: the shape and the weights are still checked
    (lambda m: {k: v for k, v in m.items() if k not in ("base_model", "manifest_sha256")}, "'base_model' must be"),
    (lambda m: {**{k: v for k, v in m.items() if k != "manifest_sha256"}, "labels": ["a", "b", "c"]}, "does not load"),
    (lambda m: {**{k: v for k, v in m.items() if k != "manifest_sha256"}, "labels": ["a", "a"]}, "two or more distinct"),
    (lambda m: {**{k: v for k, v in m.items() if k != "manifest_sha256"}, "format_version": "2"}, "'format_version'"),
])
def test_an_edited_or_damaged_manifest_is_refused_in_one_line(edit, needle, tiny_bert, toy_splits, tmp_path, cli):
    """The manifest is checked like the weights: an edit would otherwise predict labels the weights never learnt
    (three labels on a two-class model answered "b" with probability 1.0) or load another base silently."""
    adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_bert), **FAST)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    (tmp_path / "art" / "manifest.json").write_text(json.dumps(edit(manifest)))
    code, out, err = cli("predict", tmp_path / "art", "a fine film")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out, err
