"""Classification metrics recorded in every artifact and compared across strategies."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: true label, columns: predicted)."""
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(label_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_per_class": {name: float(f) for name, f in zip(label_names, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
