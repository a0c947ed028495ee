"""What every vector store keeps and returns, the interface the index talks to, and the checks they share.

A store keeps two collections: ``chunks`` (text, metadata, unit-length vector) and ``documents`` (source ->
content hash, written *after* a document's chunks). Dense searches return a similarity score in [0, 1]:
``(1 + cosine) / 2``, the same in every store (1 = same direction, 0.5 = orthogonal, 0 = opposite). Text
searches return the store's own relevance score, higher = better, comparable only within one query.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from adaptlab.errors import AdaptlabError

META_FILE = "adaptlab-index.json"


@dataclass(frozen=True)
class ChunkRow:
    id: str
    source: str
    locator: str
    title: str
    position: int
    start: int
    end: int
    text: str
    metadata: str = "{}"  # the record's other fields as JSON (a JSONL row's, a Wikipedia article's topic)


@dataclass(frozen=True)
class Hit:
    score: float
    chunk: ChunkRow


def score_from_cosine_distance(distance: float) -> float:
    return float(min(1.0, max(0.0, 1.0 - distance / 2.0)))


class VectorStore(Protocol):
    location: str

    def read_meta(self) -> dict | None: ...
    def write_meta(self, meta: dict) -> None: ...
    def documents(self) -> dict[str, str]: ...
    def forget(self, sources: list[str]) -> None: ...
    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None: ...
    def record(self, documents: dict[str, str]) -> None: ...
    def search(self, vector: np.ndarray, k: int, where: dict[str, str] | None = None) -> list[Hit]: ...
    def text_search(self, query: str, k: int, where: dict[str, str] | None = None) -> list[Hit]: ...
    def ensure_text_index(self) -> None: ...
    def count(self) -> int: ...
    def rows(self) -> tuple[list[ChunkRow], np.ndarray]: ...
    def replace_vectors(self, rows: list[ChunkRow], vectors: np.ndarray) -> None: ...
    def compact(self) -> None: ...


def rebuild_hint(location: str) -> str:
    """The end of every message about a damaged store: how to build it again."""
    return f"rebuild it: remove it and run `adaptlab rag index PATH --store {location}`"


def checked_meta(text: str, location: str, name: str = META_FILE) -> dict:
    """A store's description (how it was built) as JSON text, checked against ``StoreMeta``: a truncated or
    edited description is one line saying to rebuild the store, not a traceback from deep in ``RagIndex``."""
    from adaptlab.schemas import StoreMeta, json_value, parse  # the schemas load when a store is opened, not at startup

    where = f"store '{location}': {name}"
    try:
        meta = json_value(text, where)
        parse(StoreMeta, meta, where)
    except AdaptlabError as exc:
        raise AdaptlabError(f"{exc}; {rebuild_hint(location)}") from None
    return meta


def describe(hit: Hit) -> dict:
    row = asdict(hit.chunk)
    return {"score": round(hit.score, 4), **row, "metadata": json.loads(row["metadata"] or "{}")}
