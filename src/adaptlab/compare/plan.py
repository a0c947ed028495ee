"""What a comparison runs: the ladder of entries, the presets, and the plan built from options or YAML.

An *entry* is one rung of the ladder: a strategy with the parameters that make it that rung (``few-shot`` is
``icl`` with ``k=4``; ``features-rf`` is ``features`` with a random forest). A *run* is one entry on one
model with one training seed. Every run of a comparison uses the same data split (the data seed is fixed);
``--seeds`` varies only the training seed, so differences between runs are the strategies', not the split's.

``task="generation"`` (inferred from prompt/completion or chat data) compares the generation ladder of
``adaptlab.compare.generation`` instead: prompting, retrieval, every SFT method and DPO on a causal LM.

Default hyper-parameters are each strategy's own; their learning rates come from the one table per task in
``adaptlab.adapt.defaults`` (which ``train``, ``sft``, ``rlhf`` and both ladders read; picked on validation). The on-disk embedding cache is off for every run, so no entry's time
benefits from another's work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.compare.entry import Entry
from adaptlab.config import DataConfig, GenerationDataConfig
from adaptlab.data.generation import infer_task
from adaptlab.errors import AdaptlabError

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
DEFAULT_GENERATION_MODELS = ("smollm2-135m",)
TASKS = ("classification", "generation")
QUALITY_METRICS = ("rouge_l", "token_f1", "exact_match")  # generation: the one that ranks (--metric)


@dataclass(frozen=True)
class ModelInfo:
    kind: str  # "encoder" or "decoder"
    positions: int | None  # the longest input the model reads, in tokens


@dataclass(frozen=True)
class Run:
    """One entry on one model with one training seed; ``key`` names its directory in the comparison."""

    entry: str
    strategy: str
    model: str
    seed: int
    params: dict
    #: hyper-parameter search before training (``{"trials": N, "space": {param: [low, high]}}``), or None
    tune: dict | None = None

    @property
    def key(self) -> str:
        return f"{_slug(self.model)}/{self.entry}/seed-{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.entry} · {short_model(self.model)}"

    def spec(self, data: DataConfig) -> dict:
        """Everything that determines the run's result: a stored result is reused only if this is unchanged."""
        spec = {"entry": self.entry, "strategy": self.strategy, "model": self.model, "seed": self.seed,
                "params": self.params, "data": dataclasses.asdict(data)}
        return {**spec, "tune": self.tune} if self.tune else spec


@dataclass
class ComparePlan:
    data: DataConfig | GenerationDataConfig
    #: classification or generation; None: generation for prompt/completion or chat data, else classification
    task: str | None = None
    preset: str = "quick"
    #: None: minilm and smollm2-135m for classification, smollm2-135m for generation
    models: list[str] | None = None
    strategies: list[str] | None = None  # entry names; None = the default ladder
    seeds: int = 1
    epochs: int | None = None
    params: dict[str, dict] = field(default_factory=dict)  # entry name (or "all") -> parameter overrides
    #: classification: trials of hyper-parameter search per gradient entry, or ``{"trials": N, "params":
    #: {entry: {param: [low, high]}}}``; None: the preset's (quick 0, standard 4, full 6); see compare.tuning
    tune: int | dict | None = None
    #: generation: the metric that ranks entries and decides ties
    metric: str = "rouge_l"
    #: generation: files, folders, ``wikipedia`` or an existing store for the ``rag`` entry (added when given)
    documents: list[str] | None = None
    #: generation: preference pairs for the ``dpo`` entry (added after ``lora`` when given)
    preferences: str | None = None
    output: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = infer_task(str(self.data.source))
        if self.task not in TASKS:
            raise AdaptlabError(f"--task must be classification or generation, not '{self.task}'")
        if self.task == "generation" and isinstance(self.data, DataConfig):
            shared = {k: getattr(self.data, k) for k in ("source", "seed", "train_size", "val_size", "test_size")}
            self.data = GenerationDataConfig(**shared)
        if self.task == "classification" and isinstance(self.data, GenerationDataConfig):
            raise AdaptlabError(f"data '{self.data.source}' was given as generation data; use --task generation")
        if self.models is None:
            self.models = list(DEFAULT_GENERATION_MODELS if self.task == "generation" else DEFAULT_MODELS)
        if isinstance(self.documents, str):
            self.documents = [self.documents]

    @property
    def entries(self) -> dict[str, Entry]:
        """The ladder this plan's task draws from."""
        if self.task == "generation":
            from adaptlab.compare.generation import GENERATION_ENTRIES

            return GENERATION_ENTRIES
        return ENTRIES

    def check(self) -> None:
        if self.task == "generation":
            self._check_generation()
            if self.tune:
                raise AdaptlabError("--tune is for classification comparisons (generation entries keep their settings)")
        elif self.documents or self.preferences or self.metric != "rouge_l":
            raise AdaptlabError("--documents, --preferences and --metric are for generation tasks (--task generation)")
        if self.device is not None:
            from adaptlab.runtime import Runtime

            Runtime(self.device)  # a malformed --device is refused here, not in every worker
        if self.output is not None and not str(self.output).strip():
            raise AdaptlabError("--output is empty; give a directory for the comparison (or leave it out)")
        if self.preset not in PRESETS:
            raise AdaptlabError(f"--preset must be one of {', '.join(PRESETS)}, not '{self.preset}'")
        if self.task == "classification":
            from adaptlab.compare.tuning import tuning_settings

            tuning_settings(self.tune, PRESETS[self.preset].tune, ENTRIES)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 1 <= self.seeds <= 100:
            raise AdaptlabError(f"--seeds must be a whole number from 1 to 100, not {self.seeds!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or not 1 <= self.epochs <= 10_000):
            raise AdaptlabError(f"--epochs must be a whole number from 1 to 10000, not {self.epochs!r}")
        if not self.models:
            raise AdaptlabError("--models needs at least one model")
        for option, values in (("--models", self.models), ("--strategies", self.strategies or [])):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise AdaptlabError(f"{option} lists {', '.join(repeated)} more than once")
        entries = self.entries
        for name in self.strategies or []:
            if name not in entries:
                raise AdaptlabError(f"--strategies: unknown entry '{name}' for {self.task} (available: {', '.join(entries)})")
        for name, overrides in self.params.items():
            if name != "all" and name not in entries:
                raise AdaptlabError(f"parameter overrides for unknown entry '{name}' (available: all, {', '.join(entries)})")
            if not isinstance(overrides, dict):
                raise AdaptlabError(f"parameter overrides for '{name}' must be a mapping, not {overrides!r}")

    def _check_generation(self) -> None:
        if self.metric not in QUALITY_METRICS:
            raise AdaptlabError(f"--metric must be one of {', '.join(QUALITY_METRICS)}, not '{self.metric}'")
        if self.preferences is not None and not Path(self.preferences).is_file() and _looks_local(self.preferences):
            raise AdaptlabError(f"--preferences '{self.preferences}' does not exist; pass a preference file (JSONL/CSV) or a Hub id")
        for document in self.documents or []:
            if not str(document).strip():
                raise AdaptlabError("--documents lists an empty name; give files, folders, wikipedia or a store")
            if not str(document).startswith(("postgresql://", "postgres://")) and document != "wikipedia" \
                    and not Path(document).exists():
                raise AdaptlabError(f"--documents '{document}' does not exist; give files, folders, wikipedia or a store")
        chosen = self.strategies or []
        for name, needs, option in (("rag", self.documents, "--documents"), ("dpo", self.preferences, "--preferences")):
            if name in chosen and not needs:
                raise AdaptlabError(f"the {name} entry needs {option}")
        if "dpo" in chosen and "lora" not in chosen:
            raise AdaptlabError("the dpo entry starts from the lora run: list lora in --strategies too")

    def data_config(self) -> DataConfig | GenerationDataConfig:
        """The data options with the preset's sizes filled in where the user gave none."""
        preset = self._preset()
        sizes = {k: getattr(preset, k) for k in ("train_size", "val_size", "test_size")}
        return dataclasses.replace(self.data, **{k: v for k, v in sizes.items() if getattr(self.data, k) is None})

    def _preset(self):
        if self.task == "generation":
            from adaptlab.compare.generation import GENERATION_PRESETS

            return GENERATION_PRESETS[self.preset]
        return PRESETS[self.preset]

    def runs(self, models: dict[str, ModelInfo]) -> list[Run]:
        """Every run, in ladder order. Classifier entries run on each encoder in ``models`` (on the decoders
        only when no encoder is listed); prompting entries run on each causal LM."""
        from adaptlab.methods import get_strategy

        if self.task == "generation":
            return self._generation_runs(models)
        from adaptlab.compare.tuning import entry_tuning, tuning_settings

        preset = PRESETS[self.preset]
        trials, spaces = tuning_settings(self.tune, preset.tune, ENTRIES)
        names = self.strategies or [e.name for e in ENTRIES.values() if e.in_default_ladder]
        encoders = [m for m in self.models if models[m].kind == "encoder"]
        decoders = [m for m in self.models if models[m].kind == "decoder"]
        runs = []
        for name in sorted(names, key=list(ENTRIES).index):
            entry = ENTRIES[name]
            targets = decoders if entry.needs == "decoder" else (encoders or decoders)
            for model in targets:
                params = {**entry.params, "model": model, "progress": True}
                if entry.epochs and self.epochs is not None:  # an explicit --epochs is taken as it is
                    params["epochs"] = self.epochs
                elif entry.epochs:
                    params.update(epochs=preset.max_epochs, max_steps=preset.max_steps, patience=preset.patience,
                                  max_minutes=preset.max_minutes)
                if entry.strategy == "icl" and entry.params.get("k"):
                    params["draws"] = preset.draws
                strategy = get_strategy(entry.strategy)
                if preset.max_length and "max_length" in strategy.param_names():
                    params["max_length"] = _length_cap(preset.max_length, models[model].positions, strategy)
                if self.device:
                    params["device"] = self.device
                known = strategy.param_names()  # `all.` keys reach the entries whose strategy takes them
                params.update({k: v for k, v in self.params.get("all", {}).items() if k in known})
                params.update(self.params.get(name, {}))
                strategy.check_params(params, f"entry '{name}'")
                try:
                    strategy(**params)  # every value is checked now (constructing only stores), not in a worker later
                except AdaptlabError as exc:
                    raise AdaptlabError(f"entry '{name}' (settings from the preset and --set): {exc}") from None
                tune = entry_tuning(trials, spaces, name, entry.strategy, params)
                own_lr = "lr" in {**self.params.get("all", {}), **self.params.get(name, {})}
                if tune is None and entry.lr_sensitive and preset.lr_search and entry.epochs and not own_lr:
                    params = {"lr_search": True, **params}  # --set NAME.lr_search=false still wins
                for seed in range(self.seeds) if entry.seeded else [0]:
                    runs.append(Run(name, entry.strategy, model, seed, params, tune))
        for key in self.params.get("all", {}):
            if not any(key in get_strategy(ENTRIES[n].strategy).param_names() for n in names):
                raise AdaptlabError(f"--set all.{key}: no selected strategy takes a parameter '{key}'")
        if not runs:
            wanted = ", ".join(names)
            raise AdaptlabError(f"no run matches: entries {wanted} need a model kind missing from --models {','.join(self.models)}")
        return runs

    def _generation_runs(self, models: dict[str, ModelInfo]) -> list[Run]:
        """Every entry on every model (all causal LMs); ``rag`` and ``dpo`` join the default ladder when
        their inputs are given. Overrides under ``all`` reach the entries that take them."""
        from adaptlab.compare.generation import (GENERATION_ENTRIES, check_generation_params, generation_param_names,
                                                 generation_params)

        encoders = [m for m in self.models if models[m].kind != "decoder"]
        if encoders:
            raise AdaptlabError(f"--models {', '.join(encoders)}: a generation comparison needs causal LMs (e.g. smollm2-135m)")
        wanted = {"rag": bool(self.documents), "dpo": bool(self.preferences)}
        names = self.strategies or [e.name for e in GENERATION_ENTRIES.values() if e.in_default_ladder or wanted.get(e.name)]
        preset, runs = self._preset(), []
        for name in sorted(names, key=list(GENERATION_ENTRIES).index):
            entry = GENERATION_ENTRIES[name]
            for model in self.models:
                params = generation_params(entry, model, preset, self.epochs)
                if name == "rag":
                    params["documents"] = list(self.documents)
                if name == "dpo":
                    params["preferences"] = self.preferences
                if self.device:
                    params["device"] = self.device
                takes = generation_param_names(entry)
                params.update({k: v for k, v in self.params.get("all", {}).items() if k in takes})
                params.update(self.params.get(name, {}))
                check_generation_params(entry, params)
                for seed in range(self.seeds) if entry.seeded else [0]:
                    runs.append(Run(name, entry.strategy, model, seed, params))
        for key in self.params.get("all", {}):
            if not any(key in generation_param_names(GENERATION_ENTRIES[n]) for n in names):
                raise AdaptlabError(f"--set all.{key}: no selected entry takes a parameter '{key}'")
        return runs

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _looks_local(name: str) -> bool:
    """A Hub id is ``owner/name``; anything else (a file name, an extension, a relative or absolute path) is a file."""
    parts = name.split("/")
    return len(parts) != 2 or name.startswith((".", "~")) or Path(name).suffix.lower() in {".jsonl", ".json", ".csv", ".gz", ".parquet"}


def _length_cap(cap: int, positions: int | None, strategy) -> int:
    """The preset's token cap, lowered where the model's position table is shorter (virtual tokens of the
    prompt-learning methods take positions too)."""
    import inspect

    if positions is None:
        return cap
    virtual = inspect.signature(strategy.__init__).parameters.get("num_virtual_tokens")
    return max(1, min(cap, positions - (virtual.default if virtual is not None else 0)))


def short_model(model: str) -> str:
    """``/home/me/models/tiny-bert`` -> ``tiny-bert``; ``org/name`` -> ``name``: table cells stay narrow."""
    return model.rstrip("/").split("/")[-1] or model


def _slug(model: str) -> str:
    """A readable, collision-free directory name: ``org1/bert`` and ``org2/bert`` must not share runs."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in short_model(model))
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
