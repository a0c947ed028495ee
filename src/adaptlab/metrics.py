"""Classification metrics recorded in every artifact and compared across strategies."""

from __future__ import annotations

import functools
import re
import string
from collections import Counter

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: true label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

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


# -- generated text against references (SQuAD's official normalisation; ROUGE-L from rouge-score) -----------
def normalize_answer(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: tuple[str, ...]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: tuple[str, ...]) -> float:
    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max((f1(g) for g in golds), default=0.0)



def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed), as ``rouge-score`` computes it."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure) if prediction.strip() else 0.0


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
