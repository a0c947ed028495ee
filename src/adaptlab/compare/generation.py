"""The generation ladder: every way to adapt a causal LM to a prompt -> reply task, as comparison entries.

Rungs, cheapest first: prompting with no weights changed (``zero-shot``; ``few-shot``, k random training
conversations as earlier chat turns, the draw kept chosen on validation loss; ``knn-shot``, the k training
examples nearest each prompt by embedding), ``rag`` (retrieved passages in the prompt, the index code of
``adaptlab rag``; only with ``--documents``), then supervised fine-tuning through ``adaptlab.sft`` (prompt and
prefix tuning, LoRA, the last blocks, every weight), and ``dpo`` on ``--preferences`` starting from the LoRA run.

Learning rates are the ones measured on wiki-descriptions (``benchmarks/results/sft_ladder.json``), read from the
adaptation layer's defaults table (``adaptlab.adapt.defaults``), which ``sft train`` reads too; the
presets set the data sizes, step budget and batch (the ``quick`` ladder on SmolLM2 took 20.5 minutes on 2 CPU
threads, ``benchmarks/results/compare_generation_quick.json``). Forgetting (general-text perplexity and zero-shot Rotten Tomatoes accuracy, before -> after) is
measured for every entry that changes weights; the base model is probed once per comparison, not per run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.adapt import default_lr
from adaptlab.compare.runs import EntryRunner, ModelInfo
from adaptlab.errors import AdaptlabError
from adaptlab.families import Entry

#: the SFT family's rungs (the prompting and retrieval rungs are the prompting family's, DPO's the dpo family's:
#: ``adaptlab.families``); learning rates from the adaptation layer's table
SFT_ENTRIES = (
    Entry("prompt-tuning", "sft", {"method": "prompt-tuning", "lr": default_lr("sft", "prompt-tuning")},
          "20 trained input embeddings (PEFT)", lr_sensitive=True),
    Entry("prefix-tuning", "sft", {"method": "prefix-tuning", "lr": default_lr("sft", "prefix-tuning")},
          "20 trained key/value prefixes per layer (PEFT)", lr_sensitive=True),
    Entry("lora", "sft", {"method": "lora", "lr": default_lr("sft", "lora")}, "LoRA r=16 on every linear layer (PEFT)"),
    Entry("last-k", "sft", {"method": "last-k", "layers": 2, "lr": default_lr("sft", "last-k")}, "the last 2 transformer blocks trained"),
    Entry("full", "sft", {"method": "full", "lr": default_lr("sft", "full")}, "every weight trained"),
)
DEFAULT_GENERATION_MODELS = ("smollm2-135m",)
QUALITY_METRICS = ("rouge_l", "token_f1", "exact_match")  # the one that ranks (--metric)


@dataclass(frozen=True)
class GenerationPreset:
    train_size: int | None
    val_size: int | None
    test_size: int | None
    batch_size: int
    draws: int  # few-shot demonstration draws
    shots: int  # few-shot and knn-shot demonstrations (long prompts: prefill dominates prompting's cost)
    max_new_tokens: int
    max_length: int
    forgetting_sample: int  # Rotten Tomatoes sentences (and a third as many general texts) per forgetting probe
    #: the SFT entries' budget, as in the classification presets: until validation loss stops improving for
    #: ``patience`` epochs, at most ``max_steps`` optimiser steps and ``max_minutes`` per run
    max_steps: int
    patience: int
    max_minutes: float | None
    max_epochs: int = 50
    lr_search: bool = True  # the learning-rate line search for the entries whose good rate moves most (lr_sensitive)


GENERATION_PRESETS = {
    # Measured: the default ladder on wiki-descriptions with SmolLM2 in 20.5 minutes on 2 CPU threads, every SFT
    # entry below zero-shot's test loss (benchmarks/results/compare_generation_quick.json, generation_defaults.json).
    "quick": GenerationPreset(train_size=64, val_size=16, test_size=32, batch_size=4, draws=1, shots=2,
                              max_new_tokens=16, max_length=256, forgetting_sample=64,
                              max_steps=32, patience=1, max_minutes=3.0),
    "standard": GenerationPreset(train_size=256, val_size=32, test_size=64, batch_size=8, draws=3, shots=4,
                                 max_new_tokens=24, max_length=512, forgetting_sample=200,
                                 max_steps=128, patience=2, max_minutes=10.0),
    "full": GenerationPreset(train_size=None, val_size=None, test_size=None, batch_size=16, draws=5, shots=4,
                             max_new_tokens=48, max_length=1024, forgetting_sample=200,
                             max_steps=5000, patience=3, max_minutes=None, lr_search=False),
}


def check_plan(plan) -> None:
    """What only a generation comparison checks: the metric, and that the inputs of the optional entries exist."""
    if plan.tune:
        raise AdaptlabError("--tune is for classification comparisons (generation entries keep their settings)")
    if plan.metric not in QUALITY_METRICS:
        raise AdaptlabError(f"--metric must be one of {', '.join(QUALITY_METRICS)}, not '{plan.metric}'")
    if plan.preferences is not None and not Path(plan.preferences).is_file() and _looks_local(plan.preferences):
        raise AdaptlabError(f"--preferences '{plan.preferences}' does not exist; pass a preference file (JSONL/CSV) or a Hub id")
    if plan.reward:  # every reward function is checked before any run starts
        from adaptlab.rlhf.reward_functions import check_rewards

        check_rewards(plan.reward)
    for document in plan.documents or []:
        if not str(document).strip():
            raise AdaptlabError("--documents lists an empty name; give files, folders, wikipedia or a store")
        if not str(document).startswith(("postgresql://", "postgres://")) and document != "wikipedia" \
                and not Path(document).exists():
            raise AdaptlabError(f"--documents '{document}' does not exist; give files, folders, wikipedia or a store")


def check_models(models: list[str], info: dict[str, ModelInfo]) -> None:
    encoders = [m for m in models if info[m].kind != "decoder"]
    if encoders:
        raise AdaptlabError(f"--models {', '.join(encoders)}: a generation comparison needs causal LMs (e.g. smollm2-135m)")


def _looks_local(name: str) -> bool:
    """A Hub id is ``owner/name``; anything else (a file name, an extension, a relative or absolute path) is a file."""
    parts = name.split("/")
    return len(parts) != 2 or name.startswith((".", "~")) or Path(name).suffix.lower() in {".jsonl", ".json", ".csv", ".gz", ".parquet"}


class Prompting(EntryRunner):
    """The prompting family's entries (and ``rag``): the base model evaluated with demonstrations or retrieved
    passages in the prompt; no weights change, so nothing can be forgotten (measured as zero, not skipped)."""

    KEYS = {"prompting": ("model", "shots", "selection", "draws", "max_new_tokens", "generate_limit", "device"),
            "rag": ("model", "k", "max_new_tokens", "generate_limit", "device", "documents")}

    def params(self, entry: Entry, model: str, plan, preset: GenerationPreset, info: ModelInfo) -> dict:
        params = {**entry.params, "model": model, "max_new_tokens": preset.max_new_tokens}
        if entry.name in ("few-shot", "knn-shot"):
            params["shots"] = preset.shots
        if entry.name == "few-shot":
            params["draws"] = preset.draws
        return params

    def param_names(self, entry: Entry) -> set[str]:
        return set(self.KEYS[entry.strategy])

    def check(self, entry: Entry, params: dict) -> None:
        unknown_names(entry, params, self.param_names(entry))
        if params.get("shots", 0) < 0 or min(params.get("draws", 1), params.get("k", 1), params["max_new_tokens"]) < 1:
            raise AdaptlabError(f"entry '{entry.name}': shots must be >= 0 and draws, k, max_new_tokens >= 1")

    def run(self, spec: dict, run_dir: Path) -> dict:
        from adaptlab.measure import measure

        started, splits = time.perf_counter(), _splits(spec)
        params = spec["params"]
        with measure() as cost:
            setup = _retrieval(params, run_dir) if spec["strategy"] == "rag" else None
            result = _prompting(params, splits, spec["seed"], setup)
        return {"status": "done", "spec": spec, "data": splits.describe(), "base_model": result["base_model"],
                "params": params, "metrics": result["metrics"], "per_example": result["per_example"],
                "samples": result["details"]["samples"], "forgetting": _no_forgetting(), "artifact_bytes": 0,
                "cost": {"trainable_params": 0, "total_params": None, "peak_rss_mb": cost.as_dict()["peak_rss_mb"],
                         "train_seconds": round(setup[1], 2) if setup else 0.0,
                         "generated_tokens_per_second": result["cost"]["generated_tokens_per_second"]},
                "resumed_from_epoch": None, "stopped": None, "steps": None, "lr_chosen": None,
                "wall_seconds": round(time.perf_counter() - started, 2)}


class SupervisedFineTuning(EntryRunner):
    """The SFT family's entries: ``adaptlab.sft`` with each method, under the preset's step budget."""

    def params(self, entry: Entry, model: str, plan, preset: GenerationPreset, info: ModelInfo) -> dict:
        params = {**entry.params, "model": model, "max_new_tokens": preset.max_new_tokens, "batch_size": preset.batch_size,
                  "max_length": preset.max_length, "forgetting_sample": preset.forgetting_sample}
        params.update({"epochs": plan.epochs} if plan.epochs else {"epochs": preset.max_epochs, "max_steps": preset.max_steps,
                                                                   "patience": preset.patience, "max_minutes": preset.max_minutes})
        if entry.lr_sensitive and preset.lr_search and not plan.epochs:
            params["lr_search"] = True
        return params

    def param_names(self, entry: Entry) -> set[str]:
        from adaptlab.params import params_of
        from adaptlab.sft.job import SFTJob

        return {f.name for f in params_of(SFTJob)}

    def check(self, entry: Entry, params: dict) -> None:
        from adaptlab.sft.job import SFTJob

        unknown_names(entry, params, self.param_names(entry))
        SFTJob(**params)  # constructing only stores and checks the values

    def run(self, spec: dict, run_dir: Path) -> dict:
        from adaptlab.jobs import work_dir
        from adaptlab.sft.job import SFTJob, fit_sft

        started, splits = time.perf_counter(), _splits(spec)
        artifact = run_dir / "artifact"
        resume = (work_dir(artifact) / "checkpoints" / "last.ckpt").exists()
        job = SFTJob(**spec["params"], seed=spec["seed"], forgetting_baseline=str(_baseline(spec, run_dir)), resume=resume)
        manifest = fit_sft(job, splits, artifact, overwrite=True).manifest
        cost = manifest["cost"]
        return {**self.result(spec, manifest, started), "per_example": job.per_example_, "samples": job.samples_,
                "forgetting": manifest["metrics"]["forgetting"],
                "cost": {key: cost.get(key) for key in ("trainable_params", "total_params", "peak_rss_mb", "train_seconds")}
                | {"generated_tokens_per_second": manifest["metrics"]["test"].get("generated_tokens_per_second")}}


class FromLoraRun(EntryRunner):
    """Entries that continue the LoRA run's artifact (DPO, GRPO), then get the same test metrics and forgetting as
    every other entry; their cost includes the LoRA run's."""

    job = ""  # "module:class" of the job whose parameters the entry takes
    KEYS: tuple[str, ...] = ("max_new_tokens", "generate_limit", "forgetting_sample")  # the entry's own, beside the job's

    def params(self, entry: Entry, model: str, plan, preset: GenerationPreset, info: ModelInfo) -> dict:
        return {**entry.params, "model": model, "max_new_tokens": preset.max_new_tokens, "epochs": plan.epochs or 1,
                "batch_size": preset.batch_size, "forgetting_sample": preset.forgetting_sample}

    def job_params(self, params: dict) -> dict:
        return {k: v for k, v in params.items() if k not in self.KEYS}

    def param_names(self, entry: Entry) -> set[str]:
        from adaptlab.families import resolve
        from adaptlab.params import params_of

        return {f.name for f in params_of(resolve(self.job))} | set(self.KEYS)

    def check(self, entry: Entry, params: dict) -> None:
        from adaptlab.families import resolve

        unknown_names(entry, params, self.param_names(entry))
        resolve(self.job)(**self.job_params(params))

    def train(self, params: dict, splits, start: str, artifact: Path, seed: int) -> dict:
        """Train from ``start`` into ``artifact``; the manifest."""
        raise NotImplementedError

    def run(self, spec: dict, run_dir: Path) -> dict:
        import json

        from adaptlab.measure import measure
        from adaptlab.runtime import Runtime
        from adaptlab.sft.evaluate import cached_probe, forgetting_deltas

        started, splits, seed = time.perf_counter(), _splits(spec), spec["seed"]
        params = dict(spec["params"])
        lora = run_dir.parents[1] / "lora" / run_dir.name  # runs/<model>/<entry>/seed-<s>
        if not (lora / "result.json").exists():
            raise AdaptlabError(f"the {spec['entry']} entry starts from the lora run, which has not finished; see the lora "
                                "entry's error")
        lora_result = json.loads((lora / "result.json").read_text(encoding="utf-8"))
        evaluation = {key: params.pop(key) for key in ("max_new_tokens", "generate_limit", "device") if key in params}
        size = params.pop("forgetting_sample", 200)
        base = params.pop("model")
        artifact = run_dir / "artifact"
        manifest = self.train({**params, "device": evaluation.get("device")}, splits, str(lora / "artifact"), artifact, seed)
        runtime = Runtime(evaluation.get("device"), params.get("precision", "auto"), training=True)
        with measure() as cost:
            result = _prompting({"model": str(artifact), **evaluation}, splits, seed, None)
            with runtime.autocast():  # the forgetting probe in the precision the entry trained in, as SFT's is
                after = _probe(str(artifact), size)
                before = cached_probe(_baseline(spec, run_dir), lambda: _probe(base, size))
        return {**self.result(spec, manifest, started), "data": splits.describe(), "metrics": result["metrics"],
                "per_example": result["per_example"], "samples": result["details"]["samples"],
                "forgetting": forgetting_deltas(before, after),
                "cost": {"trainable_params": manifest["cost"]["trainable_params"] + lora_result["cost"]["trainable_params"],
                         "total_params": manifest["cost"].get("total_params"),
                         "peak_rss_mb": max(manifest["cost"]["peak_rss_mb"], cost.as_dict()["peak_rss_mb"]),
                         "train_seconds": round(manifest["cost"]["train_seconds"] + lora_result["cost"]["train_seconds"], 2),
                         "generated_tokens_per_second": result["cost"]["generated_tokens_per_second"]}}


class PreferenceOptimisation(FromLoraRun):
    """The entries of the preference families (dpo, orpo, simpo, kto): trained on ``--preferences`` from the LoRA run
    (KTO reads each pair as a thumbs-up and a thumbs-down row)."""

    KEYS = ("preferences", *FromLoraRun.KEYS)

    def __init__(self, job: str, trainer: str, thumbs: bool = False) -> None:
        self.job, self.trainer, self.thumbs = job, trainer, thumbs

    def params(self, entry: Entry, model: str, plan, preset: GenerationPreset, info: ModelInfo) -> dict:
        return {**super().params(entry, model, plan, preset, info), "max_length": preset.max_length}

    def train(self, params: dict, splits, start: str, artifact: Path, seed: int) -> dict:
        from adaptlab.families import resolve
        from adaptlab.rlhf import read_preferences, split_preferences
        from adaptlab.rlhf.kto import ThumbSplit, thumbs_from_pairs

        preferences = params.pop("preferences")
        pairs, _ = read_preferences(preferences)
        split = split_preferences(pairs, preferences, seed=seed)
        if self.thumbs:
            split = ThumbSplit(*(thumbs_from_pairs(getattr(split, part)) for part in ("train", "val", "test")), preferences)
        return resolve(self.trainer)(split, artifact, **params, model=start, seed=seed, overwrite=True).manifest.to_json()


class Reinforcement(FromLoraRun):
    """The grpo family's entry: GRPO with ``--reward`` on the comparison's own training prompts, from the LoRA run."""

    job = "adaptlab.rlhf.grpo:GRPOPolicy"

    def params(self, entry: Entry, model: str, plan, preset: GenerationPreset, info: ModelInfo) -> dict:
        params = super().params(entry, model, plan, preset, info)
        params.update(max_completion_length=preset.max_new_tokens, max_steps=preset.max_steps)
        params.pop("epochs")
        return params

    def train(self, params: dict, splits, start: str, artifact: Path, seed: int) -> dict:
        from adaptlab.rlhf.grpo import train_grpo

        return train_grpo(splits, artifact, **params, model=start, seed=seed, progress=False, overwrite=True).manifest.to_json()


PROMPTING, SFT, GRPO = Prompting(), SupervisedFineTuning(), Reinforcement()
DPO = PreferenceOptimisation("adaptlab.rlhf.dpo:DPOPolicy", "adaptlab.rlhf.dpo:train_dpo")
ORPO = PreferenceOptimisation("adaptlab.rlhf.orpo:ORPOPolicy", "adaptlab.rlhf.orpo:train_orpo")
SIMPO = PreferenceOptimisation("adaptlab.rlhf.simpo:SimPOPolicy", "adaptlab.rlhf.simpo:train_simpo")
KTO = PreferenceOptimisation("adaptlab.rlhf.kto:KTOPolicy", "adaptlab.rlhf.kto:train_kto", thumbs=True)


def unknown_names(entry: Entry, params: dict, takes: set[str]) -> None:
    unknown = sorted(set(params) - takes)
    if unknown:
        raise AdaptlabError(f"entry '{entry.name}' takes no parameter {', '.join(map(repr, unknown))}; "
                            f"it takes: {', '.join(sorted(takes))}")


def _splits(spec: dict):
    from adaptlab.config import GenerationDataConfig

    return GenerationDataConfig(**spec["data"]).load()


def _baseline(spec: dict, run_dir: Path) -> Path:
    """One forgetting probe of each base model (and probe size) per comparison, shared by its runs."""
    return run_dir.parents[1] / f"forgetting-baseline-{spec['params'].get('forgetting_sample', 200)}.json"


def _prompting(params: dict, splits, seed: int, setup) -> dict:
    from adaptlab.sft.prompting import evaluate_prompting

    return evaluate_prompting(params["model"], splits, shots=params.get("shots", 0), selection=params.get("selection", "random"),
                              draws=params.get("draws", 1), seed=seed, context=setup[0] if setup else None,
                              max_new_tokens=params["max_new_tokens"], generate_limit=params.get("generate_limit"),
                              device=params.get("device"))


def _probe(model: str, size: int) -> dict:
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.sft.evaluate import forgetting_probe, forgetting_sample

    lm, tokenizer, _ = load_causal_lm(model, None)
    return forgetting_probe(lm, tokenizer, *forgetting_sample(size))


def _no_forgetting() -> dict:
    """Prompting changes no weight: nothing can be forgotten (measured as zero, not skipped)."""
    return {"general_ppl_delta": 0.0, "general_ppl_relative": 0.0, "rt_accuracy_delta": 0.0}


def _retrieval(params: dict, run_dir: Path):
    """(context function, seconds spent building the index): ``documents`` is an existing store, or files
    and named corpora indexed once into the comparison's ``rag-index`` directory."""
    from adaptlab.rag import RagIndex
    from adaptlab.rag.answer import format_passages

    started = time.perf_counter()
    documents = list(params["documents"])
    if len(documents) == 1 and _is_store(documents[0]):
        index = RagIndex(documents[0], progress=False, device=params.get("device"))
    else:
        index = RagIndex(run_dir.parents[2] / "rag-index", device=params.get("device"))
        index.update(documents)
    k = params["k"]

    def with_context(messages: list[dict]) -> list[dict]:
        question = messages[-2]["content"]
        context = format_passages(index.search(question, k))
        return [*messages[:-2], {"role": "user", "content": f"Context:\n{context}\n\n{question}"}, messages[-1]]

    return with_context, time.perf_counter() - started


def _is_store(location: str) -> bool:
    from adaptlab.rag.stores import open_store

    if location.startswith(("postgresql://", "postgres://")):
        return True
    return Path(location).is_dir() and open_store(location).read_meta() is not None
