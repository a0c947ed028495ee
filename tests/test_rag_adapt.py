"""rag adapt: pseudo-queries from a store's own chunks choose its retrieval settings and may tune its embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptlab.errors import AdaptlabError
from conftest import SHARED_DATA
from test_rag import pgvector_url  # noqa: F401  (the PostgreSQL server fixture)
from test_rag_answers import served_llama  # noqa: F401  (adaptlab serve on a tiny Llama, on a free port)

WORDS = ("amber basalt cedar delta ember fjord granite harbor iris juniper kelp lagoon meadow nickel orchid "
         "prairie quartz raven saffron tundra umber valley willow xenon yarrow zephyr").split()


def write_corpus(path: Path, records: int = 40) -> Path:
    """JSONL records of seven sentences each; every record has words of its own, so BM25 can find its sentences."""
    rows = []
    for n in range(records):
        own = [f"{WORDS[(n + i) % len(WORDS)]}{n}" for i in range(7)]
        sentences = [f"The {own[i]} district keeps {WORDS[(3 * n + i) % len(WORDS)]} stores near the {own[(i + 1) % 7]} "
                     f"road and the old {WORDS[(n + 2 * i) % len(WORDS)]} mill." for i in range(7)]
        rows.append({"id": f"doc{n}", "title": f"Place {n}", "text": " ".join(sentences)})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# -- pseudo-queries ------------------------------------------------------------------------------------------------
def test_inverse_cloze_cuts_the_sentence_out_and_never_takes_one_a_neighbour_also_holds(tiny_bert):
    from adaptlab.models import load_tokenizer
    from adaptlab.models.loading import resolve_model
    from adaptlab.rag.chunking import Chunker
    from adaptlab.rag.pseudo_queries import inverse_cloze, sentences, split_by_document
    from adaptlab.rag.stores.base import ChunkRow

    text = " ".join(f"Sentence number {i} talks about topic {i} with several extra words here." for i in range(60))
    chunker = Chunker(load_tokenizer(resolve_model(str(tiny_bert))), 60, 20, max_tokens=512)
    rows = [ChunkRow(f"c{doc}-{i}", f"doc{doc}", "", "", i, c.start, c.end, c.text)
            for doc in range(3) for i, c in enumerate(chunker.split(text))]
    assert len(rows) > 12
    queries = inverse_cloze(rows, 1000, seed=0)
    assert len(queries) >= len(rows) // 2 and len({q.chunk.id for q in queries}) == len(queries)  # one per chunk
    for query in queries:
        assert query.question not in query.passage and query.question in query.chunk.text
        assert 5 <= len(query.question.split()) <= 40 and len(query.passage.split()) >= 20
        start = query.chunk.start + query.chunk.text.index(query.question)
        end = start + len(query.question)
        overlapping = [r for r in rows if r.source == query.chunk.source and r.id != query.chunk.id
                       and r.start < end and start < r.end]
        assert not overlapping  # a neighbour chunk holding the sentence would hand BM25 the answer verbatim
    assert [q.question for q in inverse_cloze(rows, 1000, seed=0)] == [q.question for q in queries]  # seeded
    train, held = split_by_document(queries, 0.34, seed=0)
    assert train and held and not {q.document for q in train} & {q.document for q in held}
    assert sentences("One two. Three four? Five") == [(0, 8), (9, 20), (21, 25)]


def test_generated_questions_keep_one_line_questions_and_their_whole_chunk():
    from adaptlab.rag.pseudo_queries import QUESTION_PROMPT, generated_questions
    from adaptlab.rag.stores.base import ChunkRow

    rows = [ChunkRow(f"c{i}", "doc", f"r{i}", "", 0, 0, 30, f"Passage {i} about the harbor of town {i}.") for i in range(6)]
    seen = []

    def write(prompt: str) -> str:
        seen.append(prompt)
        number = prompt.rsplit("Passage ", 1)[1].split()[0]
        return f"Where is the harbor of town {number}?\nExtra line" if int(number) % 2 else "Not a question"

    queries = generated_questions(rows, 6, write, progress=False)
    assert all(p.startswith(QUESTION_PROMPT.split("{")[0]) for p in seen) and len(seen) == 6
    assert sorted(q.chunk.id for q in queries) == ["c1", "c3", "c5"]  # replies that are not a question are dropped
    assert all(q.passage == q.chunk.text and q.kind == "generated" and q.question.endswith("?") for q in queries)


# -- the command ------------------------------------------------------------------------------------------------
def test_rag_adapt_chooses_records_and_reuses_its_settings(cli, tmp_path, tiny_bert):
    from adaptlab.rag import RagIndex

    corpus = write_corpus(tmp_path / "places.jsonl")
    store = tmp_path / "store"
    assert cli("rag", "index", corpus, "--store", store, "--model", tiny_bert, "--chunk-size", "100")[0] == 0
    code, out, err = cli("rag", "adapt", "--store", store, "--no-tune-embedder", "--json")
    assert code == 0, err
    adapted = json.loads(out)
    assert adapted["chosen_on"]["kind"] == "held-out pseudo-queries" and adapted["pseudo_queries"]["held_out"] >= 5
    assert len(adapted["candidates"]) == 7 and adapted["embedder"]["kept"] is False
    best = max(adapted["candidates"], key=lambda c: (c["recall@5"], c["mrr"]))
    assert adapted["chosen_on"]["recall@5"] == best["recall@5"]
    bm25 = next(c for c in adapted["candidates"] if c["mode"] == "bm25")
    assert bm25["recall@5"] > 0.5  # the sentence is cut from its chunk, but the record's other sentences share its words
    meta = json.loads((store / "adaptlab-index.json").read_text())
    assert meta["adapted"]["retrieval"] == adapted["retrieval"]
    index = RagIndex(store, progress=False)  # reloaded: the stored choice is the default
    assert (index.retrieval.mode, index.retrieval.dense_weight, index.retrieval.bm25_weight) == tuple(adapted["retrieval"].values())
    code, out, err = cli("rag", "search", "granite district", "--store", store, "--json")
    assert code == 0 and json.loads(out)["retrieval"] == adapted["retrieval"]["mode"], err
    code, out, err = cli("rag", "search", "granite district", "--store", store, "--retrieval", "dense", "--json")
    assert code == 0 and json.loads(out)["retrieval"] == "dense"  # an option given still wins

    queries = tmp_path / "labelled.jsonl"
    queries.write_text("".join(json.dumps({"question": f"granite{n} district", "relevant": [f"doc{n}"]}) + "\n" for n in range(10)))
    code, out, err = cli("rag", "adapt", "--store", store, "--no-tune-embedder", "--queries", queries, "--json")
    assert code == 0, err
    chosen_on = json.loads(out)["chosen_on"]
    assert chosen_on["queries"] == 10 and chosen_on["kind"] == "labelled queries"


def test_a_tuned_embedder_re_embeds_the_store_resumably_and_guards_it(cli, tmp_path, tiny_bert):
    from adaptlab.rag import RagIndex
    from adaptlab.rag.adapt import adapt_store

    corpus = write_corpus(tmp_path / "places.jsonl")
    store = tmp_path / "store"
    assert cli("rag", "index", corpus, "--store", store, "--model", tiny_bert, "--chunk-size", "100")[0] == 0
    adapted = adapt_store(str(store), tmp_path / "retriever", progress=False, batch_size=8)
    assert adapted["embedder"]["tuned"] and {c["embedder"] for c in adapted["candidates"]} == {"base", "tuned"}
    assert "tune_embedder" in adapted["seconds"]
    assert json.loads((tmp_path / "retriever" / "manifest.json").read_text())["strategy"] == "retriever"

    # whichever won, re-embedding with the tuned one is what a win does: stopped half-way, then finished by a rerun
    index = RagIndex(store, progress=False)
    rows, before = index.store.rows()
    index.meta["reembedding"] = {**_identity(tmp_path / "retriever"), "done": 0, "adapted": adapted}
    index.store.write_meta(index.meta)
    index.store.replace_vectors(rows[:5], before[:5] * 0 + 1 / before.shape[1] ** 0.5)  # some vectors already new
    code, _, err = cli("rag", "search", "granite", "--store", store)
    assert code == 2 and "rag adapt" in err and "again to finish" in err  # vectors of two models: refused
    code, out, err = cli("rag", "adapt", "--store", store, "--json")
    assert code == 0, err
    meta = json.loads((store / "adaptlab-index.json").read_text())
    assert "reembedding" not in meta and meta["embedding"]["model"] == str(tmp_path / "retriever")
    from adaptlab.embeddings import Embedder

    rows, after = RagIndex(store, progress=False).store.rows()
    tuned = Embedder(str(tmp_path / "retriever"), "mean", normalize=True, progress=False)
    assert abs(after - tuned.embed([row.text for row in rows])).max() < 1e-4  # every chunk, the first five too
    with pytest.raises(AdaptlabError, match="was built with embedding model"):
        RagIndex(store, model=str(tiny_bert))  # queries embedded by the base model are refused
    assert cli("rag", "search", "granite", "--store", store, "--json")[0] == 0


def _identity(model) -> dict:
    from adaptlab.rag.index import embedding_identity, store_embedder

    return embedding_identity(store_embedder(str(model)))


def test_a_generator_local_or_served_writes_pseudo_queries(cli, tmp_path, tiny_bert, tiny_llama, served_llama):
    corpus = write_corpus(tmp_path / "places.jsonl", records=12)
    store = tmp_path / "store"
    assert cli("rag", "index", corpus, "--store", store, "--model", tiny_bert, "--chunk-size", "100")[0] == 0
    for generator in (tiny_llama, f"{served_llama}#tiny"):
        code, out, err = cli("rag", "adapt", "--store", store, "--generator", generator, "--generated", "4", "--no-tune-embedder", "--json")
        assert code == 0, err  # a random-weight model rarely writes a question: they are dropped, inverse cloze remains
        kinds = json.loads(out)["pseudo_queries"]["kinds"]
        assert kinds["inverse_cloze"] > 0 and 0 <= kinds["generated"] <= 4


def test_bad_adapt_options_exit_2_with_one_line(cli, tmp_path, tiny_bert):
    corpus = write_corpus(tmp_path / "places.jsonl", records=4)
    store = tmp_path / "store"
    assert cli("rag", "index", corpus, "--store", store, "--model", tiny_bert, "--chunk-size", "100")[0] == 0
    for args, message in ((("--held-out", "1.5"), "--held-out"), (("--rerank", "magic"), "--rerank"),
                          (("--pseudo-queries", "0", "--no-tune-embedder"), "--generator or --queries"),
                          (("--queries", tmp_path / "missing.jsonl"), "is not a file"),
                          (("--generator", "http://127.0.0.1:9/v1"), "#MODEL"),
                          (("--generator", "http://127.0.0.1:9/v1#m"), "is the server running")):
        code, _, err = cli("rag", "adapt", "--store", store, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli("rag", "adapt", "--store", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "squad_dev_v1.1.json").exists(), reason="../shared/data/squad_dev_v1.1.json is not here")
def test_a_real_store_adapted_with_smollm2_questions_is_what_eval_then_uses(cli, tmp_path):
    """Two SQuAD dev articles with the real MiniLM, SmolLM2 writing questions too: what adapt chooses is what
    `rag eval --queries` then searches with, and it still retrieves the articles' real questions' paragraphs.
    (Whether the choice beats the fixed fusion is benchmarks/rag_adapt.py's question: on SQuAD it does not.)"""
    squad = json.loads((SHARED_DATA / "squad_dev_v1.1.json").read_text(encoding="utf-8"))
    articles = squad["data"][20:22]
    subset = tmp_path / "squad2.json"
    subset.write_text(json.dumps({"version": squad["version"], "data": articles}))
    code, out, err = cli("rag", "eval", "--squad", subset, "--output", tmp_path / "eval", "--json")
    assert code == 0, err
    code, out, err = cli("rag", "adapt", "--store", tmp_path / "eval" / "store", "--no-tune-embedder", "--generator",
                         "smollm2-135m", "--generated", "8", "--json")
    assert code == 0, err
    adapted = json.loads(out)
    assert adapted["pseudo_queries"]["kinds"]["inverse_cloze"] >= 20
    assert 0 <= adapted["pseudo_queries"]["kinds"]["generated"] <= 8  # SmolLM2-135M's replies are rarely questions
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"question": qa["question"], "relevant": [f"{a['title']}#{n}"]}) + "\n"
                               for a in articles for n, p in enumerate(a["paragraphs"]) for qa in p["qas"]))
    code, out, err = cli("rag", "eval", "--queries", queries, "--store", tmp_path / "eval" / "store", "-o", tmp_path / "e2", "--json")
    assert code == 0, err
    assert json.loads(out)["mode"] == adapted["retrieval"]["mode"] and json.loads(out)["retrieval"]["recall@5"] > 0.8


def test_a_postgresql_store_is_read_re_embedded_and_adapted_like_a_lancedb_one(pgvector_url, tmp_path, tiny_bert):
    import numpy as np

    from adaptlab.rag import RagIndex
    from adaptlab.rag.adapt import adapt_store

    index = RagIndex(pgvector_url + "#adapt", model=str(tiny_bert), chunk_size=100, progress=False)
    index.update(str(write_corpus(tmp_path / "places.jsonl", records=12)))
    rows, vectors = index.store.rows()
    assert len(rows) == index.store.count() and vectors.shape == (len(rows), index.meta["dim"])
    index.store.replace_vectors(rows[:3], np.ones((3, vectors.shape[1]), np.float32) / vectors.shape[1] ** 0.5)
    again = dict(zip([r.id for r in index.store.rows()[0]], index.store.rows()[1]))
    assert np.allclose(again[rows[0].id], 1 / vectors.shape[1] ** 0.5) and np.allclose(again[rows[5].id], vectors[5], atol=1e-6)
    assert index.store.count() == len(rows)  # replaced, not added
    adapted = adapt_store(pgvector_url + "#adapt", tune_embedder=False, progress=False)
    assert RagIndex(pgvector_url + "#adapt", progress=False).retrieval.mode == adapted["retrieval"]["mode"]
