"""`compare --tune`: the search sees training and validation data only, starts from the entry's own settings,
prunes, resumes, and its cost and trials reach the results."""

from __future__ import annotations

import json

import pytest
from conftest import sentiment_rows, write_csv

from adaptlab import AdaptlabError, load_splits
from adaptlab.compare import ComparePlan
from adaptlab.compare.tuning import tune
from adaptlab.config import DataConfig
from adaptlab.data import load_data, split_data


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(30))), seed=0)


def test_trials_never_receive_the_test_split_and_start_from_the_defaults(tiny_bert, toy_splits, tmp_path, monkeypatch):
    import adaptlab.runner

    seen, original = [], adaptlab.runner.train

    def spy(strategy, splits, output, **params):
        seen.append((splits.test.fingerprint(), params["lr"], params["epochs"]))
        return original(strategy, splits, output, **params)

    monkeypatch.setattr(adaptlab.runner, "train", spy)
    params = {"model": str(tiny_bert), "epochs": 1, "batch_size": 8}
    result = tune("lora", params, {"lr": [1e-4, 1e-2], "epochs": [1, 3]}, 3, toy_splits.train, toy_splits.val, tmp_path / "t")
    assert len(seen) == 3 and {fingerprint for fingerprint, _, _ in seen} == {toy_splits.val.fingerprint()}
    assert toy_splits.test.fingerprint() != toy_splits.val.fingerprint()
    assert seen[0][1:] == (1e-3, 1)  # trial 0: LoRA's own learning rate and the entry's epochs
    # trials 1 and 2: the learning rate's line search, halfway (log scale) to each bound, the epochs unchanged
    assert [(round(lr, 7), epochs) for _, lr, epochs in seen[1:]] == [(0.0031623, 1), (0.0003162, 1)]
    assert [row["number"] for row in result["trials"]] == [0, 1, 2] and result["seconds"] > 0
    assert result["best"] == result["trials"][result["best_trial"]]["params"]
    assert not list((tmp_path / "t").glob("trial-*"))  # trial artifacts are not kept


def test_a_study_resumes_an_interrupted_trial_with_its_settings_and_can_grow(tiny_bert, toy_splits, tmp_path):
    import optuna

    params, space = {"model": str(tiny_bert), "epochs": 1, "batch_size": 8}, {"lr": [1e-4, 1e-2]}
    first = tune("lora", params, space, 2, toy_splits.train, toy_splits.val, tmp_path / "t")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "t" / "study.log")))
    study = optuna.load_study(study_name="tune", storage=storage)
    cut = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})  # left running: a kill -9
    again = tune("lora", params, space, 3, toy_splits.train, toy_splits.val, tmp_path / "t")
    finished = [row for row in again["trials"] if row["state"] == "complete"]
    assert len(finished) == 3 and finished[:2] == [row for row in first["trials"]]
    assert finished[2]["params"] == cut.params  # the cut trial was run again with its settings


def test_plans_tune_gradient_entries_only_and_check_the_space(tiny_bert, tmp_path):
    from adaptlab.compare.run import _model_info

    data = DataConfig(source=str(write_csv(tmp_path / "toy.csv", sentiment_rows(30))), train_size=40, val_size=6, test_size=10)
    plan = ComparePlan(data=data, models=[str(tiny_bert)], strategies=["features-logreg", "lora"], tune=4)
    runs = {run.entry: run for run in plan.runs(_model_info(plan.models))}
    assert runs["features-logreg"].tune is None
    assert runs["lora"].tune == {"trials": 4, "space": {"lr": [1e-4, 1e-2], "r": [4, 16]}}  # budget: no epochs
    assert "tune" in runs["lora"].spec(data)  # changing the search re-runs the entry
    assert all(run.tune is None for run in ComparePlan(data=data, models=[str(tiny_bert)], strategies=["lora"])
               .runs(_model_info(plan.models)))  # quick: untuned unless asked
    custom = ComparePlan(data=data, models=[str(tiny_bert)], strategies=["lora"],
                         tune={"trials": 2, "params": {"lora": {"lr": [1e-3, 3e-3], "r": [2, 4]}}})
    assert custom.runs(_model_info(plan.models))[0].tune["space"] == {"lr": [1e-3, 3e-3], "r": [2, 4]}
    for tune_value, needle in (({"trials": 2, "params": {"lora": {"r": [4, 2.5]}}}, r"tune.params.lora.r must be \[low, high\]"),
                               ({"params": {"lora": {"bogus": [1, 2]}}}, "no tunable parameter 'bogus'"),
                               ({"trials": 2, "params": {"features-logreg": {"C": [1, 2]}}}, "is not tuned"),
                               (-1, "--tune must be a whole number")):
        bad = ComparePlan(data=data, models=[str(tiny_bert)], strategies=["lora", "features-logreg"], tune=tune_value)
        with pytest.raises(AdaptlabError, match=needle):
            bad.check()  # refused before any model is looked at, as the CLI checks a plan
        with pytest.raises(AdaptlabError, match=needle):
            bad.runs(_model_info(plan.models))


def test_compare_tune_from_the_cli_reports_trials_and_cost(tiny_bert, tmp_path, cli):
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(30))
    code, out, err = cli("compare", "--data", data, "--models", tiny_bert, "--strategies", "head", "--tune", "2",
                         "--epochs", "1", "--train-size", "40", "--val-size", "6", "--test-size", "10", "-o", tmp_path / "c")
    assert code == 0, err
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    (head,) = results["entries"]
    assert len(head["tuning"]["trials"]) == 2 and head["tuning_seconds"] == head["tuning"]["seconds"] > 0
    assert head["train_seconds"] == pytest.approx(head["final_train_seconds"] + head["tuning_seconds"], abs=0.02)
    assert head["params"]["lr"] == head["tuning"]["best"]["lr"]  # the tested model was trained with the best settings
    page = (tmp_path / "c" / "report.html").read_text()
    assert "<h2>Tuning</h2>" in page and "trial 0 is the entry's default" in page
    code, _, err = cli("compare", "--data", data, "--models", tiny_bert, "--tune", "-2", "-o", tmp_path / "d")
    assert code == 2 and "--tune must be a whole number" in err


def test_a_step_budget_caps_epochs_in_whole_epochs_of_optimiser_steps():
    from adaptlab.methods import get_strategy

    lora = lambda **kw: get_strategy("lora")(epochs=30, batch_size=32, **kw)
    assert lora().epoch_budget(32) == 30  # no budget: --epochs as given
    assert lora(max_steps=500).epoch_budget(32) == 16  # 500 steps of 32 a epoch: rounded up to whole epochs
    assert lora(max_steps=500, grad_accum=4).epoch_budget(32) == 30  # optimiser steps, not batches: 8 an epoch
    assert lora(max_steps=10_000).epoch_budget(32) == 30  # the epoch cap still holds


def test_the_step_budget_reaches_training_the_plan_and_the_tuning(tiny_bert, toy_splits, tmp_path, monkeypatch):
    import adaptlab.runner
    from adaptlab.compare.plan import PRESETS
    from adaptlab.compare.run import _model_info
    from adaptlab.runner import train

    per_epoch = -(-len(toy_splits.train) // 8)
    manifest = train("lora", toy_splits, tmp_path / "a", model=str(tiny_bert), epochs=10, batch_size=8,
                     max_steps=2 * per_epoch, progress=False).manifest
    assert manifest["training"]["epochs_planned"] == 2 == manifest["training"]["epochs_run"]
    assert manifest["training"]["stopped"] == "step_cap" and manifest["training"]["budget"]["max_steps"] == 2 * per_epoch

    data = DataConfig(source=str(write_csv(tmp_path / "toy.csv", sentiment_rows(30))), train_size=40, val_size=6, test_size=10)
    plan = lambda **kw: ComparePlan(data=data, models=[str(tiny_bert)], strategies=["lora", "features-logreg"], **kw)
    runs = {run.entry: run.params for run in plan().runs(_model_info([str(tiny_bert)]))}
    quick = PRESETS["quick"]
    assert (runs["lora"]["max_steps"], runs["lora"]["patience"], runs["lora"]["max_minutes"]) == \
        (quick.max_steps, quick.patience, quick.max_minutes) and "max_steps" not in runs["features-logreg"]
    exact = next(r.params for r in plan(epochs=2).runs(_model_info([str(tiny_bert)])) if r.entry == "lora")  # no budget
    assert exact["epochs"] == 2 and "max_steps" not in exact

    seen, original = [], adaptlab.runner.train
    monkeypatch.setattr(adaptlab.runner, "train", lambda *a, **p: seen.append(p) or original(*a, **p))
    params = {"model": str(tiny_bert), "epochs": 10, "batch_size": 8, "max_steps": 2 * per_epoch, "patience": 2}
    from adaptlab.compare.tuning import default_space

    assert "epochs" not in default_space("lora", params)  # with a budget, early stopping decides the epochs
    tune("lora", params, {"lr": [1e-4, 1e-2], "epochs": [1, 3]}, 2, toy_splits.train, toy_splits.val, tmp_path / "t")
    assert seen[0]["epochs"] == 2  # trial 0: the epochs the budget allows
    assert all(p["max_steps"] is None for p in seen)  # a tuned epoch count is not cut short by the budget


@pytest.mark.slow
def test_compare_tune_on_the_real_encoder_and_a_many_class_task(cli, tmp_path):
    """minilm LoRA on the packaged 11-topic Wikipedia data: the trials run on the real model, the tested model
    is trained with the best trial's settings and learns something (above the majority-class rate)."""
    code, out, err = cli("compare", "--data", "wiki-topics", "--models", "minilm", "--strategies", "lora", "--tune", "2",
                         "--train-size", "132", "--val-size", "60", "--test-size", "120", "--set", "lora.max_length=64", "--set", "lora.epochs=2",
                         "-o", tmp_path / "c")
    assert code == 0, err
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    (lora,) = results["entries"]
    trials = lora["tuning"]["trials"]
    assert len(trials) == 2 and trials[0]["params"]["lr"] == pytest.approx(1e-3)  # trial 0: LoRA's own rate
    finished = [t for t in trials if t["state"] == "complete"]
    best = max(finished, key=lambda t: t["val_macro_f1"])
    assert lora["tuning"]["best"] == best["params"] and lora["params"]["lr"] == best["params"]["lr"]
    test = load_splits("wiki-topics", train_size=132, val_size=60, test_size=120).test  # the same split
    majority = max(test.class_counts().values()) / len(test)
    assert lora["accuracy"]["mean"] > majority, (lora["accuracy"], majority)
