"""Strategy "features": a frozen model as feature extractor feeding a scikit-learn classifier.

The cheapest rung of the adaptation ladder: the language model never changes, its pooled embeddings of
each text become a feature vector, and a classic classifier learns the task. Logistic regression's
regularisation strength ``C`` is chosen on the validation split unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.data import Splits
from adaptlab.embeddings import POOLINGS, Embedder
from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.models.loading import count_checkpoint_parameters
from adaptlab.params import param
from adaptlab.progress import stderr
from adaptlab.runtime import PRECISIONS
from adaptlab.training.probe import choose_c

CLASSIFIERS = ("logreg", "random-forest")
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


@dataclass(kw_only=True, eq=False)
class FeatureClassifier(Strategy):
    name = "features"
    description = "Frozen model embeddings -> scikit-learn classifier (logistic regression or random forest)."

    model: str = param("minilm", "Model: minilm, smollm2-135m, a Hub id or a local directory.")
    pooling: str = param("mean", "mean, cls or last (last real token; for decoders).", choices=POOLINGS)
    classifier: str = param("logreg", "logreg or random-forest.", choices=CLASSIFIERS)
    C: float | None = param(None, "Logistic regression C; chosen on the validation split if omitted.", above=0, flag="--C")
    n_estimators: int = param(300, "Trees in the random forest.", minimum=1, maximum=100_000)
    batch_size: int = param(64, "Texts per embedding batch.", minimum=1, below=2**31)
    max_length: int | None = param(None, "Truncate texts to this many tokens (default: the model's, at most 512).", minimum=1, maximum=100_000)
    precision: str = param("auto", "auto (bf16 where the hardware has it natively), fp32 or bf16.", choices=PRECISIONS)
    seed: int = param(0, "Seed of the classifier.", minimum=0, below=2**32)
    cache: bool = param(True, "Use the on-disk embedding cache.", runtime=True, cli=False)

    def _embedder(self) -> Embedder:
        return Embedder(self.model, self.pooling, batch_size=self.batch_size, max_length=self.max_length,
                        precision=self.precision, device=self.device, cache=self.cache, progress=self.progress)

    def _make_estimator(self, C: float):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.classifier == "logreg":
            return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=self.seed))
        return RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=-1)

    def fit(self, splits: Splits, workdir: Path) -> "FeatureClassifier":
        self.label_names = splits.label_names
        self.embedder_ = self._embedder()
        self.selection_: dict = {}
        x_train = self.embedder_.embed(splits.train.texts)
        y_train = splits.train.labels
        if self.classifier == "logreg" and self.C is None:
            x_val = self.embedder_.embed(splits.val.texts)
            best, scores = choose_c(self._make_estimator, x_train, y_train, x_val, splits.val.labels)
            self.selection_ = {"C": best, "val_accuracy_by_C": {str(c): s for c, s in scores.items()}}
            stderr.print(f"chose C={best} on the validation split (accuracy {scores[best]:.4f})")
        chosen_c = self.C if self.C is not None else self.selection_.get("C", 1.0)
        self.estimator_ = self._make_estimator(chosen_c).fit(x_train, y_train)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if getattr(self, "estimator_", None) is None:
            raise RuntimeError("fit() or load() the strategy before predicting")
        return self.estimator_.predict_proba(self.embedder_.embed(texts))

    def _head_params(self) -> int:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import Pipeline

        if isinstance(self.estimator_, Pipeline):
            scaler, logreg = self.estimator_[0], self.estimator_[-1]
            return int(logreg.coef_.size + logreg.intercept_.size + scaler.mean_.size + scaler.scale_.size)
        assert isinstance(self.estimator_, RandomForestClassifier)
        return int(sum(tree.tree_.node_count for tree in self.estimator_.estimators_))

    def cost(self) -> dict:
        backbone = count_checkpoint_parameters(self.embedder_.ref.path) if self.embedder_.ref.local else None
        head = self._head_params()
        return {
            "trainable_params": head,
            "total_params": None if backbone is None else backbone + head,
        }

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.embedder_.ref)

    def save(self, directory: Path) -> None:
        import skops.io

        skops.io.dump(self.estimator_, directory / _FILE)

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "FeatureClassifier":
        import skops.io

        # reload with the precision that was actually used, not "auto" resolved again on another machine
        used = {"precision": manifest["details"]["embedding"]["precision"]}
        strategy = cls.rebuild({**manifest, "params": {**manifest["params"], **used}}, runtime)
        strategy.embedder_ = strategy._embedder()
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
        strategy.selection_ = manifest["details"].get("selection", {})
        return strategy

    def details(self) -> dict:
        # the head's "trainable" parameters are the classifier's (tree nodes for a random forest); the backbone is frozen
        return {"embedding": self.embedder_.settings(), "selection": self.selection_}

    def uncached(self):
        return self.embedder_.fresh()


def _is_expected_estimator(estimator: Any) -> bool:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(estimator, RandomForestClassifier):
        return True
    return (
        isinstance(estimator, Pipeline)
        and [type(step) for _, step in estimator.steps] == [StandardScaler, LogisticRegression]
    )
