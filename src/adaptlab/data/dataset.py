"""The in-memory form of a labelled text-classification dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

from adaptlab.errors import AdaptlabError


def as_texts(texts: str | Sequence[str], what: str = "texts") -> list[str]:
    """Texts as every API takes them: a list of strings, or one string meaning one text (never its characters)."""
    if isinstance(texts, str):
        return [texts]
    try:
        texts = list(texts)
    except TypeError:
        raise AdaptlabError(f"{what} must be a string or a list of strings, not {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise AdaptlabError(f"{what}[{i}] is {type(text).__name__}, not a string")
    return texts


@dataclass(frozen=True)
class LabeledTexts:
    """Texts with integer labels indexing ``label_names``; the label map travels with the data.

    ``label_names`` is sorted (numerically for integer labels), so the same data always gives the same map.
    """

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    source: str
    ids: list[str] | None = None
    #: the split each row belongs to (train / val / test) when the data brings its own (a ``split`` column)
    splits: list[str] | None = None
    #: where each split came from, when the user gave them as separate sources (``adaptlab.data.given``)
    origins: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "LabeledTexts":
        indices = np.asarray(indices, dtype=np.int64)
        return LabeledTexts(
            texts=[self.texts[i] for i in indices],
            labels=self.labels[indices],
            label_names=self.label_names,
            source=self.source,
            ids=None if self.ids is None else [self.ids[i] for i in indices],
            splits=None if self.splits is None else [self.splits[i] for i in indices],
            origins=self.origins,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(n) for name, n in zip(self.label_names, counts)}

    def fingerprint(self) -> str:
        """A content hash of texts, labels and label map: equal data, equal fingerprint."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.label_names).encode())
        digest.update(self.labels.astype(np.int64).tobytes())
        for text in self.texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()[:16]
