"""The protocol every classification strategy follows, in the spirit of scikit-learn estimators.

A strategy is a dataclass of parameters (``adaptlab.params``): constructing one only stores and checks them;
models load in ``fit`` and ``load``. It learns from a ``Splits`` in ``fit`` (the validation split may be used
for selection, the test split never), predicts class probabilities for raw texts, says what it costs, and
writes/reads its own files inside an artifact directory. The job runner (``adaptlab.jobs``) does the rest:
seeding, timing, evaluation, the manifest, the atomic write.

Optional capabilities are declared here with safe defaults instead of being probed for by name:

- *variants* (``variant_count``/``use_variant``/``chosen_variant``): several candidates, e.g. k-shot draws;
- *shared base* (``shares_base``, ``host_network``, ``use_network``): adapters the server can put on one copy of
  their base model;
- *causal LM* (``causal_lm``): the strategy holds a decoder that can also generate text;
- *merge* (``mergeable``, ``merged_model``): the adaptation can be folded into plain weights.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.params import check_fields, check_names, param, params_of
from adaptlab.runtime import Runtime


@dataclass(kw_only=True, eq=False)
class Strategy(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    shares_base: ClassVar[bool] = False
    mergeable: ClassVar[bool] = False
    #: the strategy reads its --model as a causal LM (prompting, soft prompts): an encoder is refused up front
    needs_decoder: ClassVar[bool] = False

    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        self.label_names: list[str] = []  # set by fit / load
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Cross-field checks that need no model (e.g. one option requiring another)."""

    # -- what a strategy implements -----------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, splits, workdir: Path) -> "Strategy":
        """Learn from ``splits.train`` (and ``splits.val`` for selection); return self.

        ``workdir`` is the job's scratch directory (checkpoints, logs); it is removed once the artifact is written.
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

    def details(self) -> dict:
        """Strategy-specific facts for the manifest's ``details`` (embedding settings, what was selected...)."""
        return {}

    def uncached(self) -> contextlib.AbstractContextManager:
        """Within this block, predictions recompute everything (honest inference timings)."""
        return contextlib.nullcontext()

    def training_report(self) -> dict | None:
        """Epochs, steps, best epoch... for gradient strategies; None for the others."""
        return None

    # -- optional capabilities ----------------------------------------------------------------------------
    def variant_count(self) -> int:
        return 1

    def use_variant(self, index: int) -> None:
        if index != 0:
            raise IndexError(f"strategy '{self.name}' has a single variant")

    @property
    def chosen_variant(self) -> int:
        return 0

    def causal_lm(self):
        """``(model, tokenizer, ref)`` when this strategy holds a causal LM that can also generate, else None."""
        return None

    def host_network(self):
        """The PEFT model that can host other adapters of the same base (``shares_base`` strategies)."""
        raise AdaptlabError(f"strategy '{self.name}' cannot share its base model")

    def use_network(self, network) -> None:
        """Predict with ``network`` (e.g. a view of a shared base with this artifact's adapter selected)."""
        raise AdaptlabError(f"strategy '{self.name}' cannot share its base model")

    def merged_model(self):
        """``(model, tokenizer)`` with the adaptation folded into plain weights (``mergeable`` strategies)."""
        raise AdaptlabError(f"strategy '{self.name}' cannot be merged into the base weights")

    # -- parameters (scikit-learn style) ------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        # strategies without a precision parameter (in-context learning) run in fp32
        return Runtime(self.device, getattr(self, "precision", "fp32"))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.label_names[i] for i in self.predict_proba(texts).argmax(axis=1)]

    @classmethod
    def param_names(cls) -> list[str]:
        """Every keyword the constructor accepts."""
        return [f.name for f in params_of(cls)]

    @classmethod
    def runtime_names(cls) -> list[str]:
        return [f.name for f in params_of(cls) if f.metadata.get("runtime")]

    def get_params(self) -> dict:
        """The parameters and their values (runtime-only ones left out): what the manifest records."""
        runtime = set(self.runtime_names())
        return {name: getattr(self, name) for name in self.param_names() if name not in runtime}

    @classmethod
    def check_params(cls, params: dict, where: str) -> None:
        """Reject unknown parameter names before anything runs (from YAML or the Python API)."""
        check_names(cls, params, where, f"strategy '{cls.name}'")

    @classmethod
    def rebuild(cls, manifest: dict, runtime: dict) -> "Strategy":
        """The strategy as configured at training time, with this run's runtime options (device, progress...)."""
        known = set(cls.param_names())
        strategy = cls(**{k: v for k, v in manifest["params"].items() if k in known},
                       **{k: v for k, v in runtime.items() if k in known})
        strategy.label_names = manifest["labels"]
        return strategy
