"""``adaptlab rag``: index documents, search them, answer with citations, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from adaptlab.cli.common import (DEVICE, JsonOpt, OverwriteOpt, command, dataclass_options, default_output, err,
                                 format_params, given, opt, out, preflight)
from adaptlab.cli.rag_common import (Bm25WeightOpt, DenseWeightOpt, RerankDepthOpt, RerankOpt, RetrievalOpt, StoreOpt,
                                     WhereOpt, check_search, configure, existing_store)
from adaptlab.errors import AdaptlabError
from adaptlab.rag.retriever import RetrieverTuner
from adaptlab.training.options import TrainingOptions


def rag_index(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or the named corpus 'wikipedia'.")],
    store: StoreOpt = "rag-store",
    model: Annotated[Optional[str], typer.Option(help="Embedding model (default minilm; fixed once the store exists).")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Chunk length in the embedder's tokens (default 200).")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option(help="Tokens shared by consecutive chunks (default: a fifth of the size, at most 40).")] = None,
    ann: Annotated[bool, typer.Option("--ann", help="Also build an approximate (IVF-PQ) index, for large stores.", metavar="")] = False,
    device: DEVICE = None,
) -> None:
    """Add, replace and remove documents so the store matches PATHS; unchanged files are skipped."""
    from adaptlab.jobs import check_output_directory
    from adaptlab.rag import RagIndex

    from adaptlab.rag.chunking import check_chunking
    from adaptlab.rag.documents import check_indexable
    from adaptlab.rag.stores.base import META_FILE

    if any(not str(path).strip() for path in paths):
        raise AdaptlabError("a document path is empty; give files, folders or a named corpus")
    check_chunking(chunk_size, chunk_overlap)
    preflight({"device": device, "model": model})
    if not store.startswith(("postgresql://", "postgres://")):  # a store is updated in place: it may exist
        check_output_directory(store, [*paths, model], name="--store")
        if Path(store).is_dir() and any(Path(store).iterdir()) and not (Path(store) / META_FILE).is_file():
            raise AdaptlabError(f"--store '{store}' is a folder that is not an adaptlab store (no {META_FILE}); "
                                "give a new or empty folder, or the --store of an earlier `adaptlab rag index`")
    check_indexable(paths)  # before the embedder and the store load
    index = RagIndex(store, model=model, chunk_size=chunk_size, chunk_overlap=chunk_overlap, device=device)
    report = index.update(paths)
    if ann:
        index.store.build_ann_index()
    out.print(
        f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged, {len(report.failed)} failed; {report.chunks_written} chunks written in "
        f"{report.seconds:.1f} s (embedding {report.embed_seconds:.1f} s, store {report.store_seconds:.1f} s); "
        f"{index.store.count()} chunks in {index.store.location}"
    )
    for source, reason in report.failed:
        out.print(f"[yellow]skipped {source}: {reason}[/]")
    if report.failed and not (report.added or report.replaced or report.unchanged):
        source, reason = report.failed[0]
        raise AdaptlabError(f"no document could be indexed ({source}: {reason}); fix the file(s) above and re-run")


def rag_search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    store: StoreOpt = "rag-store",
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=2**31 - 1, help="How many chunks.")] = 5,
    retrieval: RetrievalOpt = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    where: WhereOpt = None,
    rerank: RerankOpt = None,
    rerank_depth: RerankDepthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank chunks for QUERY. Scores: dense (1 + cosine) / 2 in [0, 1]; bm25 the BM25 score; hybrid the fused
    reciprocal-rank score (higher is better in each, comparable only within one mode)."""
    from adaptlab.rag import RagIndex
    from adaptlab.rag.stores.base import describe

    if not query.strip():
        raise AdaptlabError("the query is empty; give the words to look for")
    check_search(retrieval, dense_weight, bm25_weight, where, rerank, rerank_depth)
    index = RagIndex(existing_store(store), progress=False)  # a damaged store fails here, before a model loads
    configure(index, retrieval, dense_weight, bm25_weight, where, rerank, rerank_depth)
    settings = index.retrieval
    hits = index.search(query, k)
    if as_json:  # one JSON document on stdout, for tools
        print(json.dumps({"query": query, "retrieval": settings.mode, "where": dict(settings.where),
                          "hits": [describe(hit) for hit in hits]}, ensure_ascii=False))
        return
    table = Table()
    for column in ("#", "score", "source", "text"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, hit in enumerate(hits, start=1):
        text = hit.chunk.text if len(hit.chunk.text) <= 200 else hit.chunk.text[:197] + "..."
        table.add_row(str(rank), f"{hit.score:.3f}", escape(_where(hit)), escape(text))  # document text is not markup
    out.print(table)


def _where(hit) -> str:
    chunk = hit.chunk
    locator = f" ({chunk.locator})" if chunk.locator and chunk.locator != chunk.title else ""
    return f"{chunk.title}{locator}\n{chunk.source}" if chunk.title else chunk.source


def rag_ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    store: StoreOpt = "rag-store",
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=2**31 - 1, help="Chunks given to the model as context (closed-book: --no-retrieval).")] = 3,
    model: Annotated[str, typer.Option(help="Causal LM that answers.")] = "smollm2-135m",
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Closed-book: answer without any context.", metavar="")] = False,
    retrieval: RetrievalOpt = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    where: WhereOpt = None,
    rerank: RerankOpt = None,
    rerank_depth: RerankDepthOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 160,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated.", metavar="")] = True,
    as_json: JsonOpt = False,
    device: DEVICE = None,
) -> None:
    """Retrieve the top-k chunks, answer QUESTION from them with the decoder, and cite them as [1], [2]."""
    from adaptlab.sampling import SamplingOptions
    from adaptlab.rag import Answerer, RagIndex
    from adaptlab.rag.stores.base import describe

    if not question.strip():
        raise AdaptlabError("the question is empty; give the question to answer")
    options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature)
    options.check()
    preflight({"device": device, "model": model}, decoder=True)
    check_search(retrieval, dense_weight, bm25_weight, where, rerank, rerank_depth)
    index = None if no_retrieval else RagIndex(existing_store(store), progress=False, device=device)
    if index is not None:
        configure(index, retrieval, dense_weight, bm25_weight, where, rerank, rerank_depth, device)
    answer, pieces = Answerer(index, model, device).stream(question, 0 if no_retrieval else k, options)
    if as_json or not stream:
        for _ in pieces:
            pass
    else:
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    if as_json:
        print(json.dumps({"question": question, **answer.summary(), "sources": [describe(h) for h in answer.sources]},
                         ensure_ascii=False))
        return
    if not stream:
        print(answer.text)
    for number, hit in enumerate(answer.sources, start=1):
        mark = "*" if number in answer.cited else " "
        out.print(f"{mark}[{number}] {escape(hit.chunk.title)} — {escape(hit.chunk.source)}"
                  f"{' ' + escape(hit.chunk.locator) if hit.chunk.locator else ''} (score {hit.score:.3f})", highlight=False)
    if answer.sources:
        out.print("(* = cited in the answer)", style="dim")
    if answer.invalid_citations:
        out.print(f"[yellow]removed {', '.join(f'[{n}]' for n in answer.invalid_citations)}: no such passage was retrieved "
                  f"(there are {len(answer.sources)})[/]", highlight=False)
    if answer.supported is False:
        out.print(f"[yellow]no retrieved passage supports this answer: {answer.support:.0%} of its words are in them; "
                  "it comes from the model, not your documents[/]", highlight=False)


def rag_eval(
    store: Annotated[Optional[str], typer.Option("--store", help="Store to evaluate (with --queries; default rag-store). With --squad: where its paragraphs are indexed (default OUTPUT/store).")] = None,
    squad: Annotated[Optional[Path], typer.Option(help="SQuAD-format JSON: its paragraphs are indexed into --store, its questions asked.")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="JSONL of {question, relevant: [ids], answers?} against an existing --store.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N questions.")] = None,
    answers: Annotated[int, typer.Option(help="Also generate answers for this many sampled questions (RAG and closed-book).")] = 0,
    k: Annotated[int, typer.Option("-k", "--k", max=2**31 - 1, help="Chunks of context per answer.")] = 3,
    model: Annotated[Optional[list[str]], typer.Option(help="Reader (causal LM or sft artifact) for the answers; repeat to compare readers side by side (the first also answers closed-book). Default smollm2-135m.")] = None,
    retrieval: Annotated[Optional[list[str]], typer.Option("--retrieval", help="dense, bm25 or hybrid; repeat to measure several side by side (the first one answers).")] = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    where: WhereOpt = None,
    rerank: RerankOpt = None,
    rerank_depth: RerankDepthOpt = None,
    judge: Annotated[Optional[str], typer.Option(help="With --answers: a model judges the first reader's answers' faithfulness to their passages and the passages' relevance: a causal LM, or an OpenAI-compatible URL with #MODEL (e.g. http://127.0.0.1:8000/v1#smollm2-135m).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for results.json and results.md (default: runs/<squad or queries file>-rag-eval).")] = None,
    device: DEVICE = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval hit@k / recall@k / MRR / nDCG@10, and answer exact match and F1 with vs without retrieval."""
    from adaptlab.rag import RagIndex
    from adaptlab.rag.evaluate import evaluate, index_squad, load_queries, write_results

    if (squad is None) == (queries is None):
        raise AdaptlabError("give exactly one of --squad FILE or --queries FILE")
    if answers < 0:
        raise AdaptlabError(f"--answers must be >= 0 (0: retrieval only), not {answers}")
    from adaptlab.rag.judge import check_judge, probe_judge

    check_judge(judge)
    if judge is not None and not answers:
        raise AdaptlabError("--judge judges answers: give --answers N as well")
    probe_judge(judge)
    for reader in model or [None]:
        preflight({"device": device, "model": reader}, decoder=True)
    for mode in retrieval or [None]:
        check_search(mode, dense_weight, bm25_weight, where, rerank, rerank_depth)
    output = Path(default_output(output, squad or queries, "rag-eval"))
    if output.exists() and not output.is_dir():
        raise AdaptlabError(f"--output '{output}' is a file; give a directory for results.json and results.md")
    from adaptlab.jobs import check_output_directory

    # with --squad the store is written (default OUTPUT/store); with --queries it is read, so never the output
    check_output_directory(output, [squad, queries, *([store or "rag-store"] if queries is not None else [])],
                           marker=("results.json", "store"))
    if squad is not None:
        index, query_list = index_squad(squad, output, store, device)
    else:
        query_list = load_queries(queries)
        index = RagIndex(existing_store(store or "rag-store"), device=device)
    configure(index, (retrieval or [None])[0], dense_weight, bm25_weight, where, rerank, rerank_depth, device)
    modes = list(dict.fromkeys(retrieval or [index.retrieval.mode]))
    if limit is not None:
        query_list = query_list[:limit]
    result = evaluate(index, query_list, answers=answers, k=k, model=list(dict.fromkeys(model or ["smollm2-135m"])),
                      device=device, modes=modes, judge=judge)
    write_results(result, output)
    summary = {key: result[key] for key in ("queries", "mode", "retrieval", "search_ms", "modes")}
    if "answers" in result:
        summary["answers"] = {key: result["answers"][key] for key in ("closed_book", "readers", "judged") if key in result["answers"]}
    if as_json:  # plain JSON on stdout, for tools; the human line goes to stderr
        print(json.dumps(summary, indent=2))
        err.print(f"results: {output / 'results.json'} and {output / 'results.md'}")
        return
    for mode, scores in result["modes"].items():
        metrics = ", ".join(f"{name} {value:.3f}" for name, value in scores["retrieval"].items())
        out.print(f"{result['queries']} questions, {mode}: {metrics}; search p50 {scores['search_ms']['p50']:.1f} ms")
    if "answers" in summary:
        closed = summary["answers"]["closed_book"]
        out.print(f"answers closed-book: em {closed['em']:.3f}, f1 {closed['f1']:.3f}")
        for row in summary["answers"]["readers"]:
            out.print(f"answers RAG with {row['model']}: em {row['em']:.3f}, f1 {row['f1']:.3f}, cites a passage "
                      f"{row['cited']:.0%}, the gold one {row['cited_relevant']:.0%}", highlight=False)
        if "judged" in summary["answers"]:
            judged = summary["answers"]["judged"]
            out.print(f"judged by {judged['judge']}: faithfulness {judged['faithfulness']:.3f}, context relevance "
                      f"{judged['context_relevance']:.3f}; agreement (AUC) {judged['agreement']}", highlight=False)
    out.print(f"results: {output / 'results.json'} and {output / 'results.md'}")


def rag_reader_data(
    squad: Annotated[Path, typer.Option(help="SQuAD-format JSON whose paragraphs --store holds (as rag eval --squad indexes them).")],
    store: StoreOpt = "rag-store",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Conversations JSONL to write (default: runs/<squad>-reader.jsonl).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=2**31 - 1, help="Chunks of context per example, as rag ask -k.")] = 3,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N questions.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Where the gold chunk goes when retrieval missed it.")] = 0,
    retrieval: RetrievalOpt = None,
    dense_weight: DenseWeightOpt = None,
    bm25_weight: Bm25WeightOpt = None,
    overwrite: OverwriteOpt = False,
    device: DEVICE = None,
) -> None:
    """Training conversations for an adapted reader: the retrieved chunks and the question, answered with the gold
    span and its passage number ("1889 [2]"). Train it with: adaptlab sft train --data FILE."""
    from adaptlab.jobs import check_output
    from adaptlab.rag import RagIndex
    from adaptlab.rag.evaluate import load_squad
    from adaptlab.rag.reader_data import reader_conversations, write_conversations

    check_search(retrieval, dense_weight, bm25_weight, None)
    output = Path(f"{default_output(None, squad, 'reader')}.jsonl") if output is None else output
    if output.is_dir():
        raise AdaptlabError(f"--output '{output}' is a directory; give the conversations file to write (.jsonl)")
    check_output(output, overwrite, inputs=[squad, store])  # never one of its inputs, even with --overwrite
    if not squad.is_file():
        raise AdaptlabError(f"--squad '{squad}' is not a file")
    _, questions = load_squad(squad)  # a malformed file fails here, before the index and its model load
    index = RagIndex(existing_store(store), progress=False, device=device)
    configure(index, retrieval, dense_weight, bm25_weight, None)
    rows, counts = reader_conversations(index, questions, k=k, seed=seed, limit=limit)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_conversations(rows, output)
    out.print(f"{counts['examples']} reader examples -> {output} (gold chunk inserted in {counts['gold_inserted']}, "
              f"{counts['skipped']} skipped: answer split across chunks). Next: adaptlab sft train --data {output}")


def train_retriever(values: dict) -> None:
    from adaptlab.jobs import check_output
    from adaptlab.rag.retriever import read_pairs, split_pairs
    from adaptlab.rag.retriever import train_retriever as train

    pairs, output, overwrite, as_json = values.pop("pairs"), values.pop("output"), values.pop("overwrite"), values.pop("as_json")
    if pairs is None:
        raise AdaptlabError("--pairs is required: SQuAD-format JSON or JSONL of {question, passage}")
    output = default_output(output, pairs, "retriever")
    RetrieverTuner(**given(values))  # a bad option fails before the data is read
    check_output(output, overwrite, inputs=[pairs, values.get("model")], trains=True)
    split = split_pairs(read_pairs(pairs), seed=values.get("seed") or 0, source=str(pairs))
    manifest = train(split, output, overwrite=overwrite, **given(values)).manifest.to_json()
    if as_json:
        print(json.dumps({"artifact": str(output), "metrics": manifest["metrics"], "cost": manifest["cost"]}, indent=2))
        return
    test = manifest["metrics"]["test"]
    out.print(f"retriever ({len(split.train)} training pairs) -> {output}")
    out.print(f"held-out passages: recall@1 {test['recall@1']:.3f}, recall@5 {test['recall@5']:.3f}, MRR {test['mrr']:.3f} "
              f"({test['questions']} questions over {test['passages']} passages); {format_params(manifest['cost'])} trainable "
              f"parameters; {manifest['cost']['train_seconds']:.0f} s. Build a store with it: adaptlab rag index PATH --model {output}")


_RETRIEVER = {
    "pairs": opt(Path, "(question, passage) pairs: SQuAD-format JSON, or JSONL of {\"question\", \"passage\"}.", "--pairs"),
    "output": opt(Path, "Artifact directory to write (default: runs/<pairs>-retriever).", "--output", "-o"),
    "overwrite": OverwriteOpt,
    **dataclass_options(RetrieverTuner, first=(TrainingOptions,)),
    "as_json": JsonOpt,
}
def add_train_retriever(app: typer.Typer) -> None:
    """The retriever family's command: ``rag train-retriever``."""
    app.command("train-retriever")(command(
        "rag_train_retriever", "Fine-tune the embedding model on (question, passage) pairs (in-batch negatives); held-out "
        "passages' recall@1/@5 and MRR. Rebuild a store with it: rag index --model ARTIFACT.", _RETRIEVER, train_retriever))


def add_tools(app: typer.Typer) -> None:
    """The group's own commands: indexing, search, answers, evaluation and reader data."""
    app.command("index")(rag_index)
    app.command("search")(rag_search)
    app.command("ask")(rag_ask)
    app.command("eval")(rag_eval)
    app.command("reader-data")(rag_reader_data)
