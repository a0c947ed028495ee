"""RAG: documents, chunking, the stores, incremental and crash-safe indexing, search, ask, evaluation."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptlab.errors import AdaptlabError
from conftest import SHARED_DATA, require

PGVECTOR_SERVER = Path(__file__).parent / "pgvector_server"


def make_pdf(path: Path, text: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.text(0.05, 0.5, text)
    figure.savefig(path)
    plt.close(figure)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "cats.md").write_text("# Cats\n\nCats are small carnivorous mammals. They purr when they are content.\n")
    (root / "eiffel.txt").write_text("The Eiffel Tower stands in Paris. It was completed in 1889 for the World's Fair.")
    (root / "sub" / "rust.html").write_text(
        "<html><head><title>Rust</title><script>var secret = 1;</script></head>"
        "<body><p>Rust is a systems programming language focused on memory safety.</p></body></html>")
    (root / "facts.jsonl").write_text(
        '{"id": "moon", "title": "Moon", "text": "The Moon orbits the Earth about every 27 days."}\n'
        '{"id": "mars", "text": "Mars is called the red planet because of iron oxide dust."}\n')
    make_pdf(root / "plants.pdf", "Photosynthesis turns sunlight into chemical energy in plants.")
    (root / ".hidden.txt").write_text("never indexed")
    (root / "notes.docx").write_bytes(b"unsupported, ignored in folders")
    return root


# -- documents and chunks --------------------------------------------------------------------------------
def test_every_document_type_is_read_with_titles(corpus):
    from adaptlab.rag.documents import find_sources

    files, roots = find_sources([str(corpus)])
    records = {Path(f.source).name: f.records() for f in files}
    assert sorted(records) == ["cats.md", "eiffel.txt", "facts.jsonl", "plants.pdf", "rust.html"]
    assert records["cats.md"][0].title == "Cats"
    rust = records["rust.html"][0]
    assert rust.title == "Rust" and "memory safety" in rust.text and "secret" not in rust.text
    assert [(r.locator, r.title) for r in records["facts.jsonl"]] == [("moon", "Moon"), ("mars", "facts mars")]
    assert "Photosynthesis" in records["plants.pdf"][0].text and records["plants.pdf"][0].locator == "page 1"
    assert roots == [str(corpus.resolve())]


def test_bad_documents_raise_readable_reasons(tmp_path):
    from adaptlab.rag.documents import SourceFile

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 truncated")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    for path, reason in ((broken, "unreadable PDF"), (bad_jsonl, "line 2"), (latin, "not UTF-8")):
        with pytest.raises(ValueError, match=reason):
            SourceFile(str(path), path).records()


def test_chunks_are_exact_spans_within_the_token_budget():
    from transformers import AutoTokenizer

    from adaptlab.models import resolve_model
    from adaptlab.rag.chunking import Chunker

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").path)
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))
    chunker = Chunker(tokenizer, size=40, overlap=8, max_tokens=256)
    chunks = chunker.split(text)
    assert len(chunks) > 5
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 40
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for previous, current in zip(chunks, chunks[1:]):
        assert previous.start < current.start < previous.end  # consecutive chunks overlap
    assert sum(c.text.endswith(".") for c in chunks[:-1]) >= len(chunks[:-1]) // 2  # breaks at sentence ends
    assert Chunker(tokenizer, 40, 0).split("   ") == []
    with pytest.raises(AdaptlabError, match="exceeds what the embedding model reads"):
        Chunker(tokenizer, size=300, overlap=10, max_tokens=256)
    with pytest.raises(AdaptlabError, match="chunk-overlap"):
        Chunker(tokenizer, size=40, overlap=30)


# -- indexing ----------------------------------------------------------------------------------------------
def chunk_ids(index) -> set[str]:
    return {hit.chunk.id for hit in index.search("anything at all", 1000)}


def check_incremental(store, corpus, model):
    from adaptlab.rag import RagIndex

    index = RagIndex(store, model=model, chunk_size=32, chunk_overlap=4, progress=False)
    report = index.update([str(corpus)])
    assert len(report.added) == 5 and report.failed == [] and report.chunks_written == index.store.count() >= 6
    first = chunk_ids(index)

    again = RagIndex(store, progress=False).update([str(corpus)])
    assert again.unchanged == 5 and again.chunks_written == 0 and not again.added

    (corpus / "cats.md").write_text("# Cats\n\nCats sleep for most of the day.\n")
    (corpus / "facts.jsonl").unlink()
    (corpus / "new.txt").write_text("Honey never spoils if it is sealed.")
    index = RagIndex(store, progress=False)
    changed = index.update([str(corpus)])
    assert [Path(s).name for s in changed.replaced] == ["cats.md"] and [Path(s).name for s in changed.removed] == ["facts.jsonl"]
    assert [Path(s).name for s in changed.added] == ["new.txt"] and changed.unchanged == 3
    texts = {hit.chunk.text for hit in index.search("x", 1000)}
    assert any("Cats sleep for most of the day." in t for t in texts) and not any("purr" in t or "Mars" in t for t in texts)
    assert len(chunk_ids(index) & first) >= 3  # unchanged files kept their chunks
    return index


def test_incremental_index_on_lancedb(corpus, tmp_path, tiny_bert):
    check_incremental(str(tmp_path / "store"), corpus, str(tiny_bert))


def test_search_finds_the_right_document_with_the_real_embedder(corpus, tmp_path, cli):
    code, out, err = cli("rag", "index", corpus, "--store", tmp_path / "store", "--chunk-size", "64")
    assert code == 0, err
    assert "5 added" in out
    code, out, _ = cli("rag", "search", "When was the tower in Paris finished?", "--store", tmp_path / "store", "-k", "3", "--json")
    hits = json.loads(out)["hits"]
    assert Path(hits[0]["source"]).name == "eiffel.txt" and "1889" in hits[0]["text"]
    assert all(0 <= h["score"] <= 1 for h in hits) and hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]
    code, out, _ = cli("rag", "search", "which planet is red", "--store", tmp_path / "store", "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["locator"] == "mars"
    for mode in ("bm25", "hybrid"):  # a rare exact term: found by words alone, and by the fusion
        code, out, err = cli("rag", "search", "iron oxide", "--store", tmp_path / "store", "-k", "2", "--retrieval", mode, "--json")
        assert code == 0, err
        reply = json.loads(out)
        assert reply["retrieval"] == mode and reply["hits"][0]["locator"] == "mars"


def test_corrupt_documents_are_skipped_and_reported(corpus, tmp_path, cli, tiny_bert):
    (corpus / "broken.pdf").write_bytes(b"this is not a pdf")
    code, out, _ = cli("rag", "index", corpus, "--store", tmp_path / "store", "--model", tiny_bert)
    assert code == 0 and "5 added" in out and "1 failed" in out and "broken.pdf" in out


def test_a_store_refuses_another_embedding_model(corpus, tmp_path, cli, tiny_bert):
    assert cli("rag", "index", corpus, "--store", tmp_path / "store", "--model", tiny_bert)[0] == 0
    code, _, err = cli("rag", "index", corpus, "--store", tmp_path / "store", "--model", "minilm")
    assert code == 2 and "was built with embedding model" in err and len(err.strip().splitlines()) == 1


def test_killed_indexing_leaves_a_usable_store_that_the_next_run_completes(corpus, tmp_path, tiny_bert):
    """kill -9 after the second store write of many; the store still answers, and a re-run ends with exactly
    the chunks of an uninterrupted run."""
    for i in range(40):
        (corpus / f"note{i:02d}.txt").write_text(f"Note {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 5 + 1))
    script = f"""
import os, signal
import adaptlab.rag.index as index_module
from adaptlab.rag import RagIndex
index_module.FLUSH_CHUNKS = 6
index = RagIndex({str(tmp_path / 'killed')!r}, model={str(tiny_bert)!r}, chunk_size=16, chunk_overlap=2, progress=False)
writes = []
original = index.store.add
def add(rows, vectors):
    original(rows, vectors)
    writes.append(1)
    if len(writes) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
index.store.add = add
index.update([{str(corpus)!r}])
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    from adaptlab.rag import RagIndex

    partial = RagIndex(tmp_path / "killed", progress=False)
    assert 0 < partial.store.count() and len(partial.store.documents()) < 45
    assert partial.search("fox", 3)  # usable
    resumed = partial.update([str(corpus)])
    assert resumed.unchanged >= 1 and resumed.chunks_written > 0
    clean = RagIndex(tmp_path / "clean", model=str(tiny_bert), chunk_size=16, chunk_overlap=2, progress=False)
    clean.update([str(corpus)])
    assert chunk_ids(partial) == chunk_ids(clean) and partial.store.count() == clean.store.count()


def test_bad_rag_input_exits_2_with_one_line(cli, tmp_path, corpus):
    cases = [
        (("rag", "index", tmp_path / "missing", "--store", tmp_path / "s"), "does not exist"),
        (("rag", "index", corpus / "notes.docx", "--store", tmp_path / "s"), "unsupported file type"),
        (("rag", "search", "q", "--store", tmp_path / "nowhere"), "does not exist"),
        (("rag", "index", corpus, "--store", tmp_path / "s2", "--chunk-size", "1000"), "exceeds what the embedding model reads"),
        (("rag", "eval", "--store", tmp_path / "s"), "exactly one of"),
        (("rag", "eval", "--queries", tmp_path / "missing.jsonl", "--store", corpus), "cannot be read"),
    ]
    for args, needle in cases:
        code, _, err = cli(*args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


# -- evaluation ------------------------------------------------------------------------------------------
def test_retrieval_metrics_match_hand_computed_values():
    from adaptlab.rag.evaluate import Query, retrieval_metrics

    ranked = [[{"a"}, {"b"}, {"c"}], [{"x"}, {"y"}, {"g"}], [{"p"}, {"q"}, {"r"}]]
    queries = [Query("1", frozenset({"a"})), Query("2", frozenset({"g", "h"})), Query("3", frozenset({"z"}))]
    m = retrieval_metrics(ranked, queries)
    assert m["hit@1"] == pytest.approx(1 / 3, abs=1e-4) and m["hit@3"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["recall@3"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-4)
    ndcg_2 = (1 / 2) / (1 + 1 / 1.5849625)  # relevant at rank 3; ideal has two relevant at ranks 1, 2
    assert m["ndcg@10"] == pytest.approx((1 + ndcg_2 + 0) / 3, abs=1e-4)
    pages = retrieval_metrics([[{"manual.pdf"}, {"manual.pdf"}, {"other"}]], [Query("q", frozenset({"manual.pdf"}))])
    assert pages["recall@3"] == 1.0 and pages["ndcg@10"] == 1.0  # three pages of one relevant file count once


def test_squad_answer_normalisation_exact_match_and_f1():
    from adaptlab.metrics import exact_match, token_f1
    from adaptlab.rag.evaluate import clean_answer

    assert exact_match("The Denver Broncos!", ("Denver Broncos",)) == 1.0
    assert token_f1("Denver Broncos team", ("Denver Broncos",)) == pytest.approx(0.8)
    assert token_f1("Carolina", ("Denver Broncos", "Broncos")) == 0.0
    assert clean_answer("Denver Broncos [1].\nMore text") == "Denver Broncos"
    assert clean_answer("[1]") == "" and clean_answer("   ") == ""


def tiny_squad(path: Path) -> Path:
    data = {"data": [
        {"title": "Eiffel_Tower", "paragraphs": [{"context": "The Eiffel Tower was completed in 1889 in Paris.", "qas": [
            {"question": "When was the Eiffel Tower completed?", "answers": [{"text": "1889"}]}]}]},
        {"title": "Honey", "paragraphs": [{"context": "Sealed honey does not spoil, even after thousands of years.", "qas": [
            {"question": "Does sealed honey spoil?", "answers": [{"text": "does not spoil"}]}]}]},
        {"title": "Mars", "paragraphs": [{"context": "Mars is red because of iron oxide on its surface.", "qas": [
            {"question": "Why is Mars red?", "answers": [{"text": "iron oxide"}]}]}]},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_rag_eval_on_a_squad_file(cli, tmp_path):
    squad = tiny_squad(tmp_path / "squad.json")
    code, out, err = cli("rag", "eval", "--squad", squad, "--store", tmp_path / "store", "--output", tmp_path / "eval")
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["queries"] == 3 and result["retrieval"]["hit@1"] == 1.0 and result["retrieval"]["mrr"] == 1.0
    assert "| hit@1 |" in (tmp_path / "eval" / "results.md").read_text()
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"question": "red planet iron", "relevant": ["Mars#0"]}\n')
    code, out, err = cli("rag", "eval", "--queries", queries, "--store", tmp_path / "store", "--output", tmp_path / "eval2", "--json")
    assert code == 0 and json.loads((tmp_path / "eval2" / "results.json").read_text())["retrieval"]["hit@1"] == 1.0
    assert json.loads(out)["retrieval"]["hit@1"] == 1.0 and "results:" in err  # plain JSON on stdout, the human line on stderr


@pytest.mark.slow
def test_ask_answers_from_the_retrieved_chunk_and_lists_sources(cli, corpus, tmp_path):
    assert cli("rag", "index", corpus, "--store", tmp_path / "store")[0] == 0
    code, out, err = cli("rag", "ask", "In which year was the Eiffel Tower completed?", "--store", tmp_path / "store",
                         "-k", "1", "--max-new-tokens", "40", "--json")
    assert code == 0, err
    reply = json.loads(out.strip().splitlines()[-1])
    assert "1889" in reply["answer"] and Path(reply["sources"][0]["source"]).name == "eiffel.txt" and len(reply["sources"]) == 1
    assert reply["supported"] is True and reply["invalid_citations"] == []  # 1889 is the passage's own word
    code, out, err = cli("rag", "ask", "What do cats do when content?", "--store", tmp_path / "store", "-k", "3",
                         "--max-new-tokens", "30")
    assert code == 0 and "[1] Cats" in out and "[3]" in out  # streamed answer, then the numbered sources
    code, out, _ = cli("rag", "ask", "In which year was the Eiffel Tower completed?", "--no-retrieval", "--max-new-tokens", "20", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["sources"] == []
    assert json.loads(out.strip().splitlines()[-1])["supported"] is None  # closed-book: no passage to be supported by
    # the real model as the judge of its own answers (rag eval --judge)
    code, out, err = cli("rag", "eval", "--squad", tiny_squad(tmp_path / "squad.json"), "--answers", "3", "--judge", "smollm2-135m",
                         "-o", tmp_path / "judged", "--json")
    assert code == 0, err
    judged = json.loads(out)["answers"]["judged"]
    assert judged["n"] == 3 and 0 < judged["context_relevance"] < 1 and 0 <= judged["faithfulness"] <= 1


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "squad_dev_v1.1.json").exists(), reason="../shared/data/squad_dev_v1.1.json is not here")
def test_retrieval_on_squad_dev(cli, tmp_path):
    """The first 8 articles of SQuAD dev (the whole file is the benchmark's): real questions, real paragraphs."""
    squad = json.loads((SHARED_DATA / "squad_dev_v1.1.json").read_text(encoding="utf-8"))
    subset = tmp_path / "squad8.json"
    subset.write_text(json.dumps({"version": squad["version"], "data": squad["data"][:8]}), encoding="utf-8")
    code, _, err = cli("rag", "eval", "--squad", subset, "--limit", "200", "--store", tmp_path / "store", "--output", tmp_path / "eval",
                       "--retrieval", "dense", "--retrieval", "bm25", "--retrieval", "hybrid")
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["queries"] == 200 and result["retrieval"]["recall@5"] > 0.6 and result["chunks"] >= 300
    recall = {mode: scores["retrieval"]["recall@5"] for mode, scores in result["modes"].items()}
    assert recall["bm25"] > 0.6 and recall["hybrid"] >= max(recall["dense"], recall["bm25"]) - 0.02  # fusion keeps the better one

    # the real embedder adapted on other articles' questions: a store built with it still retrieves as well
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"version": squad["version"], "data": squad["data"][12:14]}), encoding="utf-8")
    code, out, err = cli("rag", "train-retriever", "--pairs", pairs, "--epochs", "1", "--batch-size", "16", "--passage-length", "128", "-o", tmp_path / "retriever", "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"]["test"]["recall@5"] > 0.7
    code, out, err = cli("rag", "index", tmp_path / "eval" / "squad_paragraphs.jsonl", "--store", tmp_path / "adapted", "--model", tmp_path / "retriever")
    assert code == 0, err
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"question": qa["question"], "relevant": [f"{a['title']}#{n}"]}) + "\n"
                               for a in squad["data"][:8] for n, p in enumerate(a["paragraphs"]) for qa in p["qas"][:1]))
    code, out, err = cli("rag", "eval", "--queries", queries, "--store", tmp_path / "adapted", "--output", tmp_path / "eval2", "--json")
    assert code == 0, err
    assert json.loads(out)["retrieval"]["recall@5"] > 0.6


# -- the server-backed store -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pgvector_url(tmp_path_factory):
    """A real PostgreSQL server (PGlite: PostgreSQL 18 compiled to WebAssembly, with pgvector 0.8) on loopback."""
    script = PGVECTOR_SERVER / "node_modules" / "@electric-sql" / "pglite-socket" / "dist" / "scripts" / "server.js"
    require(shutil.which("node") is not None and script.exists(),
            "node or tests/pgvector_server/node_modules missing (make test installs them with npm ci)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path_factory.mktemp("pgdata")
    server = subprocess.Popen(["node", str(script), f"--db={data}", f"--port={port}", "--host=127.0.0.1",
                               "--extensions=@electric-sql/pglite-pgvector:vector", "--max-connections=8"], cwd=PGVECTOR_SERVER,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    for line in server.stdout:
        if "listening" in line or time.time() > deadline:
            break
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    server.terminate()
    server.wait(timeout=10)


def test_pgvector_store_indexes_incrementally(pgvector_url, corpus, tiny_bert):
    check_incremental(pgvector_url + "#incremental", corpus, str(tiny_bert))


def test_pgvector_and_lancedb_return_the_same_ranking_and_scores(pgvector_url, corpus, tmp_path, tiny_bert):
    from adaptlab.rag import RagIndex

    results = []
    for store in (str(tmp_path / "lance"), pgvector_url + "#same"):
        index = RagIndex(store, model=str(tiny_bert), chunk_size=32, chunk_overlap=4, progress=False)
        index.update([str(corpus)])
        results.append([(h.chunk.id, round(h.score, 4)) for h in index.search("a planet and its moon", 5)])
    assert results[0] == results[1]


# -- retrieval modes and filters -----------------------------------------------------------------------------
def test_reciprocal_rank_fusion_matches_hand_computed_scores():
    from adaptlab.rag.retrieval import Retrieval, parse_filters, reciprocal_rank_fusion
    from adaptlab.rag.stores.base import ChunkRow, Hit

    hit = lambda name: Hit(0.0, ChunkRow(name, "s", "", "", 0, 0, 1, name))
    dense, words = [hit("a"), hit("b"), hit("c")], [hit("c"), hit("d")]
    fused = reciprocal_rank_fusion([dense, words], [1.0, 1.0], k=4)
    assert [h.chunk.id for h in fused] == ["c", "a", "b", "d"]  # c: 1/63 + 1/61 beats a: 1/61
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61) and fused[3].score == pytest.approx(1 / 62)
    assert [h.chunk.id for h in reciprocal_rank_fusion([dense, words], [1.0, 0.0], k=2)] == ["a", "b"]  # weight 0: dense alone
    assert parse_filters(["topic=Science", "source=a=b.md"]) == (("topic", "Science"), ("source", "a=b.md"))
    for bad, needle in ((["topic"], "must be FIELD=VALUE"), (["a=1", "a=2"], "more than once")):
        with pytest.raises(AdaptlabError, match=needle):
            parse_filters(bad)
    for kwargs, needle in (({"mode": "sparse"}, "--retrieval must be one of"), ({"bm25_weight": -1}, "--bm25-weight"),
                           ({"mode": "hybrid", "dense_weight": 0, "bm25_weight": 0}, "both 0")):
        with pytest.raises(AdaptlabError, match=needle):
            Retrieval(**kwargs)


def check_modes_and_filters(store, corpus, model):
    """BM25 finds a rare exact term; filters on a column and on a JSONL field apply before the top-k is cut."""
    from adaptlab.rag import RagIndex
    from adaptlab.rag.retrieval import Retrieval

    (corpus / "more.jsonl").write_text(
        '{"id": "venus", "text": "Venus is the hottest planet.", "topic": "astronomy", "year": 1962}\n'
        '{"id": "lava", "text": "Basalt forms when lava cools quickly.", "topic": "geology"}\n')
    index = RagIndex(store, model=model, chunk_size=32, chunk_overlap=4, progress=False)
    index.update([str(corpus)])
    top = lambda query, **kw: [h.chunk.locator or Path(h.chunk.source).name for h in index.search(query, 3, Retrieval(**kw))]
    assert top("photosynthesis sunlight", mode="bm25")[0] == "page 1"
    assert top("photosynthesis sunlight", mode="hybrid")[0] == "page 1"
    assert top("planet", mode="bm25", where=(("topic", "astronomy"),)) == ["venus"]
    assert top("planet", mode="dense", where=(("topic", "geology"),)) == ["lava"]
    assert top("planet", mode="hybrid", where=(("year", "1962"),)) == ["venus"]
    assert set(top("anything", mode="dense", where=(("source", str(corpus / "cats.md")),))) == {"cats.md"}
    assert top("planet", mode="bm25", where=(("topic", "nothing"),)) == []
    (corpus / "later.txt").write_text("Obsidian is volcanic glass.")  # added after the text index was made
    index.update([str(corpus)])
    assert top("obsidian glass", mode="bm25") == ["later.txt"]
    return index


def test_bm25_hybrid_and_filters_on_lancedb(corpus, tmp_path, tiny_bert):
    from adaptlab.rag import RagIndex
    from adaptlab.rag.retrieval import Retrieval

    index = check_modes_and_filters(str(tmp_path / "store"), corpus, str(tiny_bert))
    index.store._chunk_table().drop_columns(["metadata"])  # a store built before record fields were kept
    old = RagIndex(str(tmp_path / "store"), progress=False)
    assert old.search("cats", 1, Retrieval(where=(("title", "Cats"),)))[0].chunk.title == "Cats"
    with pytest.raises(AdaptlabError, match="built before record fields were kept"):
        old.search("planet", 1, Retrieval(where=(("topic", "astronomy"),)))


def test_pgvector_text_search_and_filters(pgvector_url, corpus, tiny_bert):
    check_modes_and_filters(pgvector_url + "#modes", corpus, str(tiny_bert))


def test_rag_eval_measures_modes_side_by_side_and_bad_options_exit_2(cli, tmp_path):
    squad = tiny_squad(tmp_path / "squad.json")
    code, out, err = cli("rag", "eval", "--squad", squad, "--output", tmp_path / "eval", "--retrieval", "bm25",
                         "--retrieval", "hybrid", "--retrieval", "dense", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["mode"] == "bm25" and list(summary["modes"]) == ["bm25", "hybrid", "dense"]
    assert all(scores["retrieval"]["hit@1"] == 1.0 for scores in summary["modes"].values())
    assert "| hybrid |" in (tmp_path / "eval" / "results.md").read_text()
    for args, needle in ((["--retrieval", "sparse"], "--retrieval must be one of"), (["--where", "topic"], "FIELD=VALUE"),
                         (["--dense-weight", "-1", "--retrieval", "hybrid"], "--dense-weight must be")):
        code, _, err = cli("rag", "search", "x", "--store", tmp_path / "eval" / "store", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


# -- the adapted retriever -----------------------------------------------------------------------------------
def write_pairs(path: Path, topics: int = 30) -> Path:
    rows = [{"question": f"What is special about item {n} {kind}?", "passage": f"Item {n} is a {kind} thing, number {n} of the list."}
            for n, kind in zip(range(topics), ["red", "blue", "green", "round"] * topics) for _ in range(3)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_tuned_retriever_is_an_artifact_stores_are_built_with_and_guard(cli, tmp_path, tiny_bert, corpus):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from adaptlab.embeddings import Embedder

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    code, out, err = cli("rag", "train-retriever", "--pairs", pairs, "--model", tiny_bert, "--epochs", "1", "--batch-size", "8",
                         "-o", tmp_path / "retriever", "--json")
    assert code == 0, err
    reply = json.loads(out)
    test = reply["metrics"]["test"]
    assert test["questions"] == 9 and test["passages"] == 3 and 0 <= test["recall@1"] <= test["recall@5"] == 1  # 3 held-out passages
    manifest = json.loads((tmp_path / "retriever" / "manifest.json").read_text())
    assert manifest["strategy"] == "retriever" and manifest["base_model"]["name"] == str(tiny_bert)
    texts = ["Item 3 is a round thing.", "What is item 1?"]
    ours = Embedder(str(tmp_path / "retriever"), "mean", normalize=True, cache=False, progress=False).embed(texts)
    theirs = SentenceTransformer(str(tmp_path / "retriever" / "model"), device="cpu").encode(texts)
    assert np.allclose(ours, theirs, atol=1e-4)  # plain sentence-transformers reads the artifact the same way
    assert cli("rag", "index", corpus, "--store", tmp_path / "store", "--model", tmp_path / "retriever")[0] == 0
    code, out, err = cli("rag", "search", "red planet", "--store", tmp_path / "store", "--json")
    assert code == 0 and json.loads(out)["hits"], err
    code, _, err = cli("rag", "index", corpus, "--store", tmp_path / "store", "--model", tiny_bert)
    assert code == 2 and "was built with embedding model" in err  # the base model is another embedder
    code, _, err = cli("rag", "train-retriever", "--pairs", pairs, "--model", tiny_bert, "-o", tmp_path / "retriever")
    assert code == 2 and "--overwrite" in err
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    code, _, err = cli("rag", "train-retriever", "--pairs", tmp_path / "bad.jsonl", "-o", tmp_path / "r2")
    assert code == 2 and "line 1" in err and len(err.strip().splitlines()) == 1


# -- the adapted reader ----------------------------------------------------------------------------------------
def synthetic_squad(path: Path, articles: int = 12) -> Path:
    """Articles of one paragraph each, one question each, answers that are spans of the paragraph."""
    data = {"data": [{"title": f"Town_{n}", "paragraphs": [{
        "context": f"Town {n} lies on river {n + 100}. Its mayor is called Person{n}. It was founded in year {1800 + n}.",
        "qas": [{"question": f"When was town {n} founded?", "answers": [{"text": f"{1800 + n}"}]}]}]} for n in range(articles)]}
    path.write_text(json.dumps(data))
    return path


def test_reader_data_sft_and_side_by_side_readers(cli, tmp_path, tiny_llama):
    squad = synthetic_squad(tmp_path / "squad.json")
    code, _, err = cli("rag", "eval", "--squad", squad, "--output", tmp_path / "eval")  # builds eval/store with minilm
    assert code == 0, err
    code, out, err = cli("rag", "reader-data", "--squad", squad, "--store", tmp_path / "eval" / "store", "-k", "2",
                         "-o", tmp_path / "reader.jsonl")
    assert code == 0 and "12 reader examples" in out, err
    rows = [json.loads(line) for line in (tmp_path / "reader.jsonl").read_text().splitlines()]
    for row, n in zip(rows, range(12)):
        system, user, assistant = (m["content"] for m in row["messages"])
        answer, cite = assistant.rsplit(" [", 1)
        passage = user.removeprefix("Context:\n").split("\n\n")[int(cite.rstrip("]")) - 1]  # the cited passage holds the answer
        assert answer == str(1800 + n) and answer in passage and passage.startswith(f"[{cite}")
    code, _, err = cli("rag", "reader-data", "--squad", squad, "--store", tmp_path / "eval" / "store", "-o", tmp_path / "reader.jsonl")
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("sft", "train", "--data", tmp_path / "reader.jsonl", "--model", tiny_llama, "--epochs", "1",
                       "-o", tmp_path / "reader")
    assert code == 0, err
    code, out, err = cli("rag", "eval", "--squad", squad, "--store", tmp_path / "eval" / "store", "--output", tmp_path / "eval2",
                         "--answers", "4", "--model", tiny_llama, "--model", tmp_path / "reader", "--json")
    assert code == 0, err
    answers = json.loads(out)["answers"]
    assert [r["model"] for r in answers["readers"]] == [str(tiny_llama), str(tmp_path / "reader")]
    assert all(0 <= r["f1"] <= 1 and 0 <= r["cited_relevant"] <= r["cited"] <= 1 for r in answers["readers"])
    assert "RAG (" in (tmp_path / "eval2" / "results.md").read_text()


def test_rerankers_reorder_the_head_by_their_own_scores(corpus, tmp_path, tiny_bert, tiny_llama, cli):
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from adaptlab.rag import RagIndex
    from adaptlab.rag.rerank import UPR_PROMPT, CrossEncoderReranker, LikelihoodReranker

    index = RagIndex(str(tmp_path / "store"), model=str(tiny_bert), chunk_size=32, chunk_overlap=4, progress=False)
    index.update([str(corpus)])
    first = index.search("a planet and its moon", 6)
    upr = LikelihoodReranker(str(tiny_llama))
    index.reranker, index.rerank_depth = upr, 4
    reranked = index.search("a planet and its moon", 6)
    expected = upr.scorer.score([("", UPR_PROMPT.format(title=h.chunk.title, text=h.chunk.text)) for h in first[:4]],
                                [" a planet and its moon"])[:, 0]
    assert [h.chunk.id for h in reranked[:4]] == [first[i].chunk.id for i in np.argsort(-expected, kind="stable")]
    assert [h.chunk.id for h in reranked[4:]] == [h.chunk.id for h in first[4:]]  # the tail keeps the first stage's order
    assert reranked[0].score == pytest.approx(float(expected.max()))

    torch.manual_seed(0)  # a tiny random cross-encoder, as sentence-transformers loads any (1-label) classifier
    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_bert))
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32, num_labels=1)).save_pretrained(tmp_path / "ce")
    tokenizer.save_pretrained(tmp_path / "ce")
    cross = CrossEncoderReranker(str(tmp_path / "ce"))
    scores = cross.model.predict([("a planet and its moon", h.chunk.text) for h in first[:4]])
    assert [h.chunk.id for h in cross.rerank("a planet and its moon", first[:4], 2)] == [first[i].chunk.id for i in np.argsort(-scores)[:2]]
    code, out, err = cli("rag", "search", "a planet", "--store", tmp_path / "store", "--rerank", f"likelihood:{tiny_llama}", "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == 5, err
    for bad, needle in ((["--rerank", "bm25"], "--rerank must be"), (["--rerank", "likelihood", "--rerank-depth", "0"], "--rerank-depth")):
        code, _, err = cli("rag", "search", "a planet", "--store", tmp_path / "store", *bad)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
