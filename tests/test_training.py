"""Gradient-based strategies on the Lightning engine: every strategy, reloads, PEFT format, resume, merge."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.data import load_data, split_data
from conftest import read_json_lines, sentiment_rows, write_csv

GRADIENT = ["head", "last-k", "full", "lora", "prefix-tuning", "p-tuning", "prompt-tuning"]
FAST = {"epochs": 2, "batch_size": 8, "progress": False}


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)


@pytest.mark.parametrize("strategy", GRADIENT)
def test_every_strategy_trains_and_reloads_identically_on_an_encoder(strategy, tiny_bert, toy_splits, tmp_path):
    result = adaptlab.train(strategy, toy_splits, tmp_path / "art", model=str(tiny_bert), **FAST)
    manifest = result.manifest
    cost = manifest["cost"]
    assert 0 < cost["trainable_params"] <= cost["total_params"]
    if strategy != "full":
        assert cost["trainable_params"] < cost["total_params"] / 2
    assert manifest["training"]["epochs_run"] == 2 and manifest["training"]["best_epoch"] in (-1, 0, 1)  # -1: the start
    import csv

    log = list(csv.DictReader((tmp_path / "art" / "training_log.csv").open()))
    assert sorted(int(r["epoch"]) for r in log if r.get("train_loss_epoch")) == [0, 1]  # even with 3 steps per epoch
    assert not (tmp_path / "art.work").exists()  # checkpoints are dropped once the artifact is written
    texts = toy_splits.test.texts + ["an unseen text"]
    first = adaptlab.load_artifact(tmp_path / "art", progress=False, cache=False).predict_proba(texts)
    second = adaptlab.load_artifact(tmp_path / "art", progress=False, cache=False).predict_proba(texts)
    np.testing.assert_array_equal(first, second)
    # what the artifact predicts is what the manifest reports
    assert (first[:-1].argmax(1) == toy_splits.test.labels).mean() == pytest.approx(manifest["metrics"]["test"]["accuracy"])


@pytest.mark.parametrize("strategy", ["lora", "prefix-tuning", "p-tuning", "prompt-tuning"])
def test_adapters_load_with_plain_peft_including_the_head(strategy, tiny_bert, tiny_distilbert, toy_splits, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for backbone in (tiny_bert, tiny_distilbert):
        if strategy == "prefix-tuning" and backbone == tiny_distilbert:
            with pytest.raises(AdaptlabError, match="prefix tuning"):  # DistilBERT has no KV cache to prefix
                adaptlab.train(strategy, toy_splits, tmp_path / "x", model=str(backbone), **FAST)
            continue
        out = tmp_path / f"{strategy}-{backbone.name}"
        adaptlab.train(strategy, toy_splits, out, model=str(backbone), **FAST)
        ours = adaptlab.load_artifact(out, progress=False)
        base = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
        plain = PeftModel.from_pretrained(base, out / "adapter").eval()
        tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
        texts = toy_splits.test.texts[:4]
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = torch.softmax(plain(**batch).logits, -1).numpy()
        np.testing.assert_allclose(ours.predict_proba(texts), expected, atol=1e-5)


def test_distilbert_head_layers_are_trained_and_saved(tiny_distilbert, toy_splits, tmp_path):
    from adaptlab.models import resolve_model
    from adaptlab.models.classifier import load_classifier

    bundle = load_classifier(resolve_model(str(tiny_distilbert)), ["neg", "pos"])
    assert bundle.new_modules == ["classifier", "pre_classifier"]
    adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_distilbert), **FAST)
    config = json.loads((tmp_path / "art" / "adapter" / "adapter_config.json").read_text())
    assert set(config["modules_to_save"]) >= {"classifier", "pre_classifier"}


@pytest.mark.parametrize("strategy", ["head", "last-k", "lora", "prompt-tuning", "prefix-tuning"])
def test_decoder_backbones_train_and_reload(strategy, tiny_llama, toy_splits, tmp_path):
    adaptlab.train(strategy, toy_splits, tmp_path / "art", model=str(tiny_llama), **FAST)
    texts = toy_splits.test.texts
    a = adaptlab.load_artifact(tmp_path / "art", progress=False, cache=False).predict_proba(texts)
    b = adaptlab.load_artifact(tmp_path / "art", progress=False, cache=False).predict_proba(texts)
    np.testing.assert_array_equal(a, b)


def test_decoder_padding_side_does_not_change_the_prediction(tiny_llama, toy_splits, tmp_path):
    """Left padding: a text's probabilities do not depend on the other texts in its batch."""
    adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_llama), **FAST)
    model = adaptlab.load_artifact(tmp_path / "art", progress=False)
    alone = model.predict_proba(["short"])
    batched = model.predict_proba(["short", "a much longer text that forces padding of the short one"])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)


def test_cached_head_equals_the_naive_loop(tiny_bert, toy_splits, tmp_path):
    cached = adaptlab.train("head", toy_splits, tmp_path / "cached", model=str(tiny_bert), epochs=3, batch_size=8, progress=False)
    naive = adaptlab.train("head", toy_splits, tmp_path / "naive", model=str(tiny_bert), epochs=3, batch_size=8,
                           progress=False, cache_features=False)
    assert cached.metrics["accuracy"] == naive.metrics["accuracy"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "cached" / "head.safetensors"), load_file(tmp_path / "naive" / "head.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_early_stopping_and_bf16(tiny_bert, toy_splits, tmp_path, capsys):
    result = adaptlab.train("full", toy_splits, tmp_path / "es", model=str(tiny_bert), epochs=10, batch_size=8,
                            lr=1e-12, patience=1, progress=False)
    assert result.manifest["training"]["epochs_run"] < 10  # flat validation accuracy stops the run
    bf16 = adaptlab.train("lora", toy_splits, tmp_path / "bf16", model=str(tiny_bert), precision="bf16", **FAST)
    assert bf16.manifest["params"]["precision"] == "bf16" and bf16.manifest["runtime"] == {"device": "cpu", "precision": "bf16"}
    # Lightning's old name still works for one release, with a deprecation line
    adaptlab.train("lora", toy_splits, tmp_path / "old", model=str(tiny_bert), precision="bf16-mixed", **FAST)
    assert "--precision bf16-mixed is deprecated; use --precision bf16" in capsys.readouterr().err


@pytest.mark.parametrize("base", ["tiny_bert", "tiny_sentence_bert"])
def test_the_probe_start_predicts_what_the_probe_predicts(base, toy_splits, request):
    """LP-FT: before any step, the classifier's new head is the logistic-regression probe on the features it sees
    (the pooler's output, or the token mean for a mean-pooling checkpoint), so the model's validation predictions are
    the probe's."""
    tiny_bert = request.getfixturevalue(base)
    from adaptlab.methods import get_strategy
    from adaptlab.models.classifier import load_classifier
    from adaptlab.training.data import TokenizedDataset
    from adaptlab.training.probe import head_inputs

    strategy = get_strategy("full")(model=str(tiny_bert), progress=False)
    strategy.label_names = toy_splits.label_names
    bundle = load_classifier(strategy.ref, strategy.label_names)
    strategy.tokenizer_, strategy.max_length_ = bundle.tokenizer, 64
    data = {name: TokenizedDataset(bundle.tokenizer(getattr(toy_splits, name).texts)["input_ids"], getattr(toy_splits, name).labels)
            for name in ("train", "val")}
    before = bundle.model.classifier.weight.detach().clone()
    probe = strategy._probe_head(bundle, data["train"], data["val"], toy_splits)
    assert probe is not None and not torch.equal(before, bundle.model.classifier.weight)
    collate = strategy._collator()
    batch = collate([data["val"][i] for i in range(len(data["val"]))])
    features = head_inputs(bundle.model, bundle.model.classifier, [batch], torch.device("cpu"))
    with torch.inference_mode():
        logits = bundle.model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    np.testing.assert_allclose(logits.numpy(), probe.logits(features), atol=1e-4)
    if base == "tiny_sentence_bert":  # what the head sees is the mean of the token vectors
        hidden = bundle.model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        np.testing.assert_allclose(features, ((hidden * mask).sum(1) / mask.sum(1)).detach().numpy(), atol=1e-5)
    assert probe.val_accuracy == pytest.approx((probe.logits(features).argmax(1) == toy_splits.val.labels).mean())


def test_a_run_that_never_beats_its_start_keeps_the_start_and_says_why_it_stopped(tiny_bert, toy_splits, tmp_path):
    """A learning rate that wrecks the model: early stopping ends the run, and the weights kept are the best seen on
    validation, here the probe start (epoch -1), not the last epoch."""
    result = adaptlab.train("full", toy_splits, tmp_path / "wrecked", model=str(tiny_bert), epochs=8, batch_size=8,
                            lr=5.0, patience=2, progress=False)
    training = result.manifest["training"]
    assert training["stopped"] == "converged" and training["epochs_run"] < 8 and training["head_start"] == "probe"
    assert training["best_epoch"] == -1
    assert result.manifest["metrics"]["val"]["accuracy"] == pytest.approx(training["best_val_acc"])  # the kept weights
    capped = adaptlab.train("head", toy_splits, tmp_path / "capped", model=str(tiny_bert), epochs=50, batch_size=2,
                            max_minutes=0.0005, progress=False)
    assert capped.manifest["training"]["stopped"] == "time_cap" and capped.manifest["training"]["epochs_run"] < 50
    random_start = adaptlab.train("head", toy_splits, tmp_path / "random", model=str(tiny_bert), head_init="random", **FAST)
    assert random_start.manifest["training"]["head_start"] == "random" and random_start.manifest["training"]["probe"] is None


def test_lr_search_tries_three_rates_from_one_start_and_trains_with_the_lowest_validation_loss(tiny_bert, toy_splits,
                                                                                                 tmp_path):
    """Three one-epoch trials (lr / 3, lr, 3 lr) from the same start; the chosen rate is the trial of lowest validation
    loss; the run then trains from the start again with it (its first validation equals the untouched start's)."""
    searched = adaptlab.train("prompt-tuning", toy_splits, tmp_path / "searched", model=str(tiny_bert), lr=1e-2,
                              lr_search=True, **FAST)
    record = searched.manifest["training"]["lr_search"]
    trials = record["trials"]
    assert [t["lr"] for t in trials] == pytest.approx([1e-2 / 3, 1e-2, 3e-2])
    assert all(np.isfinite(t["val_loss"]) and t["seconds"] > 0 for t in trials)
    assert record["chosen"] == min(trials, key=lambda t: t["val_loss"])["lr"]
    assert searched.manifest["params"]["lr_search"] is True
    assert not (tmp_path / "searched.work").exists()  # trial checkpoints went with the work directory
    chosen = adaptlab.train("prompt-tuning", toy_splits, tmp_path / "direct", model=str(tiny_bert), lr=record["chosen"], **FAST)
    np.testing.assert_allclose(searched.test_proba, chosen.test_proba, atol=1e-5)  # same start, same rate, same run


def test_lr_search_trials_stop_after_a_few_steps_on_a_large_training_set(tiny_bert, toy_splits, tmp_path, monkeypatch):
    """A trial is one epoch or TRIAL_STEPS optimiser steps, whichever is shorter (here 2 of an epoch's 3 batches)."""
    from adaptlab.training import lr_search

    monkeypatch.setattr(lr_search, "TRIAL_STEPS", 2)
    searched = adaptlab.train("prompt-tuning", toy_splits, tmp_path / "searched", model=str(tiny_bert), lr=1e-2,
                              lr_search=True, **FAST)
    assert len(toy_splits.train) > 2 * FAST["batch_size"]
    assert [t["steps"] for t in searched.manifest["training"]["lr_search"]["trials"]] == [2, 2, 2]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import adaptlab
    from lightning.pytorch.callbacks import Callback
    from adaptlab.data import load_data, split_data

    class KillMidEpoch(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no clean-up runs

    model, data, out, mode = sys.argv[1:5]
    splits = split_data(load_data(data), seed=0)
    callbacks = [KillMidEpoch()] if mode == "kill" else []
    # a step budget (9 steps = 3 epochs of 3 batches) and patience: a resumed run keeps the same schedule and caps
    adaptlab.train("lora", splits, out, model=model, epochs=10, max_steps=9, patience=3, batch_size=8, lr=1e-2,
                   progress=False, callbacks=callbacks, resume=(mode == "resume"))
    """
)


def test_kill_9_then_resume_reaches_the_uninterrupted_result(tiny_bert, tmp_path):
    """Killed inside epoch 2 and resumed: the same weights, test metrics, best epoch and every log row (losses to the
    last digit) as a run never interrupted; the log keeps epoch 1's rows although Lightning starts a new file."""
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(20))
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    run = lambda out, mode: subprocess.run([sys.executable, str(script), str(tiny_bert), str(data), str(out), mode],
                                           capture_output=True, text=True, timeout=300)
    assert run(tmp_path / "straight", "plain").returncode == 0
    killed = run(tmp_path / "resumed", "kill")
    assert killed.returncode == -9
    assert (tmp_path / "resumed.work" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "resumed").exists()  # no half-written artifact
    resumed = run(tmp_path / "resumed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_epoch"] == 1
    texts = [f"probe text {i}" for i in range(6)] + sentiment_rows(3)[0]["text"].split()
    a = adaptlab.load_artifact(tmp_path / "straight", progress=False).predict_proba(texts)
    b = adaptlab.load_artifact(tmp_path / "resumed", progress=False).predict_proba(texts)
    np.testing.assert_allclose(a, b, atol=1e-6)
    straight = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    assert straight["metrics"]["test"] == manifest["metrics"]["test"]
    assert straight["training"]["best_epoch"] == manifest["training"]["best_epoch"]
    assert straight["training"]["stopped"] == manifest["training"]["stopped"] == "step_cap"
    assert manifest["training"]["budget"] == {"max_epochs": 3, "max_steps": 9, "max_minutes": None, "patience": 3}
    log = lambda name: [{k: v for k, v in row.items() if k != "samples_per_s"}  # a speed: the one thing that differs
                        for row in csv.DictReader(open(tmp_path / name / "training_log.csv", encoding="utf-8"))]
    assert log("straight") == log("resumed") and {row["epoch"] for row in log("resumed")} == {"0", "1", "2"}


def test_merge_folds_lora_into_a_plain_model(tiny_bert, toy_splits, tmp_path, cli):
    adaptlab.train("lora", toy_splits, tmp_path / "lora", model=str(tiny_bert), lr=1e-2, **FAST)
    code, out, err = cli("merge", tmp_path / "lora", "-o", tmp_path / "merged")
    assert code == 0, err
    merged = adaptlab.load_artifact(tmp_path / "merged", progress=False)
    assert merged.manifest["strategy"] == "full" and merged.manifest["details"]["merged_from"]["strategy"] == "lora"
    texts = toy_splits.test.texts
    np.testing.assert_allclose(
        merged.predict_proba(texts), adaptlab.load_artifact(tmp_path / "lora", progress=False).predict_proba(texts), atol=1e-5
    )
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged" / "model")  # loads without PEFT
    from transformers import pipeline  # the tokenizer is inside model/: pipeline agrees with adaptlab

    labels = [row["label"] for row in pipeline("text-classification", model=str(tmp_path / "merged" / "model"))(texts)]
    assert labels == [toy_splits.label_names[i] for i in merged.predict_proba(texts).argmax(1)]
    code, _, err = cli("merge", tmp_path / "merged", "-o", tmp_path / "again")
    assert code == 2 and "only LoRA adapters can be merged" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["last-k", "--layers", "5"], "--layers 5 is more than the 2 blocks"),
        (["lora", "--target-modules", "q_proj"], "--target-modules q_proj not found"),
        (["prompt-tuning", "--num-virtual-tokens", "100", "--max-length", "64"], "overflows the 128 positions"),
        (["full", "--lr", "-1"], "--lr must be greater than 0"),
        (["full", "--precision", "fp8"], "--precision must be one of"),
        (["full", "--max-length", "4096"], "exceeds the 128 positions"),
        (["head", "--epochs", "0"], "--epochs must be at least 1"),
    ],
)
def test_incompatible_options_fail_before_training(args, message, tiny_bert, tmp_path, cli):
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(20))
    strategy, *rest = args
    code, _, err = cli("train", strategy, "--data", data, "--model", tiny_bert, "-o", tmp_path / "o", *rest)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_decoder_without_pad_or_eos_token_is_refused(tiny_llama, tmp_path, toy_splits):
    import shutil

    from transformers import AutoTokenizer

    broken = tmp_path / "no-pad"
    shutil.copytree(tiny_llama, broken)
    tokenizer = AutoTokenizer.from_pretrained(broken)
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    tokenizer.save_pretrained(broken)
    with pytest.raises(AdaptlabError, match="neither a pad token nor an end-of-text token"):
        adaptlab.train("lora", toy_splits, tmp_path / "o", model=str(broken), **FAST)


@pytest.mark.slow
def test_real_minilm_lora_and_head_from_the_cli(tmp_path, cli):
    common = ["--data", "rotten_tomatoes", "--train-size", "600", "--test-size", "200", "--json"]
    code, out, err = cli("train", "lora", *common, "--epochs", "2", "--lr", "2e-3", "-o", tmp_path / "lora")
    assert code == 0, err[-2000:]
    assert json.loads(out)["metrics"]["test"]["accuracy"] > 0.65  # measured ~0.78 with 600 examples
    code, out, err = cli("train", "head", *common, "-o", tmp_path / "head")
    assert code == 0 and json.loads(out)["metrics"]["test"]["accuracy"] > 0.65
    code, out, _ = cli("predict", tmp_path / "lora", "a gorgeous, funny and moving film", "a dull, tedious mess", "--json")
    assert [r["label"] for r in read_json_lines(out)] == ["positive", "negative"]


@pytest.mark.slow
def test_real_smollm2_decoder_lora_short_run(tmp_path):
    splits = adaptlab.load_splits("rotten_tomatoes", train_size=64, val_size=20, test_size=40)
    result = adaptlab.train("lora", splits, tmp_path / "smol", model="smollm2-135m", epochs=1, batch_size=16, progress=False)
    cost = result.manifest["cost"]
    assert cost["total_params"] > 100e6 and cost["trainable_params"] < 0.01 * cost["total_params"]
    texts = splits.test.texts[:5]
    a = adaptlab.load_artifact(tmp_path / "smol", progress=False).predict_proba(texts)
    b = adaptlab.load_artifact(tmp_path / "smol", progress=False).predict_proba(texts)
    np.testing.assert_array_equal(a, b)


def test_ddp_on_two_cpu_processes_trains_and_only_rank_0_writes(tiny_bert, tmp_path):
    """The Lightning pass-through: `--devices 2 --strategy ddp` runs two processes (gloo on CPU)."""
    from pathlib import Path

    data = write_csv(tmp_path / "toy.csv", sentiment_rows(20))
    command = [str(Path(sys.executable).parent / "adaptlab"), "train", "lora", "--data", str(data), "--model", str(tiny_bert),
               "--epochs", "2", "--batch-size", "4", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
               "-o", str(tmp_path / "ddp")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained lora") == 1  # one report, from rank 0
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["training"]["epochs_run"] == 2
    assert adaptlab.load_artifact(tmp_path / "ddp", progress=False).predict_proba(["a text"]).shape == (1, 2)


def test_tensorboard_logs_travel_with_the_artifact(tiny_bert, toy_splits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from adaptlab.runner import train

    train("lora", toy_splits, tmp_path / "a", model=str(tiny_bert), epochs=2, batch_size=8, logger="tensorboard", progress=False)
    (events,) = (tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"val_acc", "train_loss_epoch"} <= set(accumulator.Tags()["scalars"])
    assert len(accumulator.Scalars("val_acc")) == 2 and not (tmp_path / "a.work").exists()


def test_gradient_checkpointing_trains_the_same_weights(tiny_bert, toy_splits, tmp_path):
    from adaptlab.runner import train

    runs = [train("lora", toy_splits, tmp_path / name, model=str(tiny_bert), epochs=1, batch_size=8, gradient_checkpointing=flag,
                  progress=False) for name, flag in (("plain", False), ("checkpointed", True))]
    assert runs[1].manifest["params"]["gradient_checkpointing"] is True
    np.testing.assert_allclose(runs[0].test_proba, runs[1].test_proba, atol=1e-5)  # recomputed, same dropout masks


def test_the_strategy_names_checked_up_front_are_lightnings():
    from lightning.pytorch.strategies import StrategyRegistry

    from adaptlab.training.options import LIGHTNING_STRATEGIES

    assert sorted(LIGHTNING_STRATEGIES) == sorted(StrategyRegistry.available_strategies())


def test_a_resumed_run_trains_with_the_rate_its_first_attempt_chose(tmp_path):
    """The search ran before the interruption: resuming reads its choice instead of searching again (the trials'
    weights are gone and a new search could choose differently, changing the schedule mid-run)."""
    import json
    from types import SimpleNamespace

    from adaptlab.training import lr_search

    (tmp_path / "lr-search").mkdir()
    trials = [{"lr": 0.01, "val_loss": 0.7, "steps": 16, "seconds": 1.0}, {"lr": 0.03, "val_loss": 0.6, "steps": 16, "seconds": 1.0}]
    (tmp_path / "lr-search" / lr_search.CHOSEN).write_text(json.dumps({"lr": 0.03, "trials": trials}))
    searched_again = lambda *a, **k: pytest.fail("searched again")
    lr, recorded = lr_search.search_lr(None, None, SimpleNamespace(resume=True), tmp_path, None, "classification", None,
                                       searched_again)
    assert lr == 0.03 and recorded == trials


def test_the_entries_of_a_comparison_fit_the_probe_once(tiny_sentence_bert, toy_splits, tmp_path, monkeypatch):
    """full, then LoRA and prompt tuning on the same model, data and token limit (compare sets one for all) read the
    same frozen features: the probe is fitted once and stored (keyed by everything it depends on); other data is
    fitted afresh."""
    from adaptlab.methods.gradient import TokenClassifierStrategy

    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    first = adaptlab.train("full", toy_splits, tmp_path / "full", model=str(tiny_sentence_bert), max_length=64, **FAST)
    monkeypatch.setattr(TokenClassifierStrategy, "_head_inputs", lambda *a: pytest.fail("features computed again"))
    for method in ("lora", "prompt-tuning"):
        again = adaptlab.train(method, toy_splits, tmp_path / method, model=str(tiny_sentence_bert), max_length=64, **FAST)
        assert again.manifest["training"]["probe"] == first.manifest["training"]["probe"]
    other = split_data(load_data(write_csv(tmp_path / "other.csv", sentiment_rows(24))), seed=1)
    with pytest.raises(BaseException, match="features computed again"):
        adaptlab.train("lora", other, tmp_path / "other", model=str(tiny_sentence_bert), max_length=64, **FAST)
