"""The classification task's ladder: every strategy of the classifier family as comparison entries, the presets, and
how one classifier run is planned and trained (in the worker process).

An *entry* is one rung: a strategy with the parameters that make it that rung (``few-shot`` is ``icl`` with ``k=4``;
``features-rf`` is ``features`` with a random forest). Default hyper-parameters are each strategy's own; their learning
rates come from the adaptation layer's table (``adaptlab.adapt.defaults``, picked on validation). The on-disk
embedding cache is off for every run, so no entry's time benefits from another's work.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab._io import write_json
from adaptlab.compare.runs import EntryRunner, ModelInfo
from adaptlab.errors import AdaptlabError
from adaptlab.families import Entry

ENTRIES: dict[str, Entry] = {e.name: e for e in (
    Entry("zero-shot", "icl", {"k": 0, "draws": 1}, "hand-written prompt, label words scored, no examples",
          needs="decoder", seeded=False, epochs=False),
    Entry("few-shot", "icl", {"k": 4, "selection": "balanced"}, "4 class-balanced demonstrations in the prompt",
          needs="decoder", epochs=False),
    Entry("features-logreg", "features", {"classifier": "logreg", "cache": False}, "frozen embeddings + logistic regression (C on val)",
          seeded=False, epochs=False),
    Entry("features-rf", "features", {"classifier": "random-forest", "cache": False}, "frozen embeddings + random forest", epochs=False),
    Entry("head", "head", {"cache": False}, "new linear head on the frozen backbone (cached features)"),
    Entry("last-k", "last-k", {"layers": 2}, "last 2 transformer blocks + head trained"),
    Entry("full", "full", {}, "every weight trained"),
    Entry("lora", "lora", {}, "LoRA adapters (r=8) + head"),
    Entry("prefix-tuning", "prefix-tuning", {}, "20 trained key/value prefixes per layer + head", lr_sensitive=True),
    Entry("p-tuning", "p-tuning", {}, "20 virtual tokens from a prompt encoder + head", lr_sensitive=True),
    Entry("prompt-tuning", "prompt-tuning", {}, "20 trained input embeddings + head", lr_sensitive=True),
    Entry("soft-prompt", "soft-prompt", {}, "prompt tuning of the causal LM through its label words",
          needs="decoder", in_default_ladder=False, lr_sensitive=True),
    # not in the default ladder: its pairs grow with the training set (2 x 20 per text: 40,000 for quick's 1,000
    # texts, 2,500 steps of 16 pairs; minilm took 0.75-0.8 s a step on 2 CPU cores, so about half an hour) where quick
    # gives a run 3 minutes; it is the few-shot rung (--train-sizes 8,16,...), listed with --strategies
    Entry("setfit", "setfit", {}, "SetFit: contrastive tuning of the encoder on generated pairs + logistic regression",
          needs="encoder", epochs=False, in_default_ladder=False),
)}


@dataclass(frozen=True)
class Preset:
    """Data sizes and the few knobs that set a comparison's cost. Every value can be overridden."""

    train_size: int | None
    val_size: int | None
    test_size: int | None
    draws: int  # few-shot demonstration draws (best on validation kept)
    max_length: int | None  # token cap for every model (None: the model's, at most 256)
    tune: int  # trials per gradient entry (``--tune``; 0: the entries' own settings, untuned)
    #: The budget of every gradient entry: it trains until validation accuracy has not improved for ``patience``
    #: epochs (the best epoch kept), for at most ``max_steps`` optimiser steps, ``max_epochs`` epochs and
    #: ``max_minutes`` per run. No fixed epoch count decides quality; an explicit ``--epochs`` is taken as given.
    max_steps: int
    patience: int
    max_minutes: float | None
    max_epochs: int = 50
    lr_search: bool = True  # the learning-rate line search for the entries whose good rate moves most (lr_sensitive)


PRESETS = {
    # quick: the whole default ladder on Rotten Tomatoes in under 15 minutes on 2 CPU cores, untuned
    # (benchmarks/results/defaults_transfer.json); 128 steps is 4 epochs of 1,000 examples
    "quick": Preset(train_size=1000, val_size=250, test_size=500, draws=1, max_length=128, tune=0,
                    max_steps=128, patience=2, max_minutes=3.0),
    "standard": Preset(train_size=4000, val_size=500, test_size=1000, draws=3, max_length=256, tune=4,
                       max_steps=2000, patience=3, max_minutes=10.0),
    "full": Preset(train_size=None, val_size=None, test_size=None, draws=5, max_length=None, tune=6,
                   max_steps=20000, patience=3, max_minutes=None, lr_search=False),  # --tune searches every rate
}
DEFAULT_MODELS = ("minilm", "smollm2-135m")


def check_plan(plan) -> None:
    """What only a classification comparison refuses: the generation options, and a malformed ``--tune``."""
    from adaptlab.compare.tuning import tuning_settings
    from adaptlab.families import ladder

    if plan.documents or plan.preferences or plan.reward or plan.metric != "rouge_l":
        raise AdaptlabError("--documents, --preferences, --reward and --metric are for generation tasks (--task generation)")
    if plan.preset in PRESETS:
        tuning_settings(plan.tune, PRESETS[plan.preset].tune, {n: e for n, (e, _) in ladder("classification").items()})


class Classifiers(EntryRunner):
    """Plans and runs the classifier family's entries: each one is ``adaptlab.train`` of its strategy."""

    def targets(self, entry: Entry, models: list[str], info: dict[str, ModelInfo]) -> list[str]:
        """Classifier entries run on each encoder (on the decoders only when no encoder is listed, except the
        encoder-only ones); prompting entries on each causal LM."""
        encoders = [m for m in models if info[m].kind == "encoder"]
        decoders = [m for m in models if info[m].kind == "decoder"]
        if entry.needs == "encoder":
            return encoders
        return decoders if entry.needs == "decoder" else (encoders or decoders)

    def params(self, entry: Entry, model: str, plan, preset: Preset, info: ModelInfo) -> dict:
        from adaptlab.methods import get_strategy

        params = {**entry.params, "model": model, "progress": True}
        if entry.epochs and plan.epochs is not None:  # an explicit --epochs is taken as it is
            params["epochs"] = plan.epochs
        elif entry.epochs:
            params.update(epochs=preset.max_epochs, max_steps=preset.max_steps, patience=preset.patience,
                          max_minutes=preset.max_minutes)
        if entry.strategy == "icl" and entry.params.get("k"):
            params["draws"] = preset.draws
        strategy = get_strategy(entry.strategy)
        if preset.max_length and "max_length" in strategy.param_names():
            params["max_length"] = _length_cap(preset.max_length, info.positions, strategy)
        return params

    def param_names(self, entry: Entry) -> set[str]:
        from adaptlab.methods import get_strategy

        return set(get_strategy(entry.strategy).param_names())

    def check(self, entry: Entry, params: dict) -> None:
        from adaptlab.methods import get_strategy

        strategy = get_strategy(entry.strategy)
        strategy.check_params(params, f"entry '{entry.name}'")
        try:
            strategy(**params)  # every value is checked now (constructing only stores), not in a worker later
        except AdaptlabError as exc:
            raise AdaptlabError(f"entry '{entry.name}' (settings from the preset and --set): {exc}") from None

    def finish(self, entry: Entry, params: dict, plan, preset: Preset) -> tuple[dict, dict | None]:
        """The entry's tuning (``--tune``), else the learning-rate search where its preset says so."""
        from adaptlab.compare.tuning import entry_tuning, tuning_settings
        from adaptlab.families import ladder

        trials, spaces = tuning_settings(plan.tune, preset.tune, {n: e for n, (e, _) in ladder("classification").items()})
        tune = entry_tuning(trials, spaces, entry.name, entry.strategy, params)
        own_lr = "lr" in {**plan.params.get("all", {}), **plan.params.get(entry.name, {})}
        if tune is None and entry.lr_sensitive and preset.lr_search and entry.epochs and not own_lr:
            params = {"lr_search": True, **params}  # --set NAME.lr_search=false still wins
        return params, tune

    def run(self, spec: dict, run_dir: Path) -> dict:
        from adaptlab.compare.tuning import tuned_params
        from adaptlab.config import DataConfig
        from adaptlab.jobs import work_dir
        from adaptlab.methods import get_strategy
        from adaptlab.runner import train

        started = time.perf_counter()
        splits = DataConfig(**spec["data"]).load()
        tuning = _tune(spec, splits, run_dir.parent / "tuning") if spec.get("tune") else None
        params = {**(tuned_params(spec["params"], tuning["best"]) if tuning else spec["params"]), "seed": spec["seed"]}
        artifact = run_dir / "artifact"
        if "resume" in get_strategy(spec["strategy"]).param_names() and (work_dir(artifact) / "checkpoints" / "last.ckpt").exists():
            params["resume"] = True
        result = train(spec["strategy"], splits, artifact, overwrite=True, **params)  # the comparison owns its run directories
        manifest = result.manifest
        metrics = manifest["metrics"]
        return {
            **self.result(spec, manifest, started),
            "metrics": {"test": metrics["test"], "val": metrics["val"],
                        **({"test_over_draws": metrics["test_over_draws"]} if "test_over_draws" in metrics else {})},
            "cost": manifest["cost"],
            "params": manifest["params"],
            "labels": manifest["labels"],
            "test_predictions": result.test_proba.argmax(axis=1).tolist(),
            "test_labels": splits.test.labels.tolist(),
            **({"tuning": tuning} if tuning else {}),
        }


CLASSIFIERS = Classifiers()


def _tune(spec: dict, splits, directory: Path) -> dict:
    """The entry's study, shared by its seeds (``directory`` is beside the seed directories); a study made for other
    data, settings or search space is started afresh. Only the training and validation splits are passed on."""
    from adaptlab.compare.tuning import tune

    identity = {key: spec[key] for key in ("strategy", "model", "params", "data")} | {"space": spec["tune"]["space"]}
    stored = directory / "spec.json"
    if stored.exists() and json.loads(stored.read_text(encoding="utf-8")) != identity:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(stored, identity)
    return tune(spec["strategy"], spec["params"], spec["tune"]["space"], spec["tune"]["trials"], splits.train, splits.val,
                directory)


def _length_cap(cap: int, positions: int | None, strategy) -> int:
    """The preset's token cap, lowered where the model's position table is shorter (virtual tokens of the
    prompt-learning methods take positions too)."""
    import inspect

    if positions is None:
        return cap
    virtual = inspect.signature(strategy.__init__).parameters.get("num_virtual_tokens")
    return max(1, min(cap, positions - (virtual.default if virtual is not None else 0)))
