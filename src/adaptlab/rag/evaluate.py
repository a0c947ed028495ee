"""Measure an index: retrieval quality (hit@k, recall@k, MRR, nDCG@10) and answer quality (exact match and
token F1, with retrieval vs closed-book on the same questions).

Relevance is judged per *document*, not per chunk: hits are collapsed to their document (a SQuAD paragraph,
a JSONL record, a file) keeping the best rank, so a long document split into chunks is not counted twice.
Queries: a SQuAD-format file (each question's gold document is its paragraph) or a JSONL file of
``{"question": ..., "relevant": [ids], "answers": [optional gold answers]}``, where an id is a JSONL
record's ``id``, a file path, or a file name.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptlab._io import write_json
from adaptlab.data.files import read_jsonl
from adaptlab.errors import AdaptlabError
from adaptlab.metrics import exact_match, token_f1
from adaptlab.progress import progress_bar
from adaptlab.schemas import QueryRow, SquadFile, json_value, parse, read_text

KS = (1, 3, 5, 10)
DEPTH = 50  # chunks retrieved per query before collapsing to documents


@dataclass(frozen=True)
class Query:
    question: str
    relevant: frozenset[str]
    answers: tuple[str, ...] = ()


def read_squad(path: str | Path, option: str) -> SquadFile:
    """A SQuAD-format JSON file checked against its schema (``adaptlab.schemas.SquadFile``)."""
    where = f"{option} '{path}'"
    return parse(SquadFile, json_value(read_text(path, where), where), where)


def load_squad(path: Path) -> tuple[list[dict], list[Query]]:
    """SQuAD v1.1 JSON -> (paragraph records for indexing, queries). Paragraph ids: ``<title>#<n>``."""
    records, queries = [], []
    for article in read_squad(path, "--squad").data:
        for number, paragraph in enumerate(article.paragraphs):
            pid = f"{article.title}#{number}"
            records.append({"id": pid, "title": article.title.replace("_", " "), "text": paragraph.context})
            for qa in paragraph.qas:
                queries.append(Query(qa.question, frozenset([pid]), tuple(a.text for a in qa.answers)))
    return records, queries


def load_queries(path: Path) -> list[Query]:
    """JSONL of ``QueryRow`` (``{"question", "relevant": [ids], "answers"?}``), blank lines skipped."""
    source = f"--queries '{path}'"
    queries = []
    for number, value in read_jsonl(path, source):
        row = parse(QueryRow, value, f"{source} line {number}")
        queries.append(Query(row.question, frozenset(row.relevant), tuple(row.answers)))
    if not queries:
        raise AdaptlabError(f"{source} holds no queries")
    return queries


def document_ids(hit) -> set[str]:
    chunk = hit.chunk
    ids = {chunk.source, Path(chunk.source).name}
    if chunk.locator:
        ids.add(chunk.locator)
    return ids


def ranked_documents(hits) -> list[set[str]]:
    """Hits collapsed to documents in rank order (each document once, at its best rank)."""
    seen, ranked = set(), []
    for hit in hits:
        key = (hit.chunk.source, hit.chunk.locator)
        if key not in seen:
            seen.add(key)
            ranked.append(document_ids(hit))
    return ranked


def retrieval_metrics(ranked: list[list[set[str]]], queries: list[Query]) -> dict:
    """Binary relevance per relevant id: a document matching an id already found adds nothing (several pages
    of one PDF named by its file name count once), so recall and nDCG stay within [0, 1]."""
    metrics = {f"hit@{k}": [] for k in KS} | {f"recall@{k}": [] for k in KS} | {"mrr": [], "ndcg@10": []}
    for documents, query in zip(ranked, queries):
        found, gains = set(), []  # gains[i] = 1 when rank i+1 finds a new relevant id
        for ids in documents:
            new = (ids & query.relevant) - found
            gains.append(1.0 if new else 0.0)
            found |= new
        for k in KS:
            metrics[f"hit@{k}"].append(float(any(gains[:k])))
            metrics[f"recall@{k}"].append(len(set().union(*(ids & query.relevant for ids in documents[:k]))) / len(query.relevant))
        first = next((rank for rank, gain in enumerate(gains, start=1) if gain), None)
        metrics["mrr"].append(0.0 if first is None else 1.0 / first)
        dcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains[:10], start=1))
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(query.relevant), 10) + 1))
        metrics["ndcg@10"].append(dcg / ideal)
    return {name: round(float(np.mean(values)), 4) for name, values in metrics.items()}


def rank_queries(index, queries: list[Query], vectors, retrieval, label: str = "retrieving",
                 progress: bool = False) -> tuple[list[list[set[str]]], list[float]]:
    """Each query's documents in rank order as ``retrieval`` finds them (``vectors``: the queries' embeddings,
    None for BM25), and each search's seconds."""
    ranked, latencies = [], []
    with progress_bar(label, len(queries), progress) as advance:
        for query, vector in zip(queries, vectors):
            tick = time.perf_counter()
            ranked.append(ranked_documents(index.retrieve(query.question, vector, DEPTH, retrieval)))
            latencies.append(time.perf_counter() - tick)
            advance(1)
    return ranked, latencies


def clean_answer(text: str) -> str:
    """Strip citations and a trailing period: '[1] Denver Broncos.' -> 'Denver Broncos'."""
    if not text.strip():
        return ""
    lines = re.sub(r"\s*\[\d+\]\s*", " ", text).strip().splitlines()
    return lines[0].strip().rstrip(".").strip() if lines else ""


def evaluate(index, queries: list[Query], *, answers: int = 0, k: int = 3, model: str | list[str] = "smollm2-135m",
             max_new_tokens: int = 32, seed: int = 0, device: str | None = None, progress: bool = True,
             modes: list[str] | None = None, judge: str | None = None) -> dict:
    """Retrieval metrics on every query, for each of ``modes`` (default: the index's own retrieval mode; the
    first is the result's headline); on ``answers`` sampled queries with gold answers, EM/F1 with the top-``k``
    chunks the index's own retrieval finds as context, and closed-book; with ``judge`` (``adaptlab.rag.judge``), the
    first reader's answers' faithfulness and the passages' relevance as that model judges them."""
    import dataclasses

    from adaptlab.rag.retrieval import Retrieval

    modes = modes or [index.retrieval.mode]
    started = time.perf_counter()
    vectors = index.embedder.embed([q.question for q in queries]) if set(modes) != {"bm25"} else [None] * len(queries)
    embed_seconds = time.perf_counter() - started
    by_mode = {}
    for mode in modes:
        retrieval: Retrieval = dataclasses.replace(index.retrieval, mode=mode)
        ranked, latencies = rank_queries(index, queries, vectors, retrieval, f"retrieving ({mode})", progress)
        by_mode[mode] = {"retrieval": retrieval_metrics(ranked, queries),
                         "search_ms": {"p50": round(1000 * float(np.percentile(latencies, 50)), 2),
                                       "p95": round(1000 * float(np.percentile(latencies, 95)), 2)}}
    result = {
        "embedding_model": index.meta["embedding"]["model"],
        "store": index.store.location,
        "chunks": index.store.count(),
        "queries": len(queries),
        "mode": modes[0],
        **by_mode[modes[0]],
        "modes": by_mode,
        "query_embedding_ms": round(1000 * embed_seconds / len(queries), 2),
    }
    answerable = [q for q in queries if q.answers]
    if answers and answerable:
        result["answers"] = answer_quality(index, answerable, answers, k, model, max_new_tokens, seed, device, progress, judge)
    return result


def answer_quality(index, queries, n, k, model, max_new_tokens, seed, device, progress, judge: str | None = None) -> dict:
    """Closed-book (the first reader) and RAG with every reader in ``model`` (a name or a list: the base model and
    adapted readers side by side) on the same sampled questions and the same retrieved chunks. Besides EM and F1:
    how often a RAG answer cites a passage at all, and how often it cites one from the question's gold document."""
    from adaptlab.sampling import SamplingOptions
    from adaptlab.rag.answer import Answerer

    readers = [model] if isinstance(model, str) else list(model)
    rng = np.random.default_rng(seed)
    sample = [queries[i] for i in sorted(rng.choice(len(queries), min(n, len(queries)), replace=False))]
    contexts = [index.search(query.question, k) for query in sample]
    options = SamplingOptions(max_new_tokens=max_new_tokens)
    rows, texts = [], {}
    for number, reader in enumerate(readers):
        answerer = Answerer(index, reader, device)
        modes = ("rag", "closed_book") if number == 0 else ("rag",)
        scores = {mode: {"em": [], "f1": []} for mode in modes} | {"cited": [], "cited_relevant": []}
        with progress_bar(f"answering with {reader} ({' and '.join(m.replace('_', '-') for m in modes)})", len(sample),
                          progress) as advance:
            for query, hits in zip(sample, contexts):
                answers = {"rag": answerer.ask(query.question, k, options, short=True, hits=hits)}
                if number == 0:
                    answers["closed_book"] = answerer.ask(query.question, 0, options, short=True, hits=[])
                for mode, answer in answers.items():
                    text = clean_answer(answer.text)
                    texts.setdefault((mode, reader), []).append(text)
                    scores[mode]["em"].append(exact_match(text, query.answers))
                    scores[mode]["f1"].append(token_f1(text, query.answers))
                cited = answers["rag"].cited
                scores["cited"].append(float(bool(cited)))
                scores["cited_relevant"].append(float(any(document_ids(hits[c - 1]) & query.relevant for c in cited)))
                advance(1)
        mean = lambda values: round(float(np.mean(values)), 4)
        rows.append({"model": reader, "em": mean(scores["rag"]["em"]), "f1": mean(scores["rag"]["f1"]),
                     "cited": mean(scores["cited"]), "cited_relevant": mean(scores["cited_relevant"])})
        if number == 0:
            closed = {"em": mean(scores["closed_book"]["em"]), "f1": mean(scores["closed_book"]["f1"])}
    samples = [{"question": query.question, "gold": list(query.answers), "closed_book": texts[("closed_book", readers[0])][i],
                "rag": texts[("rag", readers[0])][i], "readers": {r: texts[("rag", r)][i] for r in readers}}
               for i, query in enumerate(sample[:8])]
    return {"n": len(sample), "k": k, "generator": readers[0], "rag": rows[0], "closed_book": closed, "readers": rows,
            "f1_gain_from_retrieval": round(rows[0]["f1"] - closed["f1"], 4), "samples": samples,
            **({"judged": _judged(judge, device, sample, contexts, texts[("rag", readers[0])])} if judge else {})}


def _judged(spec: str, device, queries, contexts, answers) -> dict:
    """The judge's faithfulness and context relevance, with its agreement with the gold answers and passages."""
    from adaptlab.rag.judge import judge_answers, make_judge

    samples = [{"question": q.question, "answer": answer, "passages": [hit.chunk.text for hit in hits],
                "gold_passage": [bool(document_ids(hit) & q.relevant) for hit in hits], "f1": token_f1(answer, q.answers)}
               for q, hits, answer in zip(queries, contexts, answers)]
    return judge_answers(make_judge(spec, device), samples)


def write_results(result: dict, directory: Path) -> None:
    """results.json and results.md side by side."""
    write_json(directory / "results.json", result)
    names = list(result["retrieval"])
    lines = [f"# Retrieval evaluation: {result['queries']} queries, {result['chunks']} chunks, embedder {result['embedding_model']}",
             "", "| mode | " + " | ".join(names) + " | search p50 ms | p95 ms |", "|" + "---|" * (len(names) + 3)]
    for mode, scores in result["modes"].items():
        latency = scores["search_ms"]
        lines.append(f"| {mode} | " + " | ".join(f"{scores['retrieval'][n]:.4f}" for n in names)
                     + f" | {latency['p50']} | {latency['p95']} |")
    lines += ["", "Search latency: the store's search (and fusion) only; the query's embedding is not included.", ""]
    if "answers" in result:
        a = result["answers"]
        lines += [f"## Answers ({a['n']} questions, top-{a['k']} chunks)", "",
                  "| reader | exact match | token F1 | cites a passage | cites the gold one |", "|---|---|---|---|---|",
                  f"| closed-book ({a['generator']}) | {a['closed_book']['em']:.4f} | {a['closed_book']['f1']:.4f} | | |"]
        lines += [f"| RAG ({r['model']}) | {r['em']:.4f} | {r['f1']:.4f} | {r['cited']:.3f} | {r['cited_relevant']:.3f} |"
                  for r in a["readers"]]
        if "judged" in a:
            j = a["judged"]
            lines += ["", f"Judged by {j['judge']} (first reader, {j['n']} answers): faithfulness {j['faithfulness']:.4f}, "
                      f"context relevance {j['context_relevance']:.4f}; agreement with the gold passages and answers "
                      f"(ROC AUC, 0.5 = none): {j['agreement']}"]
        readers = [r["model"] for r in a["readers"]]
        lines += ["", "| question | gold | closed-book | " + " | ".join(f"RAG ({r})" for r in readers) + " |",
                  "|" + "---|" * (3 + len(readers))]
        cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
        lines += ["| " + " | ".join(cell(c) for c in [s["question"], s["gold"][0], s["closed_book"], *s["readers"].values()]) + " |"
                  for s in a["samples"]]
    from adaptlab._io import atomic_file

    with atomic_file(directory / "results.md") as handle:
        handle.write("\n".join(lines) + "\n")


def index_squad(squad: Path, output: Path, store: str | None, device: str | None, retrieval=None, model: str | None = None):
    """Index a SQuAD file's paragraphs (as ``OUTPUT/squad_paragraphs.jsonl``) into ``store`` (default
    ``OUTPUT/store``, never the user's own store) with embedding ``model`` (default: minilm, or the store's) and
    return ``(index, queries)``."""
    from adaptlab._io import atomic_file
    from adaptlab.rag.index import RagIndex

    records, queries = load_squad(squad)
    corpus = Path(output) / "squad_paragraphs.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(corpus) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    index = RagIndex(store or str(Path(output) / "store"), model=model, device=device, retrieval=retrieval)
    index.update([str(corpus)])
    return index, queries
