"""The shared run layer: every strategy follows one contract, every family writes one manifest schema, and
the runtime (device, precision) is one vocabulary checked before any work."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import adaptlab
from adaptlab import AdaptlabError
from adaptlab.data import load_data, split_data
from adaptlab.jobs import COST_KEYS, MANIFEST_KEYS
from adaptlab.methods import STRATEGIES

from conftest import sentiment_rows, write_csv

SRC = Path(__file__).resolve().parents[1] / "src" / "adaptlab"
DECODER_ONLY = {"icl", "soft-prompt"}
QUICK = {"icl": {"k": 2, "draws": 2}, "features": {}, "soft-prompt": {"epochs": 1, "batch_size": 8}}


@pytest.fixture
def toy_splits(tmp_path):
    return split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(12))), seed=0)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_fits_saves_and_reloads_to_identical_probabilities(name, tiny_bert, tiny_llama, toy_splits, tmp_path):
    model = str(tiny_llama if name in DECODER_ONLY else tiny_bert)
    params = QUICK.get(name, {"epochs": 1, "batch_size": 8})
    result = adaptlab.train(name, toy_splits, tmp_path / "art", model=model, progress=False, **params)
    reloaded = adaptlab.load_artifact(tmp_path / "art", progress=False).predict_proba(toy_splits.test.texts)
    np.testing.assert_array_equal(reloaded, result.test_proba)
    assert set(result.manifest) >= set(MANIFEST_KEYS) and list(result.manifest["cost"]) == list(COST_KEYS)
    assert not Path(str(tmp_path / "art") + ".work").exists()  # the job runner cleaned its work directory


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_constructors_only_store_parameters_and_get_params_round_trips(name):
    cls = STRATEGIES[name]
    strategy = cls(model="./no/such/model")  # resolving it would raise: constructors must not load anything
    params = strategy.get_params()
    assert cls(**params).get_params() == params
    assert "device" not in params and "progress" not in params  # runtime options are not what was learned
    with pytest.raises(AdaptlabError, match="unknown parameter"):
        cls.check_params({"no_such_option": 1}, "options")


@pytest.mark.parametrize("name, value, message", [
    ("lora", {"r": 0}, "--r must be at least 1"),
    ("lora", {"lr": float("inf")}, "--lr must be a finite number"),
    ("full", {"grad_clip": -1.0}, "--grad-clip must be greater than 0"),
    ("prefix-tuning", {"encoder_hidden_size": 0}, "--encoder-hidden-size must be at least 1"),
    ("p-tuning", {"encoder_type": "GRU"}, "--encoder-type must be one of MLP, LSTM"),
    ("lora", {"precision": "16"}, "--precision must be one of"),
    ("lora", {"r": "eight"}, "--r must be an integer"),
])
def test_parameter_values_are_checked_from_their_declaration(name, value, message):
    with pytest.raises(AdaptlabError, match=message):
        STRATEGIES[name](**value)


def test_device_cuda_without_cuda_exits_2_before_training(cli, tiny_bert, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(12))
    code, _, err = cli("train", "lora", "--data", data, "--model", tiny_bert, "--device", "cuda", "-o", tmp_path / "out")
    assert code == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()
    code, _, err = cli("train", "lora", "--data", data, "--model", tiny_bert, "--device", "tpu", "-o", tmp_path / "out")
    assert code == 2 and "--device must be" in err


def test_lightning_gets_the_runtime_device(tiny_bert, toy_splits, tmp_path, monkeypatch):
    import lightning

    seen = {}
    original = lightning.Trainer.__init__

    def spy(self, *args, **kwargs):
        seen.update(accelerator=kwargs["accelerator"], devices=kwargs["devices"], precision=kwargs["precision"])
        original(self, *args, **kwargs)

    monkeypatch.setattr(lightning.Trainer, "__init__", spy)
    adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_bert), device="cpu", epochs=1, progress=False)
    assert seen == {"accelerator": "cpu", "devices": 1, "precision": "32-true"}


def test_every_family_writes_one_manifest_schema_and_loads_back(tiny_bert, tiny_sentence_bert, tiny_llama, toy_splits, tmp_path):
    """Every registered family with artifacts is trained here (a family added to the registry without a case fails),
    writes the same manifest and cost keys, returns a typed JobResult, and loads back through load_artifact."""
    from adaptlab.families import FAMILIES
    from adaptlab.generation import Generator, SamplingOptions
    from adaptlab.rag.retriever import QueryPassage, split_pairs, train_retriever
    from adaptlab.results import JobResult, Manifest
    from adaptlab.rlhf import read_preferences, split_preferences, train_ppo, train_reward_model
    from adaptlab.rlhf.dpo import train_dpo
    from adaptlab.rlhf.grpo import train_grpo, train_rloo
    from adaptlab.rlhf.kto import read_thumbs, split_thumbs, train_kto
    from adaptlab.rlhf.orpo import train_orpo
    from adaptlab.rlhf.simpo import train_simpo

    rows = [{"prompt": f"Question {i}?", "chosen": f"A kind, helpful answer number {i}.", "rejected": "no."} for i in range(30)]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(json.dumps(r) for r in rows))
    split = split_preferences(read_preferences(str(prefs))[0], str(prefs), seed=0)
    chat = adaptlab.load_generation_splits(write_csv(tmp_path / "pc.csv", [{"prompt": f"Say {i}.", "completion": "ok"} for i in range(30)]))
    pairs = split_pairs([QueryPassage(f"what is item {i}?", f"Item {i} is a thing numbered {i}.") for i in range(40)], seed=0)
    results = {
        "classifier": adaptlab.train("lora", toy_splits, tmp_path / "clf", model=str(tiny_bert), epochs=1, progress=False),
        "sft": adaptlab.train_sft(chat, tmp_path / "sft", model=str(tiny_llama), epochs=1, max_new_tokens=2, forgetting=False,
                                  progress=False),
        "reward": train_reward_model(split, tmp_path / "rm", model=str(tiny_bert), epochs=1, progress=False),
        "dpo": train_dpo(split, tmp_path / "dpo", model=str(tiny_llama), epochs=1, max_length=64, progress=False),
        "ppo": train_ppo([f"Prompt {i}:" for i in range(8)], tmp_path / "ppo", reward=lambda p, r: [float(len(x)) for x in r],
                         model=str(tiny_llama), steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=4, progress=False),
        "retriever": train_retriever(pairs, tmp_path / "ret", model=str(tiny_sentence_bert), epochs=1, progress=False),
        "orpo": train_orpo(split, tmp_path / "orpo", model=str(tiny_llama), epochs=1, max_length=64, progress=False),
        "simpo": train_simpo(split, tmp_path / "simpo", model=str(tiny_llama), epochs=1, max_length=64, progress=False),
        "kto": train_kto(split_thumbs(read_thumbs(str(prefs)), str(prefs)), tmp_path / "kto", model=str(tiny_llama), epochs=1,
                         max_length=64, progress=False),
        **{name: train(adaptlab.load_generation_splits("arithmetic", train_size=4, val_size=2, test_size=2), tmp_path / name,
                       model=str(tiny_llama), reward=["numeric"], max_steps=1, batch_size=2, num_generations=2,
                       max_completion_length=3, progress=False) for name, train in (("grpo", train_grpo), ("rloo", train_rloo))},
    }
    assert set(results) == {f.name for f in FAMILIES.values() if f.strategies}  # every family with artifacts
    keys = {name: sorted(r.manifest.to_json()) for name, r in results.items()}
    assert all(k == keys["classifier"] for k in keys.values()), keys
    for name, result in results.items():
        assert isinstance(result, JobResult) and isinstance(result.manifest, Manifest)
        assert list(result.manifest.to_json()["cost"]) == list(COST_KEYS)
        assert result.manifest.cost.train_seconds > 0 and result.manifest.cost.eval_seconds >= 0
        stored = json.loads((result.artifact / "manifest.json").read_text())
        assert Manifest.from_json(stored).to_json() == stored  # the typed manifest round-trips exactly
        assert result["metrics"] == stored["metrics"]  # reading by key, as before the types, still works
    assert set(results["dpo"].manifest.to_json()["metrics"]) == {"test", "val"}  # validation during training, test once after
    assert json.loads((tmp_path / "ppo" / "train_prompts.json").read_text()) == [f"Prompt {i}:" for i in range(8)]
    loaded = {name: adaptlab.load_artifact(result.artifact) for name, result in results.items()}
    np.testing.assert_array_equal(loaded["classifier"].predict_proba(toy_splits.test.texts), results["classifier"].test_proba)
    options = SamplingOptions(max_new_tokens=3)
    for name in ("sft", "dpo", "ppo", "orpo", "simpo", "kto", "grpo", "rloo"):  # generators: loading twice gives the same weights, so the same greedy text
        assert isinstance(loaded[name], Generator)
        assert loaded[name].generate("Say 3.", options) == adaptlab.load_artifact(results[name].artifact).generate("Say 3.", options)
    scores = loaded["reward"].score(["Question 1?"], ["A kind answer."])
    np.testing.assert_allclose(scores, adaptlab.load_artifact(results["reward"].artifact).score(["Question 1?"], ["A kind answer."]))
    vectors = loaded["retriever"].embed(["what is item 3?"])
    assert vectors.shape[0] == 1 and np.isfinite(vectors).all()


def test_knn_icl_builds_its_embedder_once(tiny_llama, toy_splits, tmp_path, monkeypatch):
    import adaptlab.methods.icl as icl

    built = []
    original = icl.Embedder.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("cache"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(icl.Embedder, "__init__", counting)
    adaptlab.train("icl", toy_splits, tmp_path / "knn", model=str(tiny_llama), k=2, selection="knn", progress=False)
    artifact = adaptlab.load_artifact(tmp_path / "knn", progress=False, cache=False)
    built.clear()
    for _ in range(3):
        artifact.predict_proba(["a great film", "a dull film"])
    assert len(built) == 1 and built == [False]  # one embedder for every request, without the disk cache


def test_streamed_generation_runs_on_the_launchers_thread(tiny_llama):
    from concurrent.futures import ThreadPoolExecutor

    from adaptlab.generation import Generator, SamplingOptions

    generator = Generator(str(tiny_llama), "cpu")
    threads = []
    original = generator.model.generate

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    generator.model.generate = recording
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptlab-compute") as executor:
        pieces = list(generator.stream("Hello", SamplingOptions(max_new_tokens=4), launch=executor.submit))
    assert threads and threads[0].startswith("adaptlab-compute")
    generator.model.generate = original
    assert "".join(pieces) == generator.generate("Hello", SamplingOptions(max_new_tokens=4))  # greedy: the same reply


def test_one_lora_config_module_and_short_modules():
    constructing = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "LoraConfig(" in p.read_text())
    assert constructing == ["adapt/peft_factory.py"]
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_old_precision_names_and_v1_manifests_still_load(tiny_bert, toy_splits, tmp_path):
    adaptlab.train("lora", toy_splits, tmp_path / "art", model=str(tiny_bert), epochs=1, progress=False)
    path = tmp_path / "art" / "manifest.json"
    manifest = json.loads(path.read_text())
    before = adaptlab.load_artifact(tmp_path / "art", progress=False).predict_proba(["a fine film"])
    # the format-1 layout: extras at the top level, Lightning's precision names
    v1 = {**{k: v for k, v in manifest.items() if k not in ("details", "runtime", "manifest_sha256")}, **manifest["details"], "format_version": 1,
          "params": {**manifest["params"], "precision": "32", "accelerator": "auto"}}
    path.write_text(json.dumps(v1))
    after = adaptlab.load_artifact(tmp_path / "art", progress=False).predict_proba(["a fine film"])
    np.testing.assert_array_equal(before, after)


def test_rlhf_options_are_checked_before_the_data_is_read(cli, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    code, _, err = cli("rlhf", "dpo", "--data", missing, "-o", tmp_path / "dpo", "--beta", "-1")
    assert code == 2 and "--beta must be greater than 0" in err
    code, _, err = cli("rlhf", "reward", "--data", missing, "-o", tmp_path / "rm", "--method", "qlora")
    assert code == 2 and "--method must be one of lora, full" in err
