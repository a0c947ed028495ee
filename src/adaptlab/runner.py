"""Train a classification strategy on a split through the job runner, and load classification artifacts.

The test split is touched exactly once, after ``fit``, for the reported metrics (``ClassifierJob.evaluate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.artifacts import read_manifest
from adaptlab.data import Splits
from adaptlab.errors import AdaptlabError
from adaptlab.data.dataset import as_texts
from adaptlab.jobs import run_job
from adaptlab.measure import measure
from adaptlab.methods import Strategy, get_strategy
from adaptlab.metrics import classification_metrics
from adaptlab.results import JobResult
from adaptlab.runtime import Runtime

THROUGHPUT_SAMPLE = 64  # test texts timed for inference throughput, recomputed without any cache


@dataclass(frozen=True)
class TrainResult(JobResult):
    #: the kept model's test-set class probabilities (for paired comparisons); not stored in the artifact
    test_proba: np.ndarray | None = None


class ClassifierJob:
    """A classification strategy as a job: test metrics once after ``fit``, validation metrics, every
    demonstration draw scored for strategies with several variants, and uncached inference throughput."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.test_proba: np.ndarray | None = None

    @property
    def runtime(self):
        return self.strategy.runtime

    def fit(self, splits: Splits, workdir: Path) -> None:
        self.strategy.fit(splits, workdir)

    def evaluate(self, splits: Splits) -> dict:
        over_draws, self.test_proba = _evaluate_draws(self.strategy, splits)
        if self.test_proba is None:
            self.test_proba = self.strategy.predict_proba(splits.test.texts)
        val_proba = self.strategy.predict_proba(splits.val.texts)
        return {
            "test": classification_metrics(splits.test.labels, self.test_proba, splits.label_names),
            "val": classification_metrics(splits.val.labels, val_proba, splits.label_names),
            **({"test_over_draws": over_draws} if over_draws else {}),
        }

    def inference_rate(self, splits: Splits) -> float:
        sample = splits.test.texts[:THROUGHPUT_SAMPLE]
        with self.strategy.uncached(), measure() as inference:
            self.strategy.predict_proba(sample)
        return len(sample) / max(inference.seconds, 1e-9)

    def cost(self) -> dict:
        return self.strategy.cost()

    def base_model(self) -> dict:
        return self.strategy.base_model()

    def get_params(self) -> dict:
        return self.strategy.get_params()

    def training_report(self) -> dict | None:
        return self.strategy.training_report()

    def details(self) -> dict:
        return self.strategy.details()

    def save(self, directory: Path) -> None:
        self.strategy.save(directory)


def train(strategy: str | Strategy, splits: Splits, output: str | Path, /, *, overwrite: bool = False,
          **params: Any) -> TrainResult:
    """Fit ``strategy`` (a name plus keyword ``params``, or a ready instance) and save its artifact; an artifact
    already at ``output`` is replaced only with ``overwrite=True``.

    >>> splits = adaptlab.load_splits("rotten_tomatoes", train_size=2000)
    >>> adaptlab.train("features", splits, "runs/rt", classifier="logreg").metrics["accuracy"]
    """
    if not isinstance(splits, Splits):
        raise AdaptlabError(f"train: splits must come from adaptlab.load_splits (a Splits), not {type(splits).__name__}")
    if not isinstance(output, (str, Path)) or not str(output):
        raise AdaptlabError(f"train: output must be a directory path, not {output!r}")
    if isinstance(strategy, str):
        cls = get_strategy(strategy)
        cls.check_params(params, "train")
        if "seed" in cls.param_names():
            params.setdefault("seed", splits.seed)
        strategy = cls(**params)
    job = ClassifierJob(strategy)
    result = run_job(job, splits, output, seed=strategy.get_params().get("seed", splits.seed), labels=splits.label_names,
                     data_description=splits.describe(), train_examples=len(splits.train),
                     resume=bool(getattr(strategy, "resume", False)), overwrite=overwrite)
    return TrainResult(result.artifact, result.manifest, job.test_proba)


def _evaluate_draws(strategy: Strategy, splits: Splits) -> tuple[dict | None, np.ndarray | None]:
    """Strategies with several variants (k-shot demonstration draws) are scored on test for each one, so the
    report shows how much the choice of examples matters; the variant kept was chosen on validation.
    Returns the summary and the kept variant's test probabilities (None, None for single-variant strategies)."""
    count = strategy.variant_count()
    if count < 2:
        return None, None
    chosen = strategy.chosen_variant
    accuracies, kept = [], None
    for index in range(count):
        strategy.use_variant(index)
        proba = strategy.predict_proba(splits.test.texts)
        accuracies.append(float((proba.argmax(1) == splits.test.labels).mean()))
        kept = proba if index == chosen else kept
    strategy.use_variant(chosen)
    summary = {"accuracy": accuracies, "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies, ddof=1)), "chosen": chosen}
    return summary, kept


#: what may change how a loaded artifact runs (never what it predicts)
RUNTIME_OPTIONS = ("device", "progress", "cache")


class Artifact:
    """A trained artifact loaded for prediction: ``Artifact(path).predict(["a great film"])``."""

    def __init__(self, path: str | Path, **runtime: Any) -> None:
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise AdaptlabError(f"load_artifact needs the path of an artifact directory, not {path!r}")
        Runtime(runtime.get("device"))  # a malformed device is refused before anything loads
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        labels = self.manifest.get("labels")
        if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)
                and len(set(labels)) == len(labels)):
            raise AdaptlabError(f"artifact '{self.path}': 'labels' must list two or more distinct label names; "
                                "the manifest is damaged (or this is not a classifier: see `adaptlab generate`)")
        strategy = get_strategy(self.manifest["strategy"])
        try:
            self.strategy = strategy.load(self.path, self.manifest, **runtime)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:  # weights that do not fit the manifest
            raise AdaptlabError(f"artifact '{self.path}' does not load ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}); re-train it") from None
        self.label_names: list[str] = labels

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """(len(texts), labels) probabilities; one string is one text, no texts give an empty array."""
        texts = as_texts(texts)
        if not texts:
            return np.empty((0, len(self.label_names)), dtype=np.float32)
        return self.strategy.predict_proba(texts)

    def predict(self, texts: str | Sequence[str]) -> list[dict]:
        """One ``{"label": ..., "probabilities": {label: p}}`` per text."""
        return format_predictions(self.label_names, self.predict_proba(texts))


def format_predictions(label_names: list[str], proba: np.ndarray) -> list[dict]:
    """``{"label", "probabilities": {label: p}}`` per row: the shape of ``predict --json`` and ``/v1/classify``."""
    return [{"label": label_names[int(row.argmax())], "probabilities": {name: float(p) for name, p in zip(label_names, row)}}
            for row in proba]


def load_artifact(path: str | Path, **runtime: Any) -> Any:
    """Load an artifact of any registered family: a classifier (``Artifact``: ``predict``, ``predict_proba``), a
    generator from ``sft``/``rlhf dpo``/``rlhf ppo`` (``adaptlab.generation.Generator``: ``generate``, ``stream``),
    a reward model (``score``) or a tuned retriever (``adaptlab.Embedder``: ``embed``). ``runtime`` options
    (``device``, ``progress``, ``cache``) change how it runs, not what; each family's loader takes those it has."""
    import inspect

    from adaptlab.families import family_of, resolve

    unknown = sorted(set(runtime) - set(RUNTIME_OPTIONS))
    if unknown:
        raise AdaptlabError(f"load_artifact: unknown option(s) {', '.join(unknown)} (it takes {', '.join(RUNTIME_OPTIONS)})")
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise AdaptlabError(f"load_artifact needs the path of an artifact directory, not {path!r}")
    Runtime(runtime.get("device"))  # a malformed device is refused before anything loads
    family = family_of(read_manifest(Path(path))["strategy"], f"artifact '{path}'")
    if family.load is None:
        raise AdaptlabError(f"artifact '{path}' is a {family.name} artifact, which load_artifact cannot load")
    loader = resolve(family.load)
    takes = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):  # a loader without **runtime
        runtime = {k: v for k, v in runtime.items() if k in takes}
    return loader(str(path), **runtime)
