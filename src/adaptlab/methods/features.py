"""Strategy "features": a frozen model as feature extractor feeding a scikit-learn classifier.

The cheapest rung of the adaptation ladder: the language model never changes, its pooled embeddings of
each text become a feature vector, and a classic classifier learns the task. Logistic regression's
regularisation strength ``C`` is chosen on the validation split unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from adaptlab.data import Splits
from adaptlab.embeddings import Embedder
from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.models.loading import count_checkpoint_parameters
from adaptlab.progress import stderr

CLASSIFIERS = ("logreg", "random-forest")
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
_FILE = "classifier.skops"
# Types trusted on top of skops' own safe defaults when loading (skops never unpickles).
_TRUSTED_TYPES = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "builtins.slice",
]


class FeatureClassifier(Strategy):
    name = "features"

    def __init__(
        self,
        model: str = "minilm",
        pooling: str = "mean",
        classifier: str = "logreg",
        C: float | None = None,
        n_estimators: int = 300,
        batch_size: int = 64,
        max_length: int | None = None,
        precision: str = "auto",
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
        cache: bool = True,
    ) -> None:
        if classifier not in CLASSIFIERS:
            raise AdaptlabError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, not '{classifier}'")
        if C is not None and C <= 0:
            raise AdaptlabError(f"--C must be positive, not {C}")
        if n_estimators < 1:
            raise AdaptlabError(f"--n-estimators must be at least 1, not {n_estimators}")
        self.model, self.pooling, self.classifier = model, pooling, classifier
        self.C, self.n_estimators, self.seed = C, n_estimators, seed
        self.batch_size, self.max_length, self.precision = batch_size, max_length, precision
        self.device, self.progress, self.cache = device, progress, cache
        self.embedder = Embedder(
            model, pooling, batch_size=batch_size, max_length=max_length, precision=precision,
            device=device, cache=cache, progress=progress,
        )
        self.estimator_: Pipeline | RandomForestClassifier | None = None
        self.selection_: dict = {}

    def _make_estimator(self, C: float):
        if self.classifier == "logreg":
            return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=self.seed))
        return RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=-1)

    def fit(self, splits: Splits, output: Path | None = None) -> "FeatureClassifier":
        self.label_names = splits.label_names
        x_train = self.embedder.embed(splits.train.texts)
        y_train = splits.train.labels
        if self.classifier == "logreg" and self.C is None:
            x_val = self.embedder.embed(splits.val.texts)
            scores = {}
            for C in C_GRID:
                candidate = self._make_estimator(C).fit(x_train, y_train)
                scores[C] = float((candidate.predict(x_val) == splits.val.labels).mean())
            best = max(C_GRID, key=lambda c: (scores[c], -c))  # ties go to the stronger regularisation
            self.selection_ = {"C": best, "val_accuracy_by_C": {str(c): s for c, s in scores.items()}}
            stderr.print(f"chose C={best} on the validation split (accuracy {scores[best]:.4f})")
        chosen_c = self.C if self.C is not None else self.selection_.get("C", 1.0)
        self.estimator_ = self._make_estimator(chosen_c).fit(x_train, y_train)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.estimator_ is None:
            raise RuntimeError("fit() or load() the strategy before predicting")
        return self.estimator_.predict_proba(self.embedder.embed(texts))

    def _head_params(self) -> int:
        if isinstance(self.estimator_, Pipeline):
            scaler, logreg = self.estimator_[0], self.estimator_[-1]
            return int(logreg.coef_.size + logreg.intercept_.size + scaler.mean_.size + scaler.scale_.size)
        assert isinstance(self.estimator_, RandomForestClassifier)
        return int(sum(tree.tree_.node_count for tree in self.estimator_.estimators_))

    def cost(self) -> dict:
        backbone = count_checkpoint_parameters(self.embedder.ref.path) if self.embedder.ref.local else None
        head = self._head_params()
        return {
            "trainable_params": head,
            "total_params": None if backbone is None else backbone + head,
            "trainable_note": "classifier parameters (tree nodes for a random forest); the backbone is frozen",
        }

    def base_model(self) -> dict:
        return {"name": self.model, "fingerprint": self.embedder.ref.fingerprint()}

    def save(self, directory: Path) -> None:
        skops.io.dump(self.estimator_, directory / _FILE)

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "FeatureClassifier":
        params = manifest["params"]
        if params.get("precision") == "auto":  # reload with the precision that was actually used
            params = dict(params, precision=manifest["embedding"]["precision"])
        strategy = cls(**params, **runtime)
        path = directory / _FILE
        # skops refuses types outside its safe defaults unless trusted; we trust only the few listed above
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in _TRUSTED_TYPES]
        if untrusted:
            raise AdaptlabError(f"artifact '{directory}': {_FILE} contains types adaptlab does not trust: {untrusted}")
        estimator = skops.io.load(path, trusted=_TRUSTED_TYPES)
        if not _is_expected_estimator(estimator):
            raise AdaptlabError(
                f"artifact '{directory}': {_FILE} holds an unexpected estimator ({type(estimator).__name__}); "
                "features artifacts hold a scaled logistic regression or a random forest"
            )
        strategy.estimator_ = estimator
        strategy.label_names = manifest["labels"]
        strategy.selection_ = manifest.get("selection", {})
        return strategy

    def extra_manifest(self) -> dict:
        return {"embedding": self.embedder.settings(), "selection": self.selection_}

    def uncached(self):
        return self.embedder.fresh()


def _is_expected_estimator(estimator: Any) -> bool:
    if isinstance(estimator, RandomForestClassifier):
        return True
    return (
        isinstance(estimator, Pipeline)
        and [type(step) for _, step in estimator.steps] == [StandardScaler, LogisticRegression]
    )
