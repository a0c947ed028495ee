"""An index: documents chunked and embedded into a vector store, updated incrementally, searched by meaning.

The store remembers how it was built (embedding model and fingerprint, pooling, chunk size and overlap);
adding to it or querying it with a different embedding model is refused, because vectors from two models
live in unrelated spaces and the scores would silently mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.progress import progress_bar
from adaptlab.rag.chunking import SPECIAL_TOKENS, Chunker
from adaptlab.rag.documents import find_sources, iter_records, under_roots
from adaptlab.rag.retrieval import FUSION_DEPTH, Retrieval, reciprocal_rank_fusion
from adaptlab.rag.stores import open_store
from adaptlab.rag.stores.base import ChunkRow, Hit, VectorStore

FLUSH_CHUNKS = 512  # chunks embedded and written per store transaction


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    store_seconds: float = 0.0


def store_embedder(model: str, device: str | None = None):
    """The embedder of a store: mean pooling and unit-length vectors (what both stores' cosine scores assume)."""
    from adaptlab.embeddings import Embedder

    return Embedder(model, "mean", normalize=True, device=device, progress=False)


def embedding_identity(embedder) -> dict:
    """What a store records of its embedder: vectors of another identity are refused."""
    return {"model": embedder.model_name, "fingerprint": embedder.ref.fingerprint(), "pooling": "mean",
            "normalize": True, "max_length": embedder.max_length}


class RagIndex:
    def __init__(self, store: str | Path | VectorStore, *, model: str | None = None, chunk_size: int | None = None,
                 chunk_overlap: int | None = None, device: str | None = None, progress: bool = True,
                 retrieval: Retrieval | None = None, reranker=None, rerank_depth: int | None = None) -> None:
        for name, value, least in (("--chunk-size", chunk_size, 1), ("--chunk-overlap", chunk_overlap, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise AdaptlabError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if chunk_size is not None and chunk_overlap is not None and chunk_overlap >= chunk_size:
            raise AdaptlabError(f"--chunk-overlap {chunk_overlap} must be smaller than --chunk-size {chunk_size}")
        if not isinstance(store, (str, Path)) and not callable(getattr(store, "read_meta", None)):
            raise AdaptlabError(f"store must be a directory (LanceDB), a postgresql:// URL or a VectorStore, not {store!r}")
        self.store = open_store(store) if isinstance(store, (str, Path)) else store
        self.meta = self.store.read_meta()
        self.progress = progress
        adapted = (self.meta or {}).get("adapted") or {}  # what `rag adapt` chose for this store
        #: how search() finds chunks unless a call says otherwise: as given, else as adapted, else dense
        self.retrieval = retrieval or Retrieval(**adapted.get("retrieval", {}))
        #: an ``adaptlab.rag.rerank.Reranker`` that re-orders the first ``rerank_depth`` candidates of every search;
        #: by default the adapted one (made at the first search), ``False`` for none
        stored = adapted.get("rerank") or {}
        self.reranker = reranker if reranker is not None else (stored.get("spec") or False)
        self.rerank_depth = rerank_depth or stored.get("depth") or 20
        self._device = device
        if self.meta is None:
            self.embedder = store_embedder(model or "minilm", device)
            # 200 tokens unless the embedder reads fewer (a small model: its whole window)
            size = min(200, self.embedder.max_length - SPECIAL_TOKENS) if chunk_size is None else chunk_size
            self.meta = {
                "format": 1, "embedding": embedding_identity(self.embedder), "dim": None,
                "chunk_size": size, "chunk_overlap": min(40, size // 5) if chunk_overlap is None else chunk_overlap,
            }
        else:
            built = self.meta["embedding"]
            self.embedder = store_embedder(model or built["model"], device)
            if self.embedder.ref.fingerprint() != built["fingerprint"]:
                raise AdaptlabError(
                    f"store '{self.store.location}' was built with embedding model '{built['model']}'; it cannot be "
                    f"used with '{model or built['model']}' as it is now (vectors of different models are not comparable): drop --model or use a new --store"
                )
            for name, value in (("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap)):
                if value is not None and value != self.meta[name]:
                    raise AdaptlabError(f"store '{self.store.location}' uses --{name.replace('_', '-')} {self.meta[name]}; "
                                        f"re-chunking needs a new --store")
        self.chunker = Chunker(self.embedder.tokenizer, self.meta["chunk_size"], self.meta["chunk_overlap"],
                               max_tokens=self.embedder.max_length)

    # -- indexing -----------------------------------------------------------------------------------------
    def update(self, paths: str | Path | list[str | Path]) -> IndexReport:
        """Bring the store in line with ``paths`` (one path, or a list): new files added, changed ones replaced,
        files that disappeared from under these paths removed; unchanged files cost one hash each."""
        paths = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        started = time.perf_counter()
        report = IndexReport()
        files, roots = find_sources(paths)
        known = self.store.documents()
        present = {f.source for f in files}
        report.removed = sorted(s for s in known if under_roots(s, roots) and s not in present)
        self.store.forget(report.removed)
        todo = []
        for file in files:
            try:
                digest = file.content_hash()
            except OSError as exc:  # unreadable or vanished since listing: reported, the run goes on
                report.failed.append((file.source, f"cannot read ({type(exc).__name__})"))
                continue
            if known.get(file.source) == digest:
                report.unchanged += 1
            else:
                todo.append((file, digest))
        if self.meta.get("dim") is None:
            self.meta["dim"] = int(self.embedder.embed(["dimension probe"]).shape[1])
        self.store.write_meta(self.meta)
        digests = {file.source: digest for file, digest in todo}
        pending: list[tuple[str, str, list[ChunkRow]]] = []
        with progress_bar("indexing documents", len(todo), self.progress and bool(todo)) as advance:
            for file, records, error in iter_records([f for f, _ in todo]):
                digest = digests[file.source]
                if error is not None:
                    report.failed.append((file.source, error))
                else:
                    (report.replaced if file.source in known else report.added).append(file.source)
                    pending.append((file.source, digest, self._chunk(file.source, records)))
                if sum(len(rows) for _, _, rows in pending) >= FLUSH_CHUNKS:
                    self._flush(pending, report)
                    pending = []
                advance(1)
            self._flush(pending, report)
        if report.chunks_written:
            self.store.ensure_text_index()  # once per store, so the first BM25 query does not pay for it
        report.seconds = time.perf_counter() - started
        return report

    def _chunk(self, source: str, records) -> list[ChunkRow]:
        rows = []
        for record in records:
            for position, chunk in enumerate(self.chunker.split(record.text)):
                key = hashlib.sha256(f"{source}\0{record.locator}\0{position}\0{chunk.text}".encode()).hexdigest()[:32]
                rows.append(ChunkRow(key, source, record.locator, record.title, position, chunk.start, chunk.end, chunk.text,
                                     json.dumps(record.metadata, sort_keys=True, ensure_ascii=False, default=str)))
        return rows

    def _flush(self, pending, report: IndexReport) -> None:
        if not pending:
            return
        rows = [row for _, _, chunk_rows in pending for row in chunk_rows]
        embed_started = time.perf_counter()
        vectors = self.embedder.embed([row.text for row in rows]) if rows else np.zeros((0, self.meta["dim"]), np.float32)
        store_started = time.perf_counter()
        # New sources too: a run killed after writing their chunks but before their record left chunks behind.
        self.store.forget([source for source, _, _ in pending])
        self.store.add(rows, vectors)
        self.store.record({source: digest for source, digest, _ in pending})
        report.embed_seconds += store_started - embed_started
        report.store_seconds += time.perf_counter() - store_started
        report.chunks_written += len(rows)

    # -- querying -----------------------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.embed([text])[0]

    def search(self, query: str, k: int = 5, retrieval: Retrieval | None = None) -> list[Hit]:
        """The top ``k`` chunks for ``query`` the index's way (``retrieval``: this call's way instead)."""
        if not query.strip():
            raise AdaptlabError("the query is empty")
        retrieval = retrieval or self.retrieval
        vector = None if retrieval.mode == "bm25" else self.embed_query(query)
        return self.retrieve(query, vector, k, retrieval)

    def retrieve(self, query: str, vector: np.ndarray | None, k: int, retrieval: Retrieval | None = None) -> list[Hit]:
        """``search`` with the query's vector already computed (evaluation embeds all questions in one batch)."""
        retrieval = retrieval or self.retrieval
        self._check_searchable(k)
        if isinstance(self.reranker, str):  # the adapted re-ranker, loaded when first needed
            from adaptlab.rag.rerank import make_reranker

            self.reranker = make_reranker(self.reranker, self._device)
        if not self.reranker:
            return self._first_stage(query, vector, k, retrieval)
        candidates = self._first_stage(query, vector, max(k, self.rerank_depth), retrieval)
        head = self.reranker.rerank(query, candidates[:self.rerank_depth], self.rerank_depth)
        return (head + candidates[self.rerank_depth:])[:k]  # beyond the re-ranked head, the first stage's order

    def _first_stage(self, query: str, vector: np.ndarray | None, k: int, retrieval: Retrieval) -> list[Hit]:
        where = retrieval.filters
        if retrieval.mode == "dense":
            return self.store.search(vector, k, where)
        if retrieval.mode == "bm25":
            return self.store.text_search(query, k, where)
        depth = max(k, FUSION_DEPTH)
        rankings = [self.store.search(vector, depth, where), self.store.text_search(query, depth, where)]
        return reciprocal_rank_fusion(rankings, [retrieval.dense_weight, retrieval.bm25_weight], k)

    def _check_searchable(self, k: int) -> None:
        if k < 1:
            raise AdaptlabError(f"-k must be at least 1, not {k}")
        self.check_not_empty()
        pending = self.meta.get("reembedding")
        if pending:
            raise AdaptlabError(f"store '{self.store.location}' is being re-embedded by `adaptlab rag adapt` ({pending['done']} of "
                                f"{self.store.count()} chunks done); run `adaptlab rag adapt --store {self.store.location}` again to finish")

    def check_not_empty(self) -> None:
        if self.meta.get("dim") is None or self.store.count() == 0:
            raise AdaptlabError(f"store '{self.store.location}' is empty; run `adaptlab rag index PATH --store {self.store.location}` first")
