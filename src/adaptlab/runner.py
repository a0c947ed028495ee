"""Train any strategy on a split, evaluate it, measure it, and write its artifact.

This is the engineering around every strategy (Lightning's separation: the strategy holds the research
code). The test split is touched exactly once, after ``fit``, for the reported metrics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.artifacts import read_manifest, write_artifact
from adaptlab.data import Splits
from adaptlab.measure import measure
from adaptlab.methods import Strategy, get_strategy
from adaptlab.metrics import classification_metrics

THROUGHPUT_SAMPLE = 256  # test texts timed for inference throughput, recomputed without any cache


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    manifest: dict
    #: the kept model's test-set class probabilities (for paired comparisons); not stored in the artifact
    test_proba: np.ndarray | None = None

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]["test"]


def train(strategy: str | Strategy, splits: Splits, output: str | Path, /, **params: Any) -> TrainResult:
    """Fit ``strategy`` (a name plus keyword ``params``, or a ready instance) and save its artifact.

    >>> splits = adaptlab.load_splits("rotten_tomatoes", train_size=2000)
    >>> adaptlab.train("features", splits, "runs/rt", classifier="logreg").metrics["accuracy"]
    """
    if isinstance(strategy, str):
        cls = get_strategy(strategy)
        cls.check_params(params, "train")
        if "seed" in cls.param_names():
            params.setdefault("seed", splits.seed)
        strategy = cls(**params)
    seed_everything(strategy.get_params().get("seed", splits.seed))

    with measure() as fit_cost:
        strategy.fit(splits, Path(output))
    if _secondary_rank():  # multi-process training (DDP...): only rank 0 evaluates and writes the artifact
        return TrainResult(Path(output), {})
    over_draws, test_proba = _evaluate_draws(strategy, splits)
    if test_proba is None:
        test_proba = strategy.predict_proba(splits.test.texts)
    val_proba = strategy.predict_proba(splits.val.texts)
    sample = splits.test.texts[:THROUGHPUT_SAMPLE]
    with strategy.uncached(), measure() as inference:
        strategy.predict_proba(sample)

    manifest = {
        "strategy": strategy.name,
        "base_model": strategy.base_model(),
        "labels": splits.label_names,
        "data": splits.describe(),
        "params": strategy.get_params(),
        "metrics": {
            "test": classification_metrics(splits.test.labels, test_proba, splits.label_names),
            "val": classification_metrics(splits.val.labels, val_proba, splits.label_names),
            **({"test_over_draws": over_draws} if over_draws else {}),
        },
        "cost": {
            **strategy.cost(),
            "train_seconds": round(fit_cost.seconds, 3),
            "train_samples_per_second": round(len(splits.train) / max(fit_cost.seconds, 1e-9), 1),
            "peak_rss_mb": fit_cost.as_dict()["peak_rss_mb"],
            "peak_cuda_mb": fit_cost.as_dict()["peak_cuda_mb"],
            "inference_texts_per_second": round(len(sample) / max(inference.seconds, 1e-9), 1),
        },
        **strategy.extra_manifest(),
    }
    manifest = write_artifact(Path(output), manifest, strategy.save)
    strategy.finished(Path(output))
    return TrainResult(Path(output), manifest, test_proba)


def _secondary_rank() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0


def _evaluate_draws(strategy: Strategy, splits: Splits) -> tuple[dict | None, np.ndarray | None]:
    """Strategies with several variants (k-shot demonstration draws) are scored on test for each one, so the
    report shows how much the choice of examples matters; the variant kept was chosen on validation.
    Returns the summary and the kept variant's test probabilities (None, None for single-variant strategies)."""
    count = getattr(strategy, "variant_count", lambda: 1)()
    if count < 2:
        return None, None
    chosen = strategy.current_
    accuracies, kept = [], None
    for index in range(count):
        strategy.use_variant(index)
        proba = strategy.predict_proba(splits.test.texts)
        accuracies.append(float((proba.argmax(1) == splits.test.labels).mean()))
        kept = proba if index == chosen else kept
    strategy.use_variant(chosen)
    summary = {"accuracy": accuracies, "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies, ddof=1)), "chosen": chosen}
    return summary, kept


class Artifact:
    """A trained artifact loaded for prediction: ``Artifact(path).predict(["a great film"])``."""

    def __init__(self, path: str | Path, **runtime: Any) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.strategy = get_strategy(self.manifest["strategy"]).load(self.path, self.manifest, **runtime)
        self.label_names: list[str] = self.manifest["labels"]

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.strategy.predict_proba(list(texts))

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """One ``{"label": ..., "probabilities": {label: p}}`` per text."""
        proba = self.predict_proba(texts)
        return [
            {
                "label": self.label_names[int(row.argmax())],
                "probabilities": {name: float(p) for name, p in zip(self.label_names, row)},
            }
            for row in proba
        ]


def load_artifact(path: str | Path, **runtime: Any) -> Artifact:
    """Load an artifact; ``runtime`` options (``device``, ``progress``, ``cache``) change how it runs, not what."""
    return Artifact(path, **runtime)
