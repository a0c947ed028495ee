"""The registry of families and PEFT methods: a new method or family is one module plus its registration.

Both are registered *here*, inside the test file, as a user's plugin would be, and then used through the command
line, a comparison (whose worker processes import this module again: the comparison passes them the modules that
registered something) and ``load_artifact``. In the pytest process they are registered by a fixture and removed
afterwards, so no other test sees them; in a comparison's worker they register on import.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from adaptlab.params import param

TOY_METHOD = "toy-ia3"
TOY_FAMILY = "toy-centroid"


# -- a PEFT method: IA3 (learned rescaling vectors), with one option -----------------------------------------------
@dataclass(kw_only=True, eq=False)
class ToyIA3Options:
    feedforward: bool = param(True, "Also rescale the feed-forward activations.")


def toy_ia3_config(model, options, task_type: str):
    from peft import IA3Config

    attention, feedforward = (["key", "value"], ["output.dense"]) if model.config.model_type == "bert" else (
        ["k_proj", "v_proj"], ["down_proj"])
    targets = attention + (feedforward if options.feedforward else [])
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward if options.feedforward else [])


# -- a family: nearest class centroid over hashed words (numpy), its own job, artifact, command and entry -----------
@dataclass(kw_only=True, eq=False)
class CentroidJob:
    name = "toy-centroid"
    buckets: int = param(256, "Hashed word buckets.", minimum=8, maximum=65536)
    seed: int = param(0, "Unused (the method is deterministic).")
    device: str | None = param(None, "Unused.", runtime=True)

    def __post_init__(self) -> None:
        from adaptlab.params import check_fields

        check_fields(self)  # the declared bounds: a bad --buckets is one line

    @property
    def runtime(self):
        from adaptlab.runtime import Runtime

        return Runtime("cpu", "fp32")

    def features(self, texts) -> np.ndarray:
        import zlib

        out = np.zeros((len(texts), self.buckets), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % self.buckets] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def fit(self, splits, workdir: Path):
        x = self.features(splits.train.texts)
        self.centroids_ = np.stack([x[splits.train.labels == k].mean(0) for k in range(len(splits.label_names))])
        return self

    def predict_proba(self, texts) -> np.ndarray:
        scores = self.features(texts) @ self.centroids_.T * 10
        scores = np.exp(scores - scores.max(1, keepdims=True))
        return scores / scores.sum(1, keepdims=True)

    def evaluate(self, splits) -> dict:
        from adaptlab.metrics import classification_metrics

        self.test_proba_ = self.predict_proba(splits.test.texts)
        return {"test": classification_metrics(splits.test.labels, self.test_proba_, splits.label_names),
                "val": classification_metrics(splits.val.labels, self.predict_proba(splits.val.texts), splits.label_names)}

    def inference_rate(self, splits) -> float:
        started = time.perf_counter()
        self.predict_proba(splits.test.texts)
        return len(splits.test.texts) / max(time.perf_counter() - started, 1e-9)

    def cost(self) -> dict:
        return {"trainable_params": int(self.centroids_.size), "total_params": int(self.centroids_.size)}

    def base_model(self) -> dict:
        return {"name": "hashed-words", "fingerprint": f"buckets-{self.buckets}"}

    def get_params(self) -> dict:
        return {"buckets": self.buckets, "seed": self.seed}

    def training_report(self) -> None:
        return None

    def details(self) -> dict:
        return {}

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"centroids": self.centroids_}, str(directory / "centroids.safetensors"))


def train_centroid(splits, output, *, overwrite: bool = False, **params):
    from adaptlab.jobs import run_job

    job = CentroidJob(**params)
    return run_job(job, splits, output, seed=job.seed, labels=splits.label_names, data_description=splits.describe(),
                   train_examples=len(splits.train), overwrite=overwrite)


class LoadedCentroids:
    def __init__(self, path: str, **runtime) -> None:
        from safetensors.numpy import load_file

        from adaptlab.artifacts import read_manifest

        self.manifest = read_manifest(Path(path))
        self.job = CentroidJob(**self.manifest["params"])
        self.job.centroids_ = load_file(str(Path(path) / "centroids.safetensors"))["centroids"]

    def predict_proba(self, texts) -> np.ndarray:
        return self.job.predict_proba(list(texts))


def add_centroid_command(app) -> None:
    from adaptlab.cli.common import dataclass_options, opt

    def run(values: dict) -> None:
        import adaptlab

        splits = adaptlab.load_splits(values.pop("data"), train_size=values.pop("train_size"), test_size=values.pop("test_size"))
        result = train_centroid(splits, values.pop("output"), **{k: v for k, v in values.items() if v is not None})
        print(json.dumps({"accuracy": result.manifest["metrics"]["test"]["accuracy"]}))

    from adaptlab.cli.common import command

    options = {"data": opt(str, "Data.", "--data"), "train_size": opt(int, "Train size."), "test_size": opt(int, "Test size."),
               "output": opt(str, "Artifact.", "--output", "-o"), **dataclass_options(CentroidJob)}
    app.command("train")(command("toy_train", "Nearest class centroid over hashed words.", options, run))


def centroid_runner():
    from adaptlab.compare.runs import EntryRunner

    class CentroidRunner(EntryRunner):
        def param_names(self, entry) -> set[str]:
            return {"buckets", "model", "device"}

        def params(self, entry, model, plan, preset, info) -> dict:
            return dict(entry.params)

        def targets(self, entry, models, info) -> list[str]:
            return models[:1]  # the model is not used: one run

        def run(self, spec: dict, run_dir: Path) -> dict:
            from adaptlab.config import DataConfig

            started = time.perf_counter()
            splits = DataConfig(**spec["data"]).load()
            params = {k: v for k, v in spec["params"].items() if k in ("buckets",)}
            result = train_centroid(splits, run_dir / "artifact", overwrite=True, seed=spec["seed"], **params)
            metrics = result.manifest["metrics"]
            return {**self.result(spec, result.manifest, started), "metrics": {"test": metrics["test"], "val": metrics["val"]},
                    "labels": result.manifest["labels"], "test_labels": splits.test.labels.tolist(),
                    "test_predictions": LoadedCentroids(str(run_dir / "artifact")).predict_proba(splits.test.texts).argmax(1).tolist()}

    return CentroidRunner()


def register_toys() -> None:
    from adaptlab.adapt import PeftMethod, register_peft_method
    from adaptlab.families import Entry, Family, register_family

    register_peft_method(PeftMethod(TOY_METHOD, ToyIA3Options, toy_ia3_config, "IA3 rescaling vectors (a toy registration)",
                                    lr={"classifier": 1e-2, "sft": 1e-2}))
    register_family(Family(TOY_FAMILY, "Nearest class centroid over hashed words", ("toy-centroid",), job=CentroidJob,
                           train=train_centroid, command=("toy", "train"), cli=add_centroid_command, load=LoadedCentroids,
                           entries={"classification": (Entry("centroid", "toy-centroid", {"buckets": 128},
                                                             "hashed-word centroids", seeded=False, epochs=False,
                                                             in_default_ladder=False),)},
                           compare=centroid_runner()))


def unregister_toys() -> None:
    from adaptlab.adapt.registry import unregister_peft_method
    from adaptlab.families import GROUPS, PLUGIN_MODULES, unregister_family

    unregister_peft_method(TOY_METHOD)
    unregister_family(TOY_FAMILY)
    GROUPS.pop("toy", None)
    PLUGIN_MODULES[:] = [m for m in PLUGIN_MODULES if m != __name__]


if __name__ in os.environ.get("ADAPTLAB_PLUGINS", "").split(","):  # a comparison's worker importing this module
    register_toys()


@pytest.fixture
def toys():
    register_toys()
    yield
    unregister_toys()


def test_a_toy_peft_method_works_through_train_sft_compare_and_load(toys, cli, tiny_bert, tiny_llama, tmp_path):
    import adaptlab
    from conftest import write_jsonl

    out = tmp_path / "ia3"
    code, _, err = cli("train", TOY_METHOD, "--data", "rotten_tomatoes", "--model", tiny_bert, "--train-size", "60",
                       "--val-size", "30", "--test-size", "40", "--epochs", "1", "--no-feedforward", "-o", out, "--json")
    assert code == 0, err
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "IA3" and adapter["feedforward_modules"] in ([], None, set())
    loaded = adaptlab.load_artifact(out, progress=False)
    proba = loaded.predict_proba(["a fine film", "a dull film"])
    assert proba.shape == (2, 2) and np.allclose(proba.sum(1), 1)
    assert np.allclose(adaptlab.load_artifact(out, progress=False).predict_proba(["a fine film", "a dull film"]), proba)

    data = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Say colour {i}.", "completion": "red"} for i in range(30)])
    code, _, err = cli("sft", "train", "--data", data, "--model", tiny_llama, "--method", TOY_METHOD, "--epochs", "1",
                       "--max-new-tokens", "2", "--no-forgetting", "-o", tmp_path / "sft-ia3", "--json")
    assert code == 0, err
    from adaptlab.generation import Generator, SamplingOptions
    from peft import PeftModel

    generator = adaptlab.load_artifact(tmp_path / "sft-ia3")
    assert isinstance(generator, Generator) and isinstance(generator.generate("Say colour 3.", SamplingOptions(max_new_tokens=2)), str)
    assert isinstance(generator.model, PeftModel) and generator.model.active_peft_config.peft_type == "IA3"

    compare = tmp_path / "cmp"
    code, _, err = cli("compare", "--data", "rotten_tomatoes", "--models", tiny_bert, "--train-size", "60", "--val-size", "30",
                       "--test-size", "40", "--epochs", "1", "--strategies", f"features-logreg,{TOY_METHOD},centroid",
                       "--output", compare)
    assert code == 0, err
    results = json.loads((compare / "results.json").read_text())
    assert results["failures"] == [] and {e["entry"] for e in results["entries"]} == {"features-logreg", TOY_METHOD, "centroid"}


def test_a_toy_family_gets_a_command_an_artifact_and_a_loader(toys, cli, tmp_path):
    import adaptlab

    code, out, err = cli("toy", "train", "--data", "rotten_tomatoes", "--train-size", "200", "--test-size", "100",
                         "--buckets", "512", "-o", tmp_path / "toy")
    assert code == 0, err
    accuracy = json.loads(out)["accuracy"]
    manifest = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert manifest["strategy"] == "toy-centroid" and manifest["params"]["buckets"] == 512
    loaded = adaptlab.load_artifact(tmp_path / "toy")
    assert isinstance(loaded, LoadedCentroids)
    splits = adaptlab.load_splits("rotten_tomatoes", train_size=200, test_size=100)
    assert float((loaded.predict_proba(splits.test.texts).argmax(1) == splits.test.labels).mean()) == pytest.approx(accuracy)
    code, _, err = cli("toy", "train", "--data", "rotten_tomatoes", "--buckets", "3", "-o", tmp_path / "bad")
    assert code == 2 and "--buckets" in err


def test_registration_refuses_clashes_and_leaves_the_default_ladders_alone(toys):
    from adaptlab.adapt import PeftMethod, register_peft_method
    from adaptlab.compare.tasks import TASKS
    from adaptlab.errors import AdaptlabError
    from adaptlab.families import Family, family_of, register_family

    with pytest.raises(AdaptlabError, match="belongs to family 'sft'"):
        register_family(Family("other", "clash", ("sft",)))
    with pytest.raises(AdaptlabError, match="built-in"):
        register_peft_method(PeftMethod("lora", ToyIA3Options, toy_ia3_config, "", {"sft": 1e-3}))
    assert family_of(TOY_METHOD).name == "classifier" and family_of("toy-centroid").name == TOY_FAMILY
    for task in TASKS.values():
        defaults = [name for name, (entry, _) in task.entries().items() if entry.in_default_ladder]
        assert TOY_METHOD not in defaults and "centroid" not in defaults


def test_every_generator_family_and_no_other_is_a_generator():
    from adaptlab.families import FAMILIES, generator_strategies

    policies = {"dpo", "ppo", "orpo", "simpo", "kto", "grpo", "rloo"}
    assert set(generator_strategies()) == {"sft"} | {f"{name}-policy" for name in policies}
    assert {f.name for f in FAMILIES.values() if f.generator} == {"sft"} | policies
