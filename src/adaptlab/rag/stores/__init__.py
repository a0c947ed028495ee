"""Vector stores behind one small interface (``base.VectorStore``): LanceDB in a local directory (default,
``lance``), PostgreSQL + pgvector (``pgvector``).

Updating a document first forgets its record, then its chunks, then adds the new chunks, then the record: a run
killed at any point leaves documents without a record, and the next run redoes exactly those. Both searches take
``where``: exact matches on ``source``, ``title``, ``locator`` or any field a JSONL record carried beside its text
(kept as the chunk's ``metadata``), applied inside the store before the top-k is cut.

The stores import only ``base``; choosing one by its location is this package's, so no store imports another.
"""

from __future__ import annotations

from pathlib import Path

from adaptlab.errors import AdaptlabError
from adaptlab.rag.stores.base import VectorStore
from adaptlab.rag.stores.lance import LanceStore
from adaptlab.rag.stores.pgvector import PgVectorStore


def open_store(location: str | Path) -> VectorStore:
    """``postgresql://...`` -> PostgreSQL + pgvector; anything else is a LanceDB directory."""
    location = str(location)
    if not location.strip():
        raise AdaptlabError("--store is empty; give a directory (LanceDB) or a postgresql:// URL")
    if location.startswith(("postgresql://", "postgres://")):
        return PgVectorStore(location)
    return LanceStore(Path(location))
