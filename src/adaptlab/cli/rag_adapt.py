"""``adaptlab rag adapt``: choose a store's retrieval settings (and tune its embedder) on its own documents."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from adaptlab.cli.common import JsonOpt, OverwriteOpt, command, dataclass_options, default_output, given, opt, out
from adaptlab.cli.rag_common import existing_store
from adaptlab.errors import AdaptlabError
from adaptlab.rag.adapt import AdaptOptions


def adapt(values: dict) -> None:
    from adaptlab.jobs import check_output
    from adaptlab.rag.adapt import adapt_store

    store, output, overwrite, as_json = values.pop("store"), values.pop("output"), values.pop("overwrite"), values.pop("as_json")
    options = AdaptOptions(**given(values))  # a bad option fails before the store or a model loads
    store = existing_store(store or "rag-store")
    if options.queries is not None and not Path(options.queries).is_file():
        raise AdaptlabError(f"--queries '{options.queries}' is not a file")
    from adaptlab.rag.served import is_served, probe

    if is_served(options.generator):
        probe(options.generator, "--generator")
    output = default_output(output, store.rstrip("/").split("#")[-1], "retriever") if options.tune_embedder else None
    if output is not None and not Path(output, "manifest.json").is_file():  # one there is reused if tuned on the same
        check_output(output, overwrite, inputs=[store, options.queries], trains=True)  # pseudo-queries, else refused
    adapted = adapt_store(store, output, overwrite=overwrite, **given(values))
    if as_json:
        print(json.dumps(adapted, indent=2))
        return
    chosen, on = adapted["retrieval"], adapted["chosen_on"]
    weights = f" (dense {chosen['dense_weight']:g} : BM25 {chosen['bm25_weight']:g})" if chosen["mode"] == "hybrid" else ""
    embedder = adapted["embedder"]
    out.print(f"store {store}: {chosen['mode']}{weights}, embedder "
              f"{'tuned (' + embedder['tuned'] + '), store re-embedded' if embedder['kept'] else embedder['base'] + ' (kept)'}; "
              f"recall@5 {on['recall@5']:.3f}, MRR {on['mrr']:.3f} on {on['queries']} {on['kind']}", highlight=False)
    if adapted["rerank"] is not None:
        rerank = adapted["rerank"]
        out.print(f"re-ranking: {rerank['spec'] + ' to depth ' + str(rerank['depth']) if rerank['depth'] else 'none (no depth helped)'}")
    baseline = next(c for c in adapted["candidates"] if c["embedder"] == "base" and c["mode"] == "hybrid"
                    and c["dense_weight"] == c["bm25_weight"])
    out.print(f"fixed hybrid 1:1 with the base embedder scored recall@5 {baseline['recall@5']:.3f}; "
              f"{adapted['seconds']['total']:.0f} s in all. search, ask, eval and serve now use these settings.")


_ADAPT = {
    "store": opt(str, "Store to adapt: a LanceDB directory or a postgresql:// URL (default rag-store).", "--store"),
    **dataclass_options(AdaptOptions),
    "output": opt(Path, "Where the tuned embedder is written (default: runs/<store>-retriever).", "--output", "-o"),
    "overwrite": OverwriteOpt,
    "as_json": JsonOpt,
}


def add_adapt(app: typer.Typer) -> None:
    app.command("adapt")(command(
        "rag_adapt", "Adapt a store to its own documents without labels: pseudo-queries from its chunks (inverse cloze; "
        "--generator: written questions) choose the dense/BM25 fusion, the re-ranker depth and whether a tuned embedder "
        "retrieves better; the store records the choice and search, ask, eval and serve use it.", _ADAPT, adapt))
