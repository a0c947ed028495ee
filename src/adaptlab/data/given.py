"""The user's own splits: a training source, a test source and optionally a validation source, kept as given.

A fixed gold test set (a benchmark's official test split, an audited company set) must stay exactly that: its rows
become the test split, none of them is trained on, and nothing is pooled and re-cut. Each source is anything
``load_data`` reads (a named dataset, a .csv/.jsonl/.parquet file, a Hub id) or a Hub dataset's named split,
``NAME:SPLIT`` (``imdb:test``). Without a validation source one is cut from the training rows (stratified, a
``val_fraction`` of them), so early stopping never looks at the test rows.

Generation data takes the same options (``adaptlab.data.generation``). Refused in one line, before any model loads: a test (or validation) row whose text is also a training row, with the
count; a label the training rows never have (a classifier cannot predict a class it never saw).
"""

from __future__ import annotations

import numpy as np

from adaptlab.data.dataset import LabeledTexts
from adaptlab.errors import AdaptlabError

PARTS = ("train", "val", "test")


def load_given(sources: dict[str, str | None], **columns) -> LabeledTexts:
    """One ``LabeledTexts`` holding every given part, each row marked with its part (``splits``) and the label map
    of the training rows; ``origins`` records where each part came from (the manifest keeps it)."""
    from adaptlab.data.loaders import load_data

    check_sources(sources)
    parts = {part: load_data(source, **columns) for part, source in sources.items() if source}
    train = parts["train"]
    names = train.label_names
    seen = set(train.texts)
    for part in ("val", "test"):
        if part not in parts:
            continue
        data = parts[part]
        unseen = sorted(set(data.label_names[i] for i in np.unique(data.labels)) - set(names))
        if unseen:
            count = sum(data.label_names[label] in unseen for label in data.labels)
            raise AdaptlabError(f"{option_name(part)} '{sources[part]}' has the label '{unseen[0]}' ({count} row(s)"
                                f"{f', {len(unseen)} labels in all' if len(unseen) > 1 else ''}) that the training data "
                                f"'{sources['train']}' never has; a classifier cannot predict a class it never saw: add "
                                "training rows of it or remove those rows")
        shared = sum(text in seen for text in data.texts)
        if shared:
            raise AdaptlabError(f"{option_name(part)} '{sources[part]}' shares {shared} row(s) with the training data "
                                f"'{sources['train']}' (the same text); remove them so the {part_word(part)} rows are unseen")
    if "val" in parts and (shared := len(set(parts["val"].texts) & set(parts["test"].texts))):
        raise AdaptlabError(f"--val-data '{sources['val']}' shares {shared} row(s) with the test data '{sources['test']}'; "
                            "remove them so model selection never sees a test row")
    texts, labels, splits, ids = [], [], [], []
    for part, data in parts.items():
        texts += data.texts
        labels += [names.index(data.label_names[label]) for label in data.labels]
        splits += [part] * len(data)
        ids += data.ids or [f"{part}:{i + 1}" for i in range(len(data))]
    if not any(data.ids for data in parts.values()):
        ids = None
    origins = {part: str(sources[part]) if part in parts else "cut from the training data" for part in PARTS}
    described = " + ".join(f"{part}={sources[part]}" for part in PARTS if part in parts)
    return LabeledTexts(texts, np.asarray(labels, dtype=np.int64), names, described, ids, splits, origins)


def check_sources(sources: dict[str, str | None]) -> None:
    """Training and test sources are both needed (validation is optional), whatever the kind of data."""
    if not sources.get("train") or not sources.get("test"):
        missing = "--train-data" if not sources.get("train") else "--test-data"
        raise AdaptlabError(f"{missing} is missing: your own splits need at least a training and a test source "
                            "(--val-data is optional; it is cut from the training rows when not given)")


def option_name(part: str) -> str:
    return {"val": "--val-data", "test": "--test-data"}[part]


def part_word(part: str) -> str:
    return {"val": "validation", "test": "test"}[part]

