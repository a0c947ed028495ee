"""The features strategy end to end: fit, artifact, reload, predict, CLI, config files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.artifacts import read_manifest
from adaptlab.data import load_data, split_data
from conftest import read_json_lines, sentiment_rows, write_csv


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)


@pytest.mark.parametrize("classifier", ["logreg", "random-forest"])
def test_artifact_reload_gives_bit_identical_predictions(tiny_bert, toy_splits, tmp_path, classifier):
    result = adaptlab.train(
        "features", toy_splits, tmp_path / "art", model=str(tiny_bert), classifier=classifier,
        n_estimators=20, precision="fp32", progress=False,
    )
    manifest = result.manifest
    assert manifest["strategy"] == "features" and manifest["labels"] == ["neg", "pos"]
    assert manifest["data"]["fingerprints"]["test"] == toy_splits.test.fingerprint()
    assert manifest["params"]["classifier"] == classifier and "device" not in manifest["params"]
    assert {"train_seconds", "peak_rss_mb", "trainable_params", "total_params"} <= set(manifest["cost"])
    assert manifest["cost"]["total_params"] > manifest["cost"]["trainable_params"] > 0
    files = {p.name for p in (tmp_path / "art").iterdir()}
    assert files == {"manifest.json", "classifier.skops", "README.md"}  # README.md: the model card
    texts = toy_splits.test.texts + ["something never seen before"]
    # recompute everything after reload: no embedding cache involved
    before = adaptlab.load_artifact(tmp_path / "art", cache=False, progress=False).predict_proba(texts)
    again = adaptlab.load_artifact(tmp_path / "art", cache=False, progress=False).predict_proba(texts)
    np.testing.assert_array_equal(before, again)
    assert before.shape == (len(texts), 2)
    # the reported test accuracy is what the artifact actually predicts
    accuracy = (before[:-1].argmax(1) == toy_splits.test.labels).mean()
    assert accuracy == pytest.approx(manifest["metrics"]["test"]["accuracy"])


def test_no_pickle_and_unexpected_estimators_are_refused(tiny_bert, toy_splits, tmp_path):
    adaptlab.train("features", toy_splits, tmp_path / "art", model=str(tiny_bert), precision="fp32", progress=False)
    with zipfile.ZipFile(tmp_path / "art" / "classifier.skops") as archive:
        assert "schema.json" in archive.namelist()
        assert not any(name.endswith((".pkl", ".pickle")) for name in archive.namelist())
    # swap in an estimator type adaptlab does not trust, with a consistent checksum
    import skops.io
    from sklearn.svm import SVC

    from adaptlab.artifacts import MANIFEST, file_sha256, seal_manifest

    x = np.random.default_rng(0).normal(size=(10, 32))
    skops.io.dump(SVC().fit(x, [0, 1] * 5), tmp_path / "art" / "classifier.skops")
    manifest = json.loads((tmp_path / "art" / MANIFEST).read_text())
    manifest["files"]["classifier.skops"] = file_sha256(tmp_path / "art" / "classifier.skops")
    (tmp_path / "art" / MANIFEST).write_text(json.dumps(seal_manifest(manifest)))  # a forger who re-seals everything
    with pytest.raises(AdaptlabError, match="unexpected estimator"):
        adaptlab.load_artifact(tmp_path / "art")


def test_tampered_or_incomplete_artifacts_are_refused(tiny_bert, toy_splits, tmp_path):
    adaptlab.train("features", toy_splits, tmp_path / "art", model=str(tiny_bert), precision="fp32", progress=False)
    path = tmp_path / "art" / "classifier.skops"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(AdaptlabError, match="checksum"):
        read_manifest(tmp_path / "art")
    path.unlink()
    with pytest.raises(AdaptlabError, match="missing"):
        read_manifest(tmp_path / "art")
    with pytest.raises(AdaptlabError, match="not an adaptlab artifact"):
        read_manifest(tmp_path)


def test_failed_training_leaves_the_previous_artifact(tiny_bert, toy_splits, tmp_path, monkeypatch):
    adaptlab.train("features", toy_splits, tmp_path / "art", model=str(tiny_bert), precision="fp32", progress=False)
    before = (tmp_path / "art" / "manifest.json").read_text()
    from adaptlab.methods.features import FeatureClassifier

    def broken_save(self, directory):
        (directory / "classifier.skops").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureClassifier, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        adaptlab.train("features", toy_splits, tmp_path / "art", model=str(tiny_bert), precision="fp32", progress=False,
                       overwrite=True)
    assert (tmp_path / "art" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["art", "toy.csv"]


def test_unknown_parameters_are_rejected(toy_splits, tmp_path):
    with pytest.raises(AdaptlabError, match="unknown parameter.*bogus"):
        adaptlab.train("features", toy_splits, tmp_path / "a", bogus=1)
    with pytest.raises(AdaptlabError, match="--classifier"):
        adaptlab.train("features", toy_splits, tmp_path / "a", classifier="svm")
    with pytest.raises(AdaptlabError, match="unknown strategy"):
        adaptlab.train("nope", toy_splits, tmp_path / "a")


def test_cli_train_predict_with_yaml_config(tiny_bert, tmp_path, cli):
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(20))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"strategy: features\ndata: {{source: {data}, seed: 1}}\n"
        f"params: {{model: {tiny_bert}, classifier: logreg, precision: fp32}}\noutput: {tmp_path / 'art'}\n"
    )
    code, out, err = cli("train", "features", "--config", config, "--C", "0.5", "--json")
    assert code == 0, err
    result = json.loads(out)
    manifest = read_manifest(tmp_path / "art")
    assert manifest["params"]["C"] == 0.5 and manifest["data"]["seed"] == 1  # CLI overrides, YAML fills in
    assert result["metrics"]["test"]["accuracy"] == manifest["metrics"]["test"]["accuracy"]

    code, out, err = cli("predict", tmp_path / "art", "a wonderful film", "--json")
    assert code == 0, err
    (row,) = read_json_lines(out)
    assert row["label"] in {"neg", "pos"} and sum(row["probabilities"].values()) == pytest.approx(1)

    code, out, _ = cli("predict", tmp_path / "art", "--json", stdin="first text\nsecond text\n")
    assert code == 0 and [r["text"] for r in read_json_lines(out)] == ["first text", "second text"]

    (tmp_path / "in.txt").write_text("one\ntwo\nthree\n")
    code, out, _ = cli("predict", tmp_path / "art", "--file", tmp_path / "in.txt")
    assert code == 0 and "three" in out


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("strategy: features\nparams: {modle: minilm}\n", "unknown parameter(s) modle"),
        ("strategy: features\ndata: {sorce: imdb}\n", "unknown key(s) sorce"),
        ("strategy: features\nepochs: 3\n", "unknown key(s) epochs"),
        ("strategy: features\ndata: {train_size: many}\n", "train_size: input should be a valid integer"),
        ("strategy: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path, cli, yaml_text, message):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    code, _, err = cli("train", "features", "--config", config)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_embed_writes_npy_and_parquet(tiny_bert, tmp_path, cli):
    import pandas as pd

    code, _, err = cli("embed", "one", "two", "--model", tiny_bert, "--precision", "fp32", "-o", tmp_path / "e.npy")
    assert code == 0, err
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape == (2, 32)
    code, _, err = cli("embed", "one", "two", "--model", tiny_bert, "--precision", "fp32", "-o", tmp_path / "e.parquet")
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert frame["text"].tolist() == ["one", "two"]
    np.testing.assert_array_equal(np.stack(frame["embedding"]), vectors)
    code, _, err = cli("embed", "x", "-o", tmp_path / "e.csv")
    assert code == 2 and ".npy or .parquet" in err


def test_cli_models_lists_the_defaults(cli):
    code, out, _ = cli("models")
    assert code == 0 and "minilm" in out and "smollm2-135m" in out


@pytest.mark.slow
def test_real_minilm_end_to_end_on_rotten_tomatoes(tmp_path, cli):
    """The user-facing path on the real packaged model and data (a CPU-sized subsample)."""
    code, out, err = cli(
        "train", "features", "--data", "rotten_tomatoes", "--train-size", "800", "--test-size", "300",
        "--output", tmp_path / "rt", "--json",
    )
    assert code == 0, err
    metrics = json.loads(out)["metrics"]["test"]
    assert metrics["n"] == 300 and metrics["accuracy"] > 0.68  # measured ~0.75 on this subsample
    code, out, _ = cli("predict", tmp_path / "rt", "a gorgeous, funny and moving film", "a dull, tedious mess", "--json")
    assert [row["label"] for row in read_json_lines(out)] == ["positive", "negative"]
