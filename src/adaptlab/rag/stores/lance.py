"""LanceDB in a local directory: the default store, embedded, persistent and versioned, with no server.

Text search is LanceDB's BM25 index (English stemming, stop words dropped). ``where`` filters are exact matches on
``source``, ``title``, ``locator`` or any field a JSONL record carried beside its text (the chunk's ``metadata``,
read with Lance's JSON functions), applied inside the store before the top-k is cut.
"""

from __future__ import annotations

import functools
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from adaptlab._io import write_json
from adaptlab.errors import AdaptlabError
from adaptlab.rag.stores.base import META_FILE, ChunkRow, Hit, checked_meta, rebuild_hint, score_from_cosine_distance

COLUMN_FILTERS = ("source", "title", "locator")  # filter keys that are columns; any other key is a metadata field


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _lance_filter(where: dict[str, str] | None, columns: list[str]) -> str | None:
    """``where`` as a LanceDB SQL predicate; metadata fields are read with Lance's JSON functions."""
    if not where:
        return None
    terms = []
    for key, value in where.items():
        if key in COLUMN_FILTERS:
            terms.append(f"{key} = {_quote(value)}")
        elif "metadata" not in columns:
            raise AdaptlabError(f"--where {key}=...: this store was built before record fields were kept; "
                                "filter on source, title or locator, or re-index into a new --store")
        else:
            terms.append(f"json_get_string(metadata, {_quote(key)}) = {_quote(value)}")
    return " AND ".join(terms)


def _readable(method):
    """LanceDB reports damaged table files (a truncated fragment, garbage where a manifest was) as ``RuntimeError`` or
    ``OSError`` from deep in Rust: one line naming the store and how to rebuild it instead."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise AdaptlabError(f"store '{self.location}': its tables cannot be read ({reason}); "
                                f"{rebuild_hint(self.location)}") from None
    return checked


class LanceStore:
    """An embedded LanceDB database in a directory: persistent, versioned, no server."""

    def __init__(self, directory: Path) -> None:
        os.environ.setdefault("LANCE_LOG", "error")  # lance's Rust logger warns on every new table otherwise
        if directory.exists() and not directory.is_dir():
            raise AdaptlabError(f"--store '{directory}' is a file; give a directory (or a postgresql:// URL)")
        self.directory, self.location = directory, str(directory)
        self._chunks = self._documents = None

    @cached_property
    def db(self):
        """The LanceDB connection, made on first use: reading the store's description (and refusing a damaged
        one) does not wait for lancedb to import (seconds)."""
        import lancedb

        return lancedb.connect(str(self.directory))

    # -- metadata -----------------------------------------------------------------------------------------
    def read_meta(self) -> dict | None:
        path = self.directory / META_FILE
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdaptlabError(f"store '{self.location}': {META_FILE} cannot be read ({type(exc).__name__}); "
                                f"{rebuild_hint(self.location)}") from None
        return checked_meta(text, self.location)

    def write_meta(self, meta: dict) -> None:
        write_json(self.directory / META_FILE, meta)

    # -- tables -------------------------------------------------------------------------------------------
    def _table(self, name: str, schema=None):
        if name in self.db.list_tables().tables:
            return self.db.open_table(name)
        if schema is None:
            return None
        return self.db.create_table(name, schema=schema)

    def _chunk_table(self, dim: int | None = None):
        import pyarrow as pa

        if self._chunks is None:
            schema = None if dim is None else pa.schema([
                ("id", pa.string()), ("source", pa.string()), ("locator", pa.string()), ("title", pa.string()),
                ("position", pa.int32()), ("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()),
                ("metadata", pa.json_(pa.utf8())), ("vector", pa.list_(pa.float32(), dim)),
            ])
            self._chunks = self._table("chunks", schema)
        return self._chunks

    def _document_table(self, create: bool = False):
        import pyarrow as pa

        if self._documents is None:
            schema = pa.schema([("source", pa.string()), ("content_hash", pa.string())]) if create else None
            self._documents = self._table("documents", schema)
        return self._documents

    # -- the interface ------------------------------------------------------------------------------------
    @_readable
    def documents(self) -> dict[str, str]:
        table = self._document_table()
        if table is None:
            return {}
        data = table.to_arrow()
        return dict(zip(data.column("source").to_pylist(), data.column("content_hash").to_pylist()))

    @_readable
    def forget(self, sources: list[str]) -> None:
        for start in range(0, len(sources), 500):  # keep the SQL predicate short
            predicate = f"source IN ({', '.join(map(_quote, sources[start:start + 500]))})"
            for table in (self._document_table(), self._chunk_table()):
                if table is not None:
                    table.delete(predicate)

    @_readable
    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        import pyarrow as pa

        if not rows:
            return
        table = self._chunk_table(vectors.shape[1])
        columns = {field: [getattr(row, field) for row in rows] for field in self._fields(table)}
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1])
        schema = table.schema
        if "metadata" in columns:  # Lance keeps JSON as binary JSONB; it is converted from JSON text on the way in
            schema = schema.set(schema.get_field_index("metadata"), pa.field("metadata", pa.json_(pa.utf8())))
        table.add(pa.table(columns, schema=schema))

    @_readable
    def record(self, documents: dict[str, str]) -> None:
        import pyarrow as pa

        if documents:
            table = self._document_table(create=True)
            table.add(pa.table({"source": list(documents), "content_hash": list(documents.values())}, schema=table.schema))

    @staticmethod
    def _fields(table) -> list[str]:
        """The chunk fields this table holds (stores built before ``metadata`` existed lack it)."""
        return [f for f in ChunkRow.__dataclass_fields__ if f in table.schema.names]

    @_readable
    def search(self, vector: np.ndarray, k: int, where: dict[str, str] | None = None) -> list[Hit]:
        table = self._chunk_table()
        if table is None:
            return []
        query = table.search(vector.astype(np.float32), vector_column_name="vector").distance_type("cosine").limit(k)
        if any(index.index_type.startswith("IVF") for index in table.list_indices()):
            query = query.nprobes(32).refine_factor(5)  # ANN index: probe widely, re-rank exactly
        return self._hits(table, query, where, "_distance", score_from_cosine_distance)

    @_readable
    def text_search(self, query: str, k: int, where: dict[str, str] | None = None) -> list[Hit]:
        """BM25 over the chunks' text (LanceDB's full-text index; rows added since it was built are searched too)."""
        table = self._chunk_table()
        if table is None or not query.strip():
            return []
        self.ensure_text_index()
        return self._hits(table, table.search(query, query_type="fts").limit(k), where, "_score", float)

    def _hits(self, table, query, where, score_column: str, to_score) -> list[Hit]:
        fields = self._fields(table)
        predicate = _lance_filter(where, fields)
        if predicate:
            query = query.where(predicate, prefilter=True)
        return [Hit(to_score(row[score_column]), ChunkRow(**{f: row[f] for f in fields}))
                for row in query.select([*fields, score_column]).to_list()]

    @_readable
    def ensure_text_index(self) -> None:
        """LanceDB's inverted (BM25) index on the text (English stemming, stop words dropped), made once: chunks
        added later are searched too, unindexed, until ``compact`` folds them into it."""
        from lancedb.index import FTS

        table = self._chunk_table()
        if table is not None and not any(index.index_type == "FTS" for index in table.list_indices()):
            table.create_index("text", config=FTS())

    @_readable
    def count(self) -> int:
        table = self._chunk_table()
        return 0 if table is None else table.count_rows()

    @_readable
    def rows(self) -> tuple[list[ChunkRow], np.ndarray]:
        """Every chunk and its vector, in the store's order (``rag adapt`` reads the whole store)."""
        table = self._chunk_table()
        if table is None:
            return [], np.zeros((0, 0), np.float32)
        data = table.to_arrow()
        fields = self._fields(table)
        columns = {f: data.column(f).to_pylist() for f in fields}
        rows = [ChunkRow(**{f: columns[f][i] for f in fields}) for i in range(data.num_rows)]
        vectors = np.asarray(data.column("vector").to_pylist(), dtype=np.float32).reshape(data.num_rows, -1)
        return rows, vectors

    @_readable
    def replace_vectors(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        """New vectors for chunks already here (matched by id), in one atomic write; the text index is kept."""
        import pyarrow as pa

        if not rows:
            return
        table = self._chunk_table()
        ids = pa.array([row.id for row in rows])
        fixed = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1])
        update = pa.table({"id": ids, "vector": fixed})
        table.merge_insert("id").when_matched_update_all().execute(update)

    @_readable
    def build_ann_index(self) -> None:
        """An IVF-PQ index for large stores (exact search is used until one is built)."""
        table = self._chunk_table()
        rows = self.count()
        if table is None or rows < 256:
            raise AdaptlabError(f"an approximate index needs at least 256 chunks; this store has {rows}")
        dim = table.schema.field("vector").type.list_size
        table.create_index(metric="cosine", vector_column_name="vector", num_partitions=max(1, int(rows ** 0.5) // 2),
                           num_sub_vectors=max(1, dim // 8), replace=True)

    @_readable
    def compact(self) -> None:
        """Merge the small files that incremental updates (and re-embedding) leave behind, fold new rows into the
        text index, and drop superseded versions. LanceDB warns that readers of an older version would fail: the
        one writer here is this process, so the warning is not passed on."""
        import warnings
        from datetime import timedelta

        for table in (self._chunk_table(), self._document_table()):
            if table is not None:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="optimize.cleanup_older_than", category=UserWarning)
                    table.optimize(cleanup_older_than=timedelta(0))
