"""The setfit strategy: the setfit package's contrastive body tuning, features' skops head, no pickle anywhere."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.data import load_data, split_data
from adaptlab.runner import Artifact
from conftest import sentiment_rows, write_csv

FAST = {"num_iterations": 2, "batch_size": 8}  # 2 x 2 pairs per training text: a few steps on the tiny model
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth", ".ckpt")


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(12))), seed=0)


def assert_no_pickle(artifact: Path) -> None:
    files = [p for p in artifact.rglob("*") if p.is_file()]
    assert not [p.name for p in files if p.suffix in PICKLE_SUFFIXES], "an artifact file that may be a pickle"
    assert {p.suffix for p in files} <= {".json", ".md", ".safetensors", ".skops", ".txt"}, files
    with zipfile.ZipFile(artifact / "classifier.skops") as archive:  # skops' own archive holds no pickle either
        assert "schema.json" in archive.namelist()
        assert not any(name.endswith((".pkl", ".pickle")) for name in archive.namelist())


def test_python_api_trains_on_the_training_split_and_reloads_to_identical_probabilities(tiny_bert, toy_splits, tmp_path,
                                                                                        monkeypatch):
    import setfit

    seen = []
    original = setfit.Trainer.train_embeddings

    def spy(self, x_train, y_train=None, *args, **kwargs):
        seen.append(list(x_train))
        return original(self, x_train, y_train, *args, **kwargs)

    monkeypatch.setattr(setfit.Trainer, "train_embeddings", spy)
    result = adaptlab.train("setfit", toy_splits, tmp_path / "art", model=str(tiny_bert), progress=False, **FAST)
    assert seen == [toy_splits.train.texts]  # the body learns from the training split alone (no eval set, no test)
    manifest = result.manifest
    assert manifest["strategy"] == "setfit" and manifest["labels"] == ["neg", "pos"]
    assert manifest["params"]["num_iterations"] == 2 and manifest["params"]["lr"] == 2e-5 and "device" not in manifest["params"]
    details = manifest["details"]
    assert details["setfit"]["pairs"] == 2 * 2 * len(toy_splits.train) and details["setfit"]["steps"] > 0
    assert details["embedding"]["pooling"] == "mean" and set(details["selection"]) == {"C", "val_accuracy_by_C"}
    assert manifest["cost"]["trainable_params"] == manifest["cost"]["total_params"] > 0  # the body trained too
    assert manifest["training"] is None
    assert_no_pickle(tmp_path / "art")
    texts = toy_splits.test.texts + ["something never seen before"]
    reloaded = adaptlab.load_artifact(tmp_path / "art", progress=False)
    np.testing.assert_array_equal(reloaded.predict_proba(toy_splits.test.texts), result.test_proba)
    again = Artifact(tmp_path / "art", progress=False).predict_proba(texts)
    np.testing.assert_array_equal(again, reloaded.predict_proba(texts))
    accuracy = (result.test_proba.argmax(1) == toy_splits.test.labels).mean()
    assert accuracy == pytest.approx(manifest["metrics"]["test"]["accuracy"])
    # an explicit C is used as given: nothing is selected on validation
    fixed = adaptlab.train("setfit", toy_splits, tmp_path / "fixed", model=str(tiny_bert), C=0.5, progress=False, **FAST)
    assert fixed.manifest["details"]["selection"] == {} and fixed.manifest["params"]["C"] == 0.5


def test_cli_artifact_holds_a_sentence_transformers_body_and_a_skops_head_and_serves(tiny_bert, tmp_path, cli):
    from fastapi.testclient import TestClient
    from sentence_transformers import SentenceTransformer

    from adaptlab.serve import ServeOptions, create_app, load_registry

    data = write_csv(tmp_path / "toy.csv", sentiment_rows(12))
    code, out, err = cli("train", "setfit", "--data", data, "--model", tiny_bert, "--num-iterations", "2", "--batch-size", "8",
                         "--epochs", "1", "--max-length", "64", "-o", tmp_path / "art", "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"]["test"]["n"] > 0  # stdout is the JSON alone: the Trainer's logs went to stderr
    artifact = tmp_path / "art"
    assert {p.name for p in artifact.iterdir()} == {"manifest.json", "README.md", "classifier.skops", "body"}
    assert (artifact / "body" / "model.safetensors").is_file() and (artifact / "body" / "modules.json").is_file()
    assert not (artifact / "model_head.pkl").exists() and not Path(str(artifact) + ".work").exists()
    assert_no_pickle(artifact)
    assert "load them with adaptlab" in (artifact / "README.md").read_text()  # the card does not call the body a classifier
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["params"]["max_length"] == 64 and manifest["details"]["embedding"]["max_length"] == 64
    body = SentenceTransformer(str(artifact / "body"), device="cpu")  # the tuned body is a plain sentence-transformers model
    assert body.encode(["a fine film"]).shape == (1, 32)

    texts = ["a wonderful, moving film", "a dull and lifeless mess"]
    expected = adaptlab.load_artifact(artifact, progress=False).predict_proba(texts)
    code, out, err = cli("predict", artifact, *texts, "--json")
    assert code == 0, err
    predicted = [json.loads(line)["probabilities"] for line in out.splitlines() if line.strip()]
    np.testing.assert_allclose([[p["neg"], p["pos"]] for p in predicted], expected, atol=1e-6)
    registry = load_registry({"sf": artifact}, [], None, "cpu")
    with TestClient(create_app(registry, ServeOptions(precision="fp32"))) as client:
        reply = client.post("/v1/classify", json={"texts": texts, "model": "sf"})
    assert reply.status_code == 200, reply.text
    served = [[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in reply.json()["predictions"]]
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_a_causal_lm_is_refused_in_one_line_before_its_weights_load(tiny_llama, tmp_path, cli, monkeypatch):
    import setfit

    from adaptlab.methods.setfit import SetFitClassifier

    def no_loading(*args, **kwargs):
        raise AssertionError("the model's weights were loaded")

    monkeypatch.setattr(setfit.SetFitModel, "from_pretrained", no_loading)
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(12))
    code, _, err = cli("train", "setfit", "--data", data, "--model", tiny_llama, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "causal (decoder) language model" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()
    with pytest.raises(AdaptlabError, match="causal"):  # a packaged decoder: at construction, no file read
        SetFitClassifier(model="smollm2-135m")


def test_the_command_and_the_compare_entry_are_registered(cli):
    from adaptlab.compare.plan import ENTRIES, ComparePlan, ModelInfo
    from adaptlab.config import DataConfig
    from adaptlab.families import family_of

    assert family_of("setfit").name == "classifier"
    code, out, _ = cli("train", "--help")
    assert code == 0 and "setfit" in out
    code, out, _ = cli("train", "setfit", "--help")
    assert code == 0 and all(option in out for option in ("--num-iterations", "--epochs", "--lr", "--C", "--max-length"))
    kinds = {"enc": ModelInfo("encoder", 512), "dec": ModelInfo("decoder", 8192)}
    assert not ENTRIES["setfit"].in_default_ladder
    runs = ComparePlan(data=DataConfig(), models=["enc", "dec"], strategies=["setfit"]).runs(kinds)
    assert [(r.entry, r.model) for r in runs] == [("setfit", "enc")]  # encoders only
    assert runs[0].params["max_length"] == 128 and "epochs" not in runs[0].params  # quick's token cap, no step budget
    with pytest.raises(AdaptlabError, match="no run matches"):
        ComparePlan(data=DataConfig(), models=["dec"], strategies=["setfit"]).runs(kinds)


@pytest.mark.slow
def test_real_minilm_beats_chance_on_rotten_tomatoes(tmp_path):
    splits = adaptlab.load_splits("rotten_tomatoes", train_size=32, val_size=32, test_size=64)
    result = adaptlab.train("setfit", splits, tmp_path / "rt", model="minilm", num_iterations=5, progress=False)
    accuracy = result.metrics["accuracy"]
    assert accuracy >= 0.65, accuracy  # chance is 0.5; P(>= 0.65 of 64 by chance) < 1%
