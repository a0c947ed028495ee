"""What a comparison runs: the plan built from options or YAML, resolved into runs by its task's pipeline.

A *run* is one entry on one model with one training seed. Every run of a comparison uses the same data split (the
data seed is fixed); ``--seeds`` varies only the training seed, so differences between runs are the strategies', not
the split's. The task (``adaptlab.compare.tasks``: classification, or generation for prompt/completion and chat data)
owns the presets, the default models and the checks only it makes; its entries come from the registered families
(``adaptlab.families``): the classifier strategies (``adaptlab.compare.classification``), prompting and retrieval,
every SFT method and DPO (``adaptlab.compare.generation``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from adaptlab.compare.classification import ENTRIES, PRESETS  # noqa: F401 (the classification ladder, by its old name)
from adaptlab.compare.runs import ModelInfo, Run, short_model  # noqa: F401 (importable from here, as before)
from adaptlab.compare.tasks import Task, check_entries, get_task, plan_runs
from adaptlab.config import DataConfig, GenerationDataConfig
from adaptlab.data.generation import infer_task
from adaptlab.errors import AdaptlabError
from adaptlab.families import Entry


@dataclass
class ComparePlan:
    data: DataConfig | GenerationDataConfig
    #: classification or generation; None: generation for prompt/completion or chat data, else classification
    task: str | None = None
    preset: str = "quick"
    #: None: the task's default models (minilm and smollm2-135m for classification, smollm2-135m for generation)
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
    #: generation: reward functions for the ``grpo`` entry (added after ``lora`` when given), as ``rlhf grpo --reward``
    reward: list[str] | None = None
    output: str | None = None
    device: str | None = None
    #: learning curves: the ladder at each of these training sizes (per class for classification; "all" = the
    #: whole training split) on one test set (``adaptlab.compare.curves``); None: one comparison
    train_sizes: list[int | str] | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = infer_task(str(self.data.source))
        self.data = get_task(self.task).adopt_data(self.data)
        if self.models is None:
            self.models = list(get_task(self.task).default_models)
        if isinstance(self.documents, str):
            self.documents = [self.documents]
        if isinstance(self.reward, str):
            self.reward = [self.reward]
        from adaptlab.compare.curves import parse_train_sizes

        self.train_sizes = parse_train_sizes(self.train_sizes)

    @property
    def kind(self) -> Task:
        """The task this plan compares on (its presets, checks, summary and report)."""
        return get_task(self.task)

    @property
    def entries(self) -> dict[str, Entry]:
        """The ladder this plan's task draws from."""
        return {name: entry for name, (entry, _) in self.kind.entries().items()}

    def check(self) -> None:
        task = self.kind
        task.check(self)
        if self.device is not None:
            from adaptlab.runtime import Runtime

            Runtime(self.device)  # a malformed --device is refused here, not in every worker
        if self.output is not None and not str(self.output).strip():
            raise AdaptlabError("--output is empty; give a directory for the comparison (or leave it out)")
        if self.preset not in task.presets:
            raise AdaptlabError(f"--preset must be one of {', '.join(task.presets)}, not '{self.preset}'")
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
        check_entries(task, self)
        if self.train_sizes and (self.data.train_size is not None or getattr(self.data, "train_per_class", None) is not None):
            raise AdaptlabError("give --train-size or --train-sizes (a learning curve), not both")

    def data_config(self) -> DataConfig | GenerationDataConfig:
        """The data options with the preset's sizes filled in where the user gave none."""
        preset = self.kind.presets[self.preset]
        sizes = {k: getattr(preset, k) for k in ("train_size", "val_size", "test_size")}
        if getattr(self.data, "train_per_class", None) is not None:  # a learning curve's point sets its own size
            sizes.pop("train_size")
        if getattr(self.data, "train_data", None):  # the user's own splits are used whole unless sized explicitly
            return self.data
        return dataclasses.replace(self.data, **{k: v for k, v in sizes.items() if getattr(self.data, k) is None})

    def runs(self, models: dict[str, ModelInfo]) -> list[Run]:
        """Every run, in ladder order (``adaptlab.compare.tasks.plan_runs``)."""
        return plan_runs(self.kind, self, models)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]

