"""What the ``rag`` commands share: the search options, applying them over a store's adapted defaults, and the
checks of an existing store that run before LanceDB or a model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from adaptlab.errors import AdaptlabError
from adaptlab.rag.rerank import check_rerank


StoreOpt = Annotated[str, typer.Option("--store", help="Vector store: a LanceDB directory, or a postgresql:// URL (pgvector).")]
RetrievalOpt = Annotated[Optional[str], typer.Option("--retrieval", help="dense (by meaning), bm25 (by words) or hybrid (both, fused by reciprocal rank). Default: the store's (rag adapt's choice), else dense.")]
DenseWeightOpt = Annotated[Optional[float], typer.Option(help="hybrid: the weight of the dense ranking in the fusion (default: the store's, else 1).")]
Bm25WeightOpt = Annotated[Optional[float], typer.Option(help="hybrid: the weight of the BM25 ranking in the fusion (default: the store's, else 1).")]
WhereOpt = Annotated[Optional[list[str]], typer.Option("--where", help="Only chunks whose FIELD equals VALUE (source, title, locator or a JSONL field such as topic); repeat to combine.", metavar="FIELD=VALUE")]

RerankOpt = Annotated[Optional[str], typer.Option("--rerank", help="Re-rank the first --rerank-depth candidates: likelihood[:MODEL] (the reader's query likelihood, default SmolLM2), cross-encoder:NAME, or none. Default: the store's (rag adapt's choice), else none.")]
RerankDepthOpt = Annotated[Optional[int], typer.Option(help="Candidates the re-ranker reads per query; its cost grows with it (default: the store's, else 20).")]


def check_search(mode: str | None, dense_weight: float | None, bm25_weight: float | None, where: list[str] | None,
                  rerank: str | None = None, rerank_depth: int | None = None) -> None:
    """The search options, checked before the store or any model loads."""
    from adaptlab.rag.retrieval import Retrieval, parse_filters

    Retrieval(mode or "dense", 1.0 if dense_weight is None else dense_weight, 1.0 if bm25_weight is None else bm25_weight,
              parse_filters(where))
    check_rerank(rerank, 20 if rerank_depth is None else rerank_depth)


def configure(index, mode: str | None, dense_weight: float | None, bm25_weight: float | None, where: list[str] | None,
               rerank: str | None = None, rerank_depth: int | None = None, device: str | None = None) -> None:
    """The options the user gave, over the store's defaults (what `rag adapt` chose, else dense, no re-ranking).
    A re-ranker named here loads its model, so the checks and the store come first."""
    from adaptlab.rag.rerank import make_reranker
    from adaptlab.rag.retrieval import Retrieval, parse_filters

    stored = index.retrieval
    index.retrieval = Retrieval(mode or stored.mode, stored.dense_weight if dense_weight is None else dense_weight,
                                stored.bm25_weight if bm25_weight is None else bm25_weight, parse_filters(where))
    if rerank is not None:
        index.reranker = make_reranker(rerank, device) or False
    if rerank_depth is not None:
        index.rerank_depth = rerank_depth


def existing_store(store: str) -> str:
    """A store to read from, checked without importing lancedb or a model: it exists, its description is sound
    and it holds chunks (a PostgreSQL store is checked when it is opened)."""
    from adaptlab.rag.stores.base import META_FILE
    from adaptlab.rag.stores.lance import LanceStore

    if not store.strip():
        raise AdaptlabError("--store is empty; give the directory (or postgresql:// URL) of an index")
    if store.startswith(("postgresql://", "postgres://")):
        return store
    if not Path(store).is_dir():
        raise AdaptlabError(f"--store '{store}' does not exist; build it with `adaptlab rag index PATH --store {store}`")
    meta = LanceStore(Path(store)).read_meta()
    if meta is None and any(Path(store).iterdir()):
        raise AdaptlabError(f"--store '{store}' is not an adaptlab store (no {META_FILE}); give the --store of `adaptlab rag index`")
    if meta is None or meta.get("dim") is None or not (Path(store) / "chunks.lance").is_dir():
        raise AdaptlabError(f"store '{store}' is empty; run `adaptlab rag index PATH --store {store}` first")
    _check_store_files(Path(store), meta)
    return store


def _check_store_files(store: Path, meta: dict) -> None:
    """What can be checked of a store without LanceDB or its model: the embedding model it names is there and as wide
    as the vectors it says it holds, and every data file of its tables ends with Lance's footer (a file cut short or
    overwritten does not)."""
    from adaptlab.models.loading import check_model, declared_width

    model = meta["embedding"]["model"]
    try:
        check_model(model)
    except AdaptlabError as exc:
        raise AdaptlabError(f"store '{store}' was built with embedding model '{model}', which cannot be used: {exc}") from None
    width = declared_width(model)
    if width is not None and width != meta["dim"]:
        raise AdaptlabError(f"store '{store}': its description says {meta['dim']}-dimensional vectors but its embedding "
                            f"model '{model}' makes {width}; the store is damaged: rebuild it")
    for table in ("chunks.lance", "documents.lance"):
        for data_file in sorted((store / table / "data").glob("*.lance")):
            with data_file.open("rb") as handle:
                handle.seek(max(0, data_file.stat().st_size - 4))
                if handle.read(4) != b"LANC":
                    raise AdaptlabError(f"store '{store}': {table}/data/{data_file.name} is damaged (not a whole Lance "
                                        f"file); rebuild it: remove it and run `adaptlab rag index PATH --store {store}`")
