"""The user's own splits (--train-data, --val-data, --test-data): a fixed test set stays exactly that, overlaps and
unseen labels are refused in one line, the manifest records where each split came from."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def rows(start: int, stop: int, labels=("bad", "good")) -> list[dict]:
    return [{"text": f"review {i}: {'lovely' if i % 2 else 'awful'} film", "label": labels[i % len(labels)]}
            for i in range(start, stop)]


def write(path: Path, records: list[dict]) -> Path:
    pd.DataFrame(records).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    return {"train": write(tmp_path / "train.csv", rows(0, 60)), "val": write(tmp_path / "val.csv", rows(60, 70)),
            "test": write(tmp_path / "test.csv", rows(70, 110))}


def test_own_files_are_the_splits_exactly(files):
    import adaptlab
    from adaptlab.data import load_data

    splits = adaptlab.load_splits(train_data=files["train"], test_data=files["test"], val_data=files["val"])
    test_file = load_data(files["test"])
    assert splits.test.texts == test_file.texts and splits.test.fingerprint() == test_file.fingerprint()
    assert splits.val.texts == load_data(files["val"]).texts and splits.train.texts == load_data(files["train"]).texts
    described = splits.describe()
    assert described["split_origins"] == {"train": str(files["train"]), "val": str(files["val"]), "test": str(files["test"])}
    # a test set larger than 20% of the pool is fine: it is the user's
    cut = adaptlab.load_splits(train_data=files["train"], test_data=files["test"], val_fraction=0.2)
    assert len(cut.test) == 40 and len(cut.val) == 12 and len(cut.train) == 48
    assert cut.describe()["split_origins"]["val"] == "cut from the training data"
    assert not set(cut.val.texts) & set(cut.test.texts) and not set(cut.train.texts) & set(cut.val.texts)
    assert adaptlab.load_splits(train_data=files["train"], test_data=files["test"], test_size=10).test.texts == \
        adaptlab.load_splits(train_data=files["train"], test_data=files["test"], test_size=10, train_size=20).test.texts


def test_fractions_are_settable_and_checked(tmp_path, cli):
    import adaptlab

    pooled = write(tmp_path / "all.csv", rows(0, 100))
    splits = adaptlab.load_splits(pooled, test_fraction=0.6, val_fraction=0.1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 60)
    code, _, err = cli("data", "--data", pooled, "--test-fraction", "0.7", "--val-fraction", "0.3")
    assert code == 2 and "leave no training rows" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make, needle", [
    (lambda d: write(d / "t.csv", rows(50, 80)), "--test-data '{t}' shares 10 row(s) with the training data '{train}'"),
    (lambda d: write(d / "t.csv", rows(70, 90) + [{"text": "a neutral film", "label": "meh"}] * 2),
     "--test-data '{t}' has the label 'meh' (2 row(s)) that the training data '{train}' never has"),
])
def test_overlap_and_unseen_labels_are_one_line(files, tmp_path, cli, make, needle):
    test = make(tmp_path)
    code, out, err = cli("data", "--train-data", files["train"], "--test-data", test)
    assert code == 2 and needle.format(t=test, train=files["train"]) in err and len(err.strip().splitlines()) == 1


def test_missing_halves_and_mixed_sources_are_one_line(files, cli):
    code, _, err = cli("data", "--train-data", files["train"])
    assert code == 2 and "--test-data is missing" in err
    code, _, err = cli("data", "--data", "imdb", "--train-data", files["train"], "--test-data", files["test"])
    assert code == 2 and "not both" in err
    code, _, err = cli("data", "--data", "imdb:test")
    assert code == 2 and "has no named splits here" in err


def test_train_and_compare_from_own_files(files, tiny_bert, tmp_path, cli):
    """The manifest names the files; compare's every run tests on exactly the test file's rows."""
    from adaptlab.data import load_data

    code, _, err = cli("train", "features", "--train-data", files["train"], "--val-data", files["val"], "--test-data",
                       files["test"], "--model", tiny_bert, "-o", tmp_path / "run")
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["split_origins"]["test"] == str(files["test"])
    assert manifest["data"]["fingerprints"]["test"] == load_data(files["test"]).fingerprint()
    big_test = write(tmp_path / "big-test.csv", rows(200, 800))  # more rows than the quick preset's 500: all kept
    code, out, err = cli("compare", "--train-data", files["train"], "--test-data", big_test, "--models", tiny_bert,
                         "--strategies", "features-logreg,head", "-o", tmp_path / "cmp", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert results["data"]["split_origins"]["test"] == str(big_test)
    assert results["data"]["fingerprints"]["test"] == load_data(big_test).fingerprint()
    assert results["data"]["sizes"]["test"] == 600
    assert {e["entry"] for e in results["entries"]} == {"features-logreg", "head"}
    manifests = [json.loads(m.read_text()) for m in (tmp_path / "cmp" / "runs").glob("*/**/manifest.json")]
    assert len(manifests) == 2 and all(m["data"]["fingerprints"]["test"] == load_data(big_test).fingerprint()
                                       for m in manifests)


def chat_rows(start: int, stop: int) -> list[dict]:
    return [{"prompt": f"Question {i}: what is {i} plus one?", "completion": str(i + 1)} for i in range(start, stop)]


def test_generation_splits_from_own_files(tmp_path, tiny_llama, cli):
    """sft (and rlhf grpo/rloo, compare --task generation) take the same options; the test file is the test split."""
    import adaptlab

    train = write(tmp_path / "train.csv", chat_rows(0, 40))
    test = write(tmp_path / "test.csv", chat_rows(40, 52))
    splits = adaptlab.load_generation_splits(train_data=train, test_data=test)
    assert len(splits.test) == 12 and len(splits.val) == 4 and len(splits.train) == 36
    assert [r[-2]["content"] for r in splits.test.records] == [r["prompt"] for r in chat_rows(40, 52)]
    assert splits.describe()["split_origins"] == {"train": str(train), "val": "cut from the training data", "test": str(test)}
    overlapping = write(tmp_path / "overlap.csv", chat_rows(30, 45))
    code, _, err = cli("sft", "train", "--train-data", train, "--test-data", overlapping, "--model", tiny_llama, "-o", tmp_path / "x")
    assert code == 2 and "shares 10 row(s) with the training data" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("sft", "train", "--train-data", train, "--test-data", test, "--model", tiny_llama, "--epochs", "1",
                       "--max-new-tokens", "2", "--generate-limit", "2", "--no-forgetting", "-o", tmp_path / "sft")
    assert code == 0, err
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["data"]["split_origins"]["test"] == str(test) and manifest["data"]["sizes"]["test"] == 12


def test_hub_datasets_keep_their_splits_or_give_one(monkeypatch):
    """A Hub dataset's own train/validation/test with --keep-splits, one split with NAME:SPLIT (a local DatasetDict
    stands in for the download; the code under test is adaptlab's handling of what datasets returns)."""
    import datasets

    import adaptlab

    parts = {"train": rows(0, 60), "validation": rows(60, 72), "test": rows(72, 102), "unsupervised": rows(200, 210)}
    hub = datasets.DatasetDict({name: datasets.Dataset.from_list(records) for name, records in parts.items()})

    def load_dataset(name, split=None):
        assert name == "someone/reviews"
        return hub if split is None else hub[split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    import adaptlab.hub

    adaptlab.hub.hub_unreachable.cache_clear()
    monkeypatch.setattr(adaptlab.hub, "hub_unreachable", lambda: None)  # no network here: the stand-in is the Hub
    kept = adaptlab.load_splits("someone/reviews", keep_splits=True)
    assert kept.test.texts == [r["text"] for r in parts["test"]] and kept.val.texts == [r["text"] for r in parts["validation"]]
    assert len(kept.train) == 60  # "unsupervised" is none of train/validation/test: left out
    pooled = adaptlab.load_splits("someone/reviews")
    assert len(pooled.train) + len(pooled.val) + len(pooled.test) == 112
    own = adaptlab.load_splits(train_data="someone/reviews:train", test_data="someone/reviews:test")
    assert own.test.texts == [r["text"] for r in parts["test"]] and len(own.train) + len(own.val) == 60
