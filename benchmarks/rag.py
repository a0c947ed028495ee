"""RAG benchmarks: retrieval and answer quality on SQuAD dev, and the vector store's speed at 10k and 100k chunks.

    python benchmarks/rag.py --part quality [--answers 100]   # needs ../shared/data/squad_dev_v1.1.json
    python benchmarks/rag.py --part store                     # Wikipedia summaries corpus (offline package)

quality: the 2,067 SQuAD dev paragraphs are indexed with minilm (LanceDB, exact search); every one of the
10,565 questions retrieves; hit@k / recall@k / MRR / nDCG@10 per question's gold paragraph. On a sample of
questions SmolLM2 answers with the top-3 chunks and closed-book: exact match and token F1.

store: the Wikipedia corpus is indexed for real (how ingestion time splits between embedding and the store),
then its chunk vectors are grown to 100k with perturbed copies. At 10k and 100k: build throughput and query
latency (p50/p95) of LanceDB exact search, LanceDB IVF-PQ (recall@10 against exact), pgvector is not timed
here (it needs a server), and plain numpy brute force as the baseline, side by side in one run; and per
retrieval mode (``by_mode_ms``: dense, BM25, hybrid) on a store with the real chunk schema and texts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_dev_v1.1.json"


def quality(answers: int) -> None:
    from adaptlab.rag import RagIndex
    from adaptlab.rag.evaluate import evaluate, load_squad, write_results

    if not SQUAD.exists():
        raise SystemExit(f"{SQUAD} is not here")
    records, queries = load_squad(SQUAD)
    work = Path(tempfile.mkdtemp(prefix="adaptlab-rag-bench-"))
    corpus = work / "squad_paragraphs.jsonl"
    import json

    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    index = RagIndex(work / "store", progress=False)
    report = index.update([str(corpus)])
    result = evaluate(index, queries, answers=answers, k=3, progress=False)
    result["indexing"] = {"paragraphs": len(records), "chunks": report.chunks_written, "seconds": round(report.seconds, 1),
                          "embed_seconds": round(report.embed_seconds, 1), "store_seconds": round(report.store_seconds, 1)}
    result["store"] = "LanceDB (exact search)"
    write_results(result, work)
    save("rag_squad_dev", {"data": str(SQUAD.name), **result})
    shutil.copy(work / "results.md", Path(__file__).parent / "results" / "rag_squad_dev.md")


def _latencies(search, queries: np.ndarray) -> tuple[float, float, list]:
    times, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(search(query))
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.percentile(times, 50)), 3), round(1000 * float(np.percentile(times, 95)), 3), results


def store_speed(n_queries: int) -> None:
    import pyarrow as pa

    from adaptlab.rag import RagIndex
    from adaptlab.rag.store import LanceStore

    work = Path(tempfile.mkdtemp(prefix="adaptlab-rag-store-"))
    index = RagIndex(work / "wiki", progress=False)
    report = index.update(["wikipedia"])
    ingestion = {"articles": 10033, "chunks": report.chunks_written, "seconds": round(report.seconds, 1),
                 "embed_seconds": round(report.embed_seconds, 1), "store_seconds": round(report.store_seconds, 1),
                 "chunks_per_second": round(report.chunks_written / report.seconds, 1)}
    print(ingestion, flush=True)
    base = np.stack(index.store._chunk_table().to_arrow().column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    rng = np.random.default_rng(0)
    query_texts = [f"Tell me about {t}" for t in rng.choice(index.store._chunk_table().to_arrow().column("title").to_pylist(), n_queries)]
    questions = index.embedder.embed(query_texts)
    rows = []
    for size in (10_000, 100_000):
        copies = [base]
        while sum(len(c) for c in copies) < size:  # perturbed copies: neighbours, not duplicates
            noisy = base + rng.normal(scale=0.05, size=base.shape).astype(np.float32)
            copies.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
        vectors = np.concatenate(copies)[:size]
        matrix = vectors.copy()
        exact_p50, exact_p95, exact = _latencies(lambda q: np.argpartition(-(matrix @ q), 10)[:10], questions)
        exact_sets = [set(e.tolist()) for e in exact]

        store = LanceStore(work / f"synthetic-{size}")
        table = store.db.create_table("chunks", schema=pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), vectors.shape[1]))]))
        started = time.perf_counter()
        for start in range(0, size, 5000):
            part = vectors[start:start + 5000]
            table.add(pa.table({"id": np.arange(start, start + len(part)),
                                "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), part.shape[1])}))
        build = time.perf_counter() - started

        def lance(q, refine=None):
            query = table.search(q).distance_type("cosine").limit(10).select(["id", "_distance"])
            if refine:
                query = query.nprobes(32).refine_factor(refine)
            return {row["id"] for row in query.to_list()}

        flat_p50, flat_p95, flat = _latencies(lance, questions)
        flat_recall = float(np.mean([len(a & b) / 10 for a, b in zip(flat, exact_sets)]))
        started = time.perf_counter()
        table.create_index(metric="cosine", vector_column_name="vector", num_partitions=max(1, int(size ** 0.5) // 2),
                           num_sub_vectors=vectors.shape[1] // 8)
        index_seconds = time.perf_counter() - started
        ann_p50, ann_p95, ann = _latencies(lambda q: lance(q, refine=5), questions)
        ann_recall = float(np.mean([len(a & b) / 10 for a, b in zip(ann, exact_sets)]))
        row = {
            "chunks": size, "lancedb_build_rows_per_second": round(size / build), "ivf_pq_index_seconds": round(index_seconds, 1),
            "numpy_exact_ms": {"p50": exact_p50, "p95": exact_p95},
            "lancedb_exact_ms": {"p50": flat_p50, "p95": flat_p95}, "lancedb_exact_recall@10": round(flat_recall, 4),
            "lancedb_ivf_pq_ms": {"p50": ann_p50, "p95": ann_p95}, "lancedb_ivf_pq_recall@10": round(ann_recall, 4),
        }
        row["by_mode_ms"] = _mode_latencies(work / f"modes-{size}", index, vectors, query_texts, questions)
        rows.append(row)
        print(row, flush=True)
    save("rag_store_speed", {"embedder": "minilm", "queries": n_queries, "ingestion_wikipedia": ingestion, "results": rows,
                             "notes": "vectors beyond the real Wikipedia chunks are perturbed copies (gaussian noise 0.05, "
                                      "re-normalised); IVF-PQ searched with nprobes=32, refine_factor=5"})


def _mode_latencies(directory: Path, index, vectors: np.ndarray, query_texts: list[str], questions: np.ndarray) -> dict:
    """p50/p95 of one top-10 search per retrieval mode on a LanceDB store of ``len(vectors)`` real-schema chunks
    (the Wikipedia chunks' texts, cycled, with the perturbed vectors), BM25 over LanceDB's full-text index."""
    from adaptlab.rag.retrieval import FUSION_DEPTH, reciprocal_rank_fusion
    from adaptlab.rag.store import ChunkRow, LanceStore

    texts = index.store._chunk_table().to_arrow().select(["title", "text"]).to_pylist()
    store = LanceStore(directory)
    for start in range(0, len(vectors), 5000):
        part = range(start, min(start + 5000, len(vectors)))
        rows = [ChunkRow(str(i), f"doc-{i}", "", texts[i % len(texts)]["title"], 0, 0, 0, texts[i % len(texts)]["text"]) for i in part]
        store.add(rows, vectors[start:start + len(rows)])
    store.ensure_text_index()
    hybrid = lambda pair: reciprocal_rank_fusion([store.search(pair[1], FUSION_DEPTH), store.text_search(pair[0], FUSION_DEPTH)], [1.0, 1.0], 10)
    pairs = list(zip(query_texts, questions))
    timings = {"dense": _latencies(lambda pair: store.search(pair[1], 10), pairs),
               "bm25": _latencies(lambda pair: store.text_search(pair[0], 10), pairs),
               "hybrid": _latencies(hybrid, pairs)}
    return {mode: {"p50": p50, "p95": p95} for mode, (p50, p95, _) in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["quality", "store", "all"], default="all")
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    if args.part in ("quality", "all"):
        quality(args.answers)
    if args.part in ("store", "all"):
        store_speed(args.queries)


if __name__ == "__main__":
    main()
