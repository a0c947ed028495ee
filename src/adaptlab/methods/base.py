"""The protocol every adaptation strategy follows, in the spirit of scikit-learn estimators.

A strategy is built from explicit keyword parameters, learns from a ``Splits`` in ``fit`` (the validation
split may be used for selection, the test split never), predicts class probabilities for raw texts, says
what it costs (parameter counts), and writes/reads its own files inside an artifact directory. The shared
runner (``adaptlab.runner``) does everything else: seeding, timing, evaluation, the manifest.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptlab.data import Splits
from adaptlab.errors import AdaptlabError


class Strategy(abc.ABC):
    name: ClassVar[str]
    #: constructor arguments that change how a model runs, not what it learned (not stored in manifests)
    runtime_params: ClassVar[tuple[str, ...]] = ("device", "progress", "cache")

    label_names: list[str]

    @abc.abstractmethod
    def fit(self, splits: Splits, output: Path | None = None) -> "Strategy":
        """Learn from ``splits.train`` (and ``splits.val`` for selection); return self.

        ``output`` is where the artifact will go; strategies that checkpoint keep their work beside it.
        """

    @abc.abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes), columns in ``label_names`` order."""

    @abc.abstractmethod
    def cost(self) -> dict:
        """``trainable_params`` and ``total_params`` (backbone included)."""

    @abc.abstractmethod
    def base_model(self) -> dict:
        """The frozen or initial model this strategy builds on (name and fingerprint)."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write this strategy's learned state into ``directory`` (safe formats only)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "Strategy":
        """Rebuild a fitted strategy from an artifact directory."""

    def finished(self, output: Path) -> None:
        """Called once the artifact is safely written: drop temporary work (e.g. checkpoints)."""

    def extra_manifest(self) -> dict:
        """Strategy-specific facts for the manifest (e.g. embedding settings, what was selected)."""
        return {}

    def uncached(self) -> contextlib.AbstractContextManager:
        """Within this block, predictions recompute everything (honest inference timings)."""
        return contextlib.nullcontext()

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.label_names[i] for i in self.predict_proba(texts).argmax(axis=1)]

    @classmethod
    def param_names(cls) -> list[str]:
        """Every keyword the constructor accepts."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict:
        """The constructor's parameters and current values (runtime-only ones left out)."""
        return {p: getattr(self, p) for p in self.param_names() if p not in self.runtime_params}

    @classmethod
    def check_params(cls, params: dict, where: str) -> None:
        """Reject unknown parameter names before anything runs (from YAML or the Python API)."""
        known = cls.param_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise AdaptlabError(
                f"{where}: unknown parameter(s) {', '.join(unknown)} for strategy '{cls.name}' "
                f"(known: {', '.join(known)})"
            )
