"""Adapt a store to its own documents without labels: ``rag adapt``.

Hybrid retrieval's fixed 1:1 fusion can lose to its own better half on a new domain, and an embedder tuned on
another domain's questions ranks a user's passages worse than it could. ``adapt_store`` makes pseudo-queries from
the store's chunks (``pseudo_queries``: inverse cloze, and questions a ``generator`` writes), keeps the
pseudo-queries of a held-out part of the documents aside, and on those alone

1. scores every retrieval setting (dense, BM25, hybrid at several weight ratios) on a *scratch copy* of the
   store in which each held-out query's sentence is cut out of its chunk (so BM25 cannot find it verbatim);
2. fine-tunes the embedder on the other documents' pseudo-queries (``rag train-retriever``'s engine) and scores
   the settings again with it; the tuned embedder is kept only if it retrieves better;
3. with ``rerank``, chooses the re-ranker's depth (or no re-ranking) for the winning setting;

then re-embeds the store if the tuned embedder won and records the choice in the store's description
(``adapted``), where ``search``, ``ask``, ``eval``, ``reader-data`` and ``serve`` read their defaults. Labelled
queries (``queries``: ``rag eval --queries`` rows), when the user has some, do the choosing instead.

Re-embedding writes vectors in place, batch by batch, with its progress in the description: an interrupted
run is finished by running ``rag adapt`` again, and the store refuses searches until then (its vectors are of two
models). The scratch copies are LanceDB tables in a temporary directory, also for a PostgreSQL store: their BM25
is LanceDB's, which the choice for a PostgreSQL store's own text ranking only approximates.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import AdaptlabError
from adaptlab.params import check_fields, param
from adaptlab.progress import progress_bar
from adaptlab.rag.pseudo_queries import PseudoQuery, generated_questions, inverse_cloze, split_by_document
from adaptlab.rag.retrieval import Retrieval

#: (mode, dense weight, BM25 weight) tried, in order: a later setting must score higher to be chosen
CANDIDATES = (("hybrid", 1.0, 1.0), ("dense", 1.0, 1.0), ("bm25", 1.0, 1.0), ("hybrid", 1.0, 0.5), ("hybrid", 0.5, 1.0),
              ("hybrid", 1.0, 0.25), ("hybrid", 0.25, 1.0))
RERANK_DEPTHS = (5, 10, 20, 40)
RERANK_QUERIES = 100  # held-out queries the re-ranker's depth is chosen on (it reads depth chunks for each)
REEMBED_BATCH = 256
MIN_TRAINING_QUERIES = 32


@dataclass(kw_only=True)
class AdaptOptions:
    """How ``rag adapt`` makes its pseudo-queries, tunes the embedder and chooses the settings."""

    pseudo_queries: int = param(1000, "Inverse-cloze pseudo-queries made from the store's chunks (a sentence as the "
                                      "question, its chunk without it as the answer).", minimum=0, maximum=10**7)
    generator: str | None = param(None, "Also have this model write one question for each of --generated chunks: a "
                                        "causal LM (name, local path, sft artifact) or a served one (http://HOST:PORT/v1#MODEL).")
    generated: int = param(200, "Chunks the --generator writes a question for.", minimum=1, maximum=10**7)
    queries: str | None = param(None, "Your labelled queries (JSONL of {question, relevant} rows, as rag eval "
                                      "--queries): they choose the settings instead of held-out pseudo-queries.")
    held_out: float = param(0.3, "Fraction of the documents whose pseudo-queries are kept out of tuning to choose "
                                 "the settings on.", above=0, below=1)
    tune_embedder: bool = param(True, "Fine-tune the embedder on the other documents' pseudo-queries; the store is "
                                      "re-embedded with it only if it then retrieves better.")
    epochs: int = param(1, "Embedder tuning epochs.", minimum=1, maximum=100)
    batch_size: int = param(32, "Embedder tuning: pseudo-queries per step (the others in a batch are the negatives).",
                            minimum=2, maximum=4096)
    lr: float | None = param(None, "Embedder tuning: peak learning rate (default: rag train-retriever's).", above=0, maximum=1)
    rerank: str | None = param(None, "Also choose the depth of this re-ranker (likelihood[:MODEL] or "
                                     "cross-encoder:NAME), or no re-ranking, and make it the store's default.")
    seed: int = param(0, "Seed for drawing, splitting and tuning.", minimum=0, maximum=2**32 - 1)
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.generator is not None and not self.generator.strip():
            raise AdaptlabError("--generator is empty; give a causal LM, or leave the option out")
        if self.generator is not None:
            from adaptlab.rag.served import check_spec

            check_spec(self.generator, "--generator")
        if self.pseudo_queries == 0 and self.generator is None and self.queries is None:
            raise AdaptlabError("--pseudo-queries 0 leaves nothing to choose on: give --generator or --queries")
        if self.rerank is not None:
            from adaptlab.rag.rerank import check_rerank

            check_rerank(self.rerank)


def adapt_store(store, output: str | Path | None = None, *, overwrite: bool = False, **params) -> dict:
    """Adapt ``store`` (a directory, a postgresql:// URL or a ``VectorStore``) and return what was chosen and why
    (also written to the store's description as ``adapted``). ``output``: where the tuned embedder is written
    (needed when ``tune_embedder``); an embedder already there, tuned on the same pseudo-queries, is reused."""
    from adaptlab.rag.index import RagIndex

    options = AdaptOptions(**params)
    if options.tune_embedder and output is None:
        raise AdaptlabError("adapt_store needs output= (where the tuned embedder is written) unless tune_embedder=False")
    started = time.perf_counter()
    index = RagIndex(store, device=options.device, progress=options.progress)
    index.check_not_empty()
    if index.meta.get("reembedding"):  # an interrupted run chose already: finish its re-embedding
        return finish_reembedding(index, options.progress, options.device)
    rows, vectors = index.store.rows()
    seconds = {}
    tick = time.perf_counter()
    pseudo = inverse_cloze(rows, options.pseudo_queries, options.seed)
    if options.generator is not None:
        pseudo += generated_questions(rows, options.generated, _writer(options.generator, options.device), options.seed,
                                      options.progress)
    train, held = split_by_document(pseudo, options.held_out, options.seed)
    seconds["pseudo_queries"] = round(time.perf_counter() - tick, 1)
    judge, edits = _judging_queries(options, held)
    base_model = index.meta["embedding"]["model"]
    with tempfile.TemporaryDirectory(prefix="adaptlab-adapt-") as scratch_root:
        tick = time.perf_counter()
        scratch = _scratch(Path(scratch_root) / "base", index, base_model, rows, vectors, edits, options)
        candidates = _score_candidates(scratch, judge, "base", options.progress)
        seconds["choose_base"] = round(time.perf_counter() - tick, 1)
        tuned = None
        if options.tune_embedder and len(train) >= MIN_TRAINING_QUERIES:
            tick = time.perf_counter()
            tuned = _tune_embedder(base_model, train, held, output, overwrite, options)
            seconds["tune_embedder"] = round(time.perf_counter() - tick, 1)
            tick = time.perf_counter()
            tuned_scratch = _scratch(Path(scratch_root) / "tuned", index, tuned, rows, None, edits, options)
            candidates += _score_candidates(tuned_scratch, judge, "tuned", options.progress)
            seconds["choose_tuned"] = round(time.perf_counter() - tick, 1)
        best = max(candidates, key=lambda c: (c["recall@5"], c["mrr"]))  # max keeps the first of equals
        rerank = None
        if options.rerank is not None:
            tick = time.perf_counter()
            rerank = _choose_depth(tuned_scratch if best["embedder"] == "tuned" else scratch, judge, best, options)
            seconds["rerank"] = round(time.perf_counter() - tick, 1)
    adapted = {
        "retrieval": {key: best[key] for key in ("mode", "dense_weight", "bm25_weight")},
        "rerank": rerank,
        "chosen_on": {"queries": len(judge), "kind": "labelled queries" if options.queries else "held-out pseudo-queries",
                      "recall@5": best["recall@5"], "mrr": best["mrr"]},
        "pseudo_queries": {"train": len(train), "held_out": len(held),
                           "kinds": {kind: sum(q.kind == kind for q in pseudo) for kind in ("inverse_cloze", "generated")}},
        "embedder": {"base": base_model, "tuned": None if tuned is None else str(Path(tuned).absolute()),
                     "kept": best["embedder"] == "tuned"},
        "candidates": candidates,
        "seconds": seconds,
    }
    if best["embedder"] == "tuned":
        from adaptlab.rag.index import embedding_identity, store_embedder

        identity = embedding_identity(store_embedder(tuned, options.device))
        index.meta["reembedding"] = {**identity, "done": 0, "adapted": adapted}
        index.store.write_meta(index.meta)
        adapted = finish_reembedding(index, options.progress, options.device)
    else:
        index.meta["adapted"] = adapted
        index.store.write_meta(index.meta)
    adapted["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return adapted


def _judging_queries(options: AdaptOptions, held: list[PseudoQuery]) -> tuple[list, dict[str, str]]:
    """The queries that choose (``rag eval``'s ``Query``), and the chunk texts the scratch copies change: each
    held-out inverse-cloze query's chunk without its sentence."""
    from adaptlab.rag.evaluate import Query, load_queries

    if options.queries is not None:
        return load_queries(Path(options.queries)), {}
    if not held:
        raise AdaptlabError("no pseudo-query could be made from this store's chunks (they need sentences of 5-40 words "
                            "inside chunks of 25+ words): give --generator or --queries")
    edits = {q.chunk.id: q.passage for q in held if q.kind == "inverse_cloze"}
    return [Query(q.question, frozenset([q.document])) for q in held], edits


def _scratch(directory: Path, like, model: str, rows, vectors, edits: dict[str, str], options: AdaptOptions):
    """A LanceDB copy of the chunks of index ``like`` (``edits`` applied) embedded with ``model``: its vectors
    where given and unchanged, fresh ones otherwise."""
    from adaptlab.rag.index import RagIndex
    from adaptlab.rag.stores.lance import LanceStore

    scratch = RagIndex(LanceStore(directory), model=model, device=options.device, progress=False,
                       chunk_size=like.meta["chunk_size"], chunk_overlap=like.meta["chunk_overlap"])
    edited = [dataclasses.replace(row, text=edits.get(row.id, row.text)) for row in rows]
    if vectors is None:
        scratch.embedder.progress = options.progress  # its own bar, and its cache: re-embedding reuses these vectors
        vectors = scratch.embedder.embed([row.text for row in edited])
        scratch.embedder.progress = False
    elif edits:
        vectors = vectors.copy()
        changed = [i for i, row in enumerate(rows) if row.id in edits]
        vectors[changed] = scratch.embedder.embed([edited[i].text for i in changed])
    scratch.meta["dim"] = int(vectors.shape[1])
    scratch.store.write_meta(scratch.meta)
    scratch.store.add(edited, vectors)
    scratch.store.ensure_text_index()
    return scratch


def score_settings(index, queries, retrieval: Retrieval, vectors=None) -> dict:
    """``rag eval``'s retrieval metrics of ``index`` searched with ``retrieval`` (``vectors``: the queries'
    embeddings, computed here when not given)."""
    from adaptlab.rag.evaluate import rank_queries, retrieval_metrics

    if vectors is None:
        vectors = index.embedder.embed([q.question for q in queries])
    return retrieval_metrics(rank_queries(index, queries, vectors, retrieval)[0], queries)


def _score_candidates(index, queries, embedder: str, progress: bool) -> list[dict]:
    vectors = index.embedder.embed([q.question for q in queries])
    scored = []
    with progress_bar(f"scoring retrieval settings ({embedder} embedder)", len(CANDIDATES), progress) as advance:
        for mode, dense_weight, bm25_weight in CANDIDATES:
            metrics = score_settings(index, queries, Retrieval(mode, dense_weight, bm25_weight), vectors)
            scored.append({"embedder": embedder, "mode": mode, "dense_weight": dense_weight, "bm25_weight": bm25_weight,
                           "recall@5": metrics["recall@5"], "mrr": metrics["mrr"]})
            advance(1)
    return scored


def _tune_embedder(base_model: str, train: list[PseudoQuery], held: list[PseudoQuery], output, overwrite: bool,
                   options: AdaptOptions) -> str:
    """``rag train-retriever`` on the training pseudo-queries (a tenth of their documents validate); an embedder
    already at ``output`` tuned on the same queries with the same settings is reused."""
    import json

    from adaptlab.rag.retriever import PairSplit, QueryPassage, train_retriever

    fit, val = split_by_document(train, 0.1, options.seed)
    pairs = lambda queries: [QueryPassage(q.question, q.passage) for q in queries]
    split = PairSplit(pairs(fit), pairs(val), pairs(held), source="rag adapt pseudo-queries")
    params = {"model": base_model, "epochs": options.epochs, "batch_size": options.batch_size, "seed": options.seed,
              **({"lr": options.lr} if options.lr is not None else {})}
    manifest = Path(output) / "manifest.json"
    if manifest.is_file() and not overwrite:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        if recorded.get("data", {}).get("fingerprint") == split.describe()["fingerprint"] and all(
                recorded.get("params", {}).get(key) == value for key, value in params.items()):
            return str(output)
    from adaptlab.jobs import work_dir

    resume = work_dir(Path(output)).is_dir()  # an interrupted run's checkpoints: continued
    train_retriever(split, output, overwrite=overwrite, resume=resume, device=options.device, progress=options.progress, **params)
    return str(output)


def _choose_depth(index, queries, best: dict, options: AdaptOptions) -> dict:
    """The re-ranker's depth (or none) that scores best for the chosen setting, on at most ``RERANK_QUERIES``."""
    from adaptlab.rag.rerank import make_reranker

    queries = queries[:RERANK_QUERIES]
    retrieval = Retrieval(best["mode"], best["dense_weight"], best["bm25_weight"])
    vectors = index.embedder.embed([q.question for q in queries])
    scores = {0: score_settings(index, queries, retrieval, vectors)}
    index.reranker = make_reranker(options.rerank, options.device)
    with progress_bar("choosing the re-ranker's depth", len(RERANK_DEPTHS), options.progress) as advance:
        for depth in RERANK_DEPTHS:
            index.rerank_depth = depth
            scores[depth] = score_settings(index, queries, retrieval, vectors)
            advance(1)
    index.reranker = None
    depth = max(scores, key=lambda d: (scores[d]["recall@5"], scores[d]["mrr"]))  # the smallest of equals
    return {"spec": options.rerank if depth else None, "depth": depth or None, "queries": len(queries),
            "scores": {str(d): {"recall@5": s["recall@5"], "mrr": s["mrr"]} for d, s in scores.items()}}


def finish_reembedding(index, progress: bool = True, device: str | None = None) -> dict:
    """Embed the chunks not yet re-embedded with the description's ``reembedding`` model, batch by batch (the
    count done is written after each), then make that model the store's and its ``adapted`` settings current."""
    from adaptlab.rag.index import store_embedder

    meta, store = index.meta, index.store
    pending = meta["reembedding"]
    embedder = store_embedder(pending["model"], device)
    if embedder.ref.fingerprint() != pending["fingerprint"]:
        raise AdaptlabError(f"store '{store.location}' is half re-embedded with '{pending['model']}', which has changed "
                            "since: rebuild the store with `adaptlab rag index`")
    rows, _ = store.rows()
    rows.sort(key=lambda row: row.id)
    with progress_bar("re-embedding the store", len(rows), progress) as advance:
        advance(pending["done"])
        for start in range(pending["done"], len(rows), REEMBED_BATCH):
            batch = rows[start:start + REEMBED_BATCH]
            store.replace_vectors(batch, embedder.embed([row.text for row in batch]))
            pending["done"] = start + len(batch)
            store.write_meta(meta)
            advance(len(batch))
    adapted = pending.pop("adapted")
    meta["embedding"] = {key: value for key, value in pending.items() if key != "done"}
    meta["adapted"] = adapted
    del meta["reembedding"]
    store.write_meta(meta)
    store.compact()  # the replaced rows folded into the text index
    return adapted


def _writer(generator: str, device: str | None):
    """prompt -> reply: a served model's (``URL#MODEL``), or a local causal LM's (its chat template; greedy, short)."""
    from adaptlab.rag.served import is_served, reply

    if is_served(generator):
        return lambda prompt: reply(generator, prompt, 40, "--generator")
    from adaptlab.generation import Generator
    from adaptlab.sampling import SamplingOptions

    model = Generator(generator, device)
    options = SamplingOptions(max_new_tokens=40)
    return lambda prompt: model.generate(model.render_chat(prompt), options)
