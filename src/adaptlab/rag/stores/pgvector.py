"""PostgreSQL + pgvector: the same store interface for indexes that outgrow one machine or are shared by a team.

``--store postgresql://user:pass@host:5432/db`` uses tables ``adaptlab_chunks``, ``adaptlab_documents`` and
``adaptlab_meta``; append ``#name`` to keep several indexes in one database (tables ``name_chunks`` ...).
Needs ``pip install 'psycopg[binary]'`` and the ``vector`` extension on the server (created if allowed).
Scores are ``1 - distance / 2`` over pgvector's cosine distance (``<=>``), as in the LanceDB store. Text search is
PostgreSQL's own: a generated ``tsvector`` column (English stemming) with a GIN index, any query word matching,
ranked by ``ts_rank_cd``; record fields live in a ``jsonb`` column that ``where`` filters read.
"""

from __future__ import annotations

import json
import re

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.rag.stores.base import ChunkRow, Hit, checked_meta, score_from_cosine_distance

FIELDS = ("id", "source", "locator", "title", "position", "start_char", "end_char", "text", "metadata")
COLUMNS = {"source": "source", "title": "title", "locator": "locator"}  # filter keys that are columns


def _where(where: dict[str, str] | None) -> tuple[str, list]:
    """``where`` as SQL (an ``AND ...`` suffix) and its parameters; other keys are read from ``metadata``."""
    terms, params = [], []
    for key, value in (where or {}).items():
        if key in COLUMNS:
            terms.append(f"{COLUMNS[key]} = %s")
            params.append(value)
        else:
            terms.append("metadata ->> %s = %s")
            params += [key, value]
    return "".join(f" AND {term}" for term in terms), params


def _or_query(text: str) -> str:
    """Any word of the query (``to_tsquery`` syntax): a question's words are alternatives, as in BM25."""
    return " | ".join(re.findall(r"\w+", text.lower()))


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32)) + "]"


class PgVectorStore:
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise AdaptlabError("a postgresql:// store needs: pip install 'psycopg[binary]'") from None
        url, _, name = url.partition("#")
        name = name or "adaptlab"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", name):
            raise AdaptlabError(f"index name '#{name}' must be lower-case letters, digits and underscores")
        self.location = f"{re.sub(r'//[^@/]*@', '//***@', url)}#{name}"  # never print a password
        self.prefix = name
        try:
            self.connection = psycopg.connect(url, autocommit=True, prepare_threshold=None)  # poolers (pgbouncer) forbid them
        except psycopg.OperationalError as exc:
            raise AdaptlabError(f"cannot connect to {self.location}: {str(exc).strip().splitlines()[0]}") from None
        try:
            self.connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise AdaptlabError(f"{self.location}: the pgvector extension is not available ({str(exc).strip().splitlines()[0]})") from None
        self.connection.execute(f"CREATE TABLE IF NOT EXISTS {name}_meta (key text PRIMARY KEY, value text NOT NULL)")
        self.connection.execute(f"CREATE TABLE IF NOT EXISTS {name}_documents (source text PRIMARY KEY, content_hash text NOT NULL)")
        if self._has_chunks():
            self._add_text_columns()

    def _sql(self, statement: str, params=None):
        return self.connection.execute(statement.replace("{p}", self.prefix), params)

    def read_meta(self) -> dict | None:
        row = self._sql("SELECT value FROM {p}_meta WHERE key = 'meta'").fetchone()
        return None if row is None else checked_meta(row[0], self.location, "its meta table")

    def write_meta(self, meta: dict) -> None:
        self._sql("INSERT INTO {p}_meta VALUES ('meta', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                  (json.dumps(meta),))
        if meta.get("dim"):
            self._sql(f"CREATE TABLE IF NOT EXISTS {{p}}_chunks (id text PRIMARY KEY, source text NOT NULL, locator text, "
                      f"title text, position int, start_char int, end_char int, text text, embedding vector({int(meta['dim'])}))")
            self._sql("CREATE INDEX IF NOT EXISTS {p}_chunks_source ON {p}_chunks (source)")
            self._add_text_columns()

    def _add_text_columns(self) -> None:
        """Record fields and the text-search column (added in place to tables made before them)."""
        self._sql("ALTER TABLE {p}_chunks ADD COLUMN IF NOT EXISTS metadata jsonb NOT NULL DEFAULT '{}'")
        self._sql("ALTER TABLE {p}_chunks ADD COLUMN IF NOT EXISTS words tsvector "
                  "GENERATED ALWAYS AS (to_tsvector('english', coalesce(title, '') || ' ' || text)) STORED")
        self._sql("CREATE INDEX IF NOT EXISTS {p}_chunks_words ON {p}_chunks USING gin (words)")

    def _has_chunks(self) -> bool:
        return self._sql("SELECT to_regclass(%s)", (f"{self.prefix}_chunks",)).fetchone()[0] is not None

    def documents(self) -> dict[str, str]:
        return dict(self._sql("SELECT source, content_hash FROM {p}_documents").fetchall())

    def forget(self, sources: list[str]) -> None:
        if sources:
            self._sql("DELETE FROM {p}_documents WHERE source = ANY(%s)", (sources,))
            if self._has_chunks():
                self._sql("DELETE FROM {p}_chunks WHERE source = ANY(%s)", (sources,))

    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        if not rows:
            return
        with self.connection.transaction(), self.connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.prefix}_chunks ({', '.join(FIELDS)}, embedding) VALUES "
                f"({', '.join(['%s'] * (len(FIELDS) - 1))}, %s::jsonb, %s::vector) ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding",
                [(r.id, r.source, r.locator, r.title, r.position, r.start, r.end, r.text, r.metadata, _literal(v))
                 for r, v in zip(rows, vectors)],
            )

    def record(self, documents: dict[str, str]) -> None:
        if documents:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {self.prefix}_documents VALUES (%s, %s) "
                    "ON CONFLICT (source) DO UPDATE SET content_hash = EXCLUDED.content_hash",
                    list(documents.items()),
                )

    def search(self, vector: np.ndarray, k: int, where: dict[str, str] | None = None) -> list[Hit]:
        if not self._has_chunks():
            return []
        literal, (condition, params) = _literal(vector), _where(where)
        rows = self._sql(
            f"SELECT {', '.join(FIELDS[:-1])}, metadata::text, embedding <=> %s::vector AS distance FROM {{p}}_chunks "
            f"WHERE true{condition} ORDER BY embedding <=> %s::vector LIMIT %s", (literal, *params, literal, k)).fetchall()
        return [Hit(score_from_cosine_distance(row[-1]), ChunkRow(*row[:-1])) for row in rows]

    def text_search(self, query: str, k: int, where: dict[str, str] | None = None) -> list[Hit]:
        words, (condition, params) = _or_query(query), _where(where)
        if not self._has_chunks() or not words:
            return []
        rows = self._sql(
            f"SELECT {', '.join(FIELDS[:-1])}, metadata::text, ts_rank_cd(words, query) AS rank "
            f"FROM {{p}}_chunks, to_tsquery('english', %s) AS query WHERE words @@ query{condition} "
            "ORDER BY rank DESC, id LIMIT %s", (words, *params, k)).fetchall()
        return [Hit(float(row[-1]), ChunkRow(*row[:-1])) for row in rows]

    def ensure_text_index(self) -> None:
        """Nothing to do: the text column and its GIN index are kept up to date by PostgreSQL."""

    def count(self) -> int:
        return self._sql("SELECT count(*) FROM {p}_chunks").fetchone()[0] if self._has_chunks() else 0

    def rows(self) -> tuple[list[ChunkRow], np.ndarray]:
        """Every chunk and its vector (``rag adapt`` reads the whole store)."""
        if not self._has_chunks():
            return [], np.zeros((0, 0), np.float32)
        fetched = self._sql(f"SELECT {', '.join(FIELDS[:-1])}, metadata::text, embedding::text FROM {{p}}_chunks ORDER BY id").fetchall()
        vectors = np.asarray([json.loads(row[-1]) for row in fetched], dtype=np.float32).reshape(len(fetched), -1)
        return [ChunkRow(*row[:-1]) for row in fetched], vectors

    def replace_vectors(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        """New vectors for chunks already here: ``add`` updates the vector of an id it finds (one transaction)."""
        self.add(rows, vectors)

    def build_ann_index(self) -> None:
        """pgvector's HNSW index over cosine distance (kept up to date by PostgreSQL on every insert)."""
        self._sql("CREATE INDEX IF NOT EXISTS {p}_chunks_hnsw ON {p}_chunks USING hnsw (embedding vector_cosine_ops)")

    def compact(self) -> None:
        self._sql("VACUUM ANALYZE {p}_chunks")
