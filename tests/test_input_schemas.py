"""Input files are parsed against the schemas of ``adaptlab.schemas``: a file that breaks one is one line naming the
file, the line or row and the field (exit 2, no traceback, every input byte-identical afterwards), before any
model loads. Also the option bounds of the rag and rlhf commands that used to be accepted or crash late."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adaptlab.errors import AdaptlabError
from conftest import write_jsonl

#: the libraries a model load needs; none may be imported before these errors are reported
MODEL_LIBRARIES = ("torch", "transformers", "sentence_transformers", "peft", "lightning")


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def files(tmp_path) -> Path:
    """A user's directory of broken inputs (and a few good ones)."""
    root = tmp_path / "inputs"
    root.mkdir()
    good_squad = {"data": [{"title": "Mars", "paragraphs": [{"context": "Mars is red because of iron oxide.", "qas": [
        {"question": "Why is Mars red?", "answers": [{"text": "iron oxide", "answer_start": 23}], "id": "q1"}]}]}]}
    (root / "squad.json").write_text(json.dumps(good_squad))
    (root / "no-paragraphs.json").write_text(json.dumps({"version": "1.1", "data": [{"title": "Mars"}]}))
    (root / "bad-question.json").write_text(json.dumps(
        {"data": [{"title": "Mars", "paragraphs": [{"context": "Mars is red.", "qas": [{"question": 7, "answers": []}]}]}]}))
    (root / "truncated.json").write_text('{"data": [\n  {"title": "Mars",\n  "paragraphs": [')
    write_jsonl(root / "prefs.jsonl", [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(12)])
    (root / "open-quote.csv").write_text('prompt,chosen,rejected\nq1,good,bad\n"q2,good,bad\nq3,good,bad\n')
    (root / "queries.jsonl").write_text('{"question": "red planet", "relevant": ["Mars#0"]}\n\n{"question": "x", "relevant": []}\n')
    store = root / "store"
    store.mkdir()
    (store / "adaptlab-index.json").write_text('{"format": 1, "embedding": {"model": "minilm", "fingerpr')
    return root


def run(cli, files: Path, *argv) -> str:
    """The command's stderr, once checked: exit 2, one line, no traceback, no input changed."""
    before = fingerprint(files)
    code, _, err = cli(*argv)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err[-1500:]}"
    assert len(lines) == 1 and lines[0].startswith("adaptlab: error: ") and "Traceback" not in err, err
    assert fingerprint(files) == before, "an input changed"
    return err


# -- the reported bugs, through the command line -------------------------------------------------------------
def test_a_squad_file_without_paragraphs_names_the_field(cli, files, tmp_path):
    squad = files / "no-paragraphs.json"
    err = run(cli, files, "rag", "eval", "--squad", squad, "-o", tmp_path / "eval")
    assert f"--squad '{squad}'" in err and "field 'data[0].paragraphs': missing" in err and "expected a list of paragraphs" in err
    assert not (tmp_path / "eval").exists()  # refused before anything was written or indexed
    err = run(cli, files, "rag", "reader-data", "--squad", squad, "--store", tmp_path / "no-store", "-o", tmp_path / "r.jsonl")
    assert "field 'data[0].paragraphs': missing" in err
    err = run(cli, files, "rag", "train-retriever", "--pairs", squad, "-o", tmp_path / "retriever")
    assert f"--pairs '{squad}'" in err and "field 'data[0].paragraphs': missing" in err


def test_squad_fields_of_the_wrong_type_and_broken_json_name_where(cli, files, tmp_path):
    err = run(cli, files, "rag", "eval", "--squad", files / "bad-question.json", "-o", tmp_path / "eval")
    assert "field 'data[0].paragraphs[0].qas[0].question': input should be a valid string (got 7)" in err
    err = run(cli, files, "rag", "eval", "--squad", files / "truncated.json", "-o", tmp_path / "eval")
    assert re.search(r"truncated\.json' line 3 column \d+: not valid JSON", err), err


def test_a_preference_csv_with_an_open_quote_names_the_row(cli, files, tmp_path):
    err = run(cli, files, "rlhf", "reward", "--data", files / "open-quote.csv", "-o", tmp_path / "rm")
    assert "open-quote.csv' row 2: a quoted field opens with \" and is never closed" in err


def test_a_corrupt_store_description_says_to_rebuild_the_store(cli, files):
    store = files / "store"
    meta = store / "adaptlab-index.json"
    for content, needle in ((meta.read_bytes(), "line 1 column 48: not valid JSON"), (b"\x00\xff garbage \xfe", "cannot be read"),
                            (b'{"format": 1}', "field 'embedding': missing"), (b"[]", "expected an object")):
        meta.write_bytes(content)
        err = run(cli, files, "rag", "search", "red planet", "--store", store)
        assert f"store '{store}'" in err and "adaptlab-index.json" in err and needle in err and "rebuild it" in err, err
    assert "rebuild it" in run(cli, files, "rag", "ask", "red planet", "--store", store)  # ask opens stores the same way


def test_reader_data_never_replaces_its_own_input(cli, files):
    squad = files / "squad.json"
    err = run(cli, files, "rag", "reader-data", "--squad", squad, "--store", files / "store", "-o", squad, "--overwrite")
    assert "is the input" in err
    err = run(cli, files, "rag", "reader-data", "--squad", squad, "--store", files / "store",
              "-o", files / "store" / "reader.jsonl", "--overwrite")
    assert "lies inside the input" in err  # nor inside the store it reads


def test_rlhf_eval_needs_at_least_one_prompt(cli, files, tmp_path):
    for option in ("-n", "--max-new-tokens"):
        err = run(cli, files, "rlhf", "eval", files / "store", "--reward", "math:sin", option, "0", "-o", tmp_path / "eval")
        assert option in err and "greater than or equal to 1" in err
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("argv", [
    ("rag", "eval", "--squad", "{f}/squad.json", "-o", "{t}/eval", "--limit", "-1"),
    ("rag", "eval", "--queries", "{f}/queries.jsonl", "--store", "{f}/store", "--limit", "0"),
    ("rag", "reader-data", "--squad", "{f}/squad.json", "--store", "{f}/store", "-o", "{t}/r.jsonl", "--limit", "-1"),
])
def test_a_limit_below_one_is_refused(cli, files, tmp_path, argv):
    err = run(cli, files, *[arg.format(f=files, t=tmp_path) for arg in argv])
    assert "--limit" in err and "greater than or equal to 1" in err


def test_the_retriever_refuses_batches_without_negatives(cli, files, tmp_path):
    pairs = write_jsonl(files / "pairs.jsonl", [{"question": f"q{i}", "passage": f"p{i}"} for i in range(10)])
    err = run(cli, files, "rag", "train-retriever", "--pairs", pairs, "--batch-size", "1", "-o", tmp_path / "retriever")
    assert "--batch-size must be at least 2" in err and "negatives" in err
    assert not (tmp_path / "retriever").exists()


def test_a_query_file_row_names_its_line_and_field(cli, files, tmp_path):
    queries = files / "queries.jsonl"
    err = run(cli, files, "rag", "eval", "--queries", queries, "--store", files / "store", "-o", tmp_path / "eval")
    assert f"--queries '{queries}' line 3: field 'relevant': list should have at least 1 item" in err  # the blank line counts
    (files / "queries.jsonl").write_text('{"question": "q", "relevant": ["a"]}\n{"question": "q", "relevant": ["a"]\n')
    err = run(cli, files, "rag", "eval", "--queries", queries, "--store", files / "store", "-o", tmp_path / "eval")
    assert "line 2 column" in err and "not valid JSON" in err


def test_the_errors_come_before_any_model_library_loads(files, tmp_path):
    cases = [("rag", "eval", "--squad", files / "no-paragraphs.json", "-o", tmp_path / "eval"),
             ("rag", "search", "q", "--store", files / "store"),
             ("rag", "reader-data", "--squad", files / "squad.json", "--store", files / "store", "-o", files / "squad.json", "--overwrite"),
             ("rlhf", "reward", "--data", files / "open-quote.csv", "-o", tmp_path / "rm"),
             ("rlhf", "eval", files / "store", "--reward", "math:sin", "-n", "0"),
             ("rag", "train-retriever", "--pairs", files / "squad.json", "--batch-size", "1")]
    for argv in cases:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "adaptlab", *map(str, argv)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +([\w.]+)$", done.stderr, flags=re.M))
        loaded = sorted(name for name in imported if name.split(".")[0] in MODEL_LIBRARIES and "." not in name)
        assert done.returncode == 2 and not loaded, (argv, loaded, done.stderr[-500:])


# -- the readers, through the Python API -----------------------------------------------------------------------
@pytest.mark.parametrize("name, content, needle", [
    ("bad.json", '[{"prompt": "p", "chosen": "a", "rejected": "b"},\n oops]', "bad.json' line 2 column 2: not valid JSON"),
    ("cell.csv", 'prompt,responses\np,"[best, worst]"\n', "cell.csv' row 1: field 'responses': not a JSON list"),
    ("types.jsonl", '{"prompt": "p", "chosen": ["a"], "rejected": "b"}\n', "types.jsonl' line 1: field 'chosen': input should be a valid string"),
    ("scalar.jsonl", '"just text"\n', "scalar.jsonl' line 1: expected an object"),
    ("empty.csv", "", "empty.csv' is empty"),
    ("broken.jsonl.gz", b"\x1f\x8b\x08\x00 not really gzip", "broken.jsonl.gz' cannot be read"),
    ("dict.json", '{"prompt": "p"}', "must hold a list of objects"),
])
def test_read_preferences_raises_only_adaptlab_errors(tmp_path, name, content, needle):
    from adaptlab.rlhf import read_preferences

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(AdaptlabError) as error:
        read_preferences(str(path))
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_read_preferences_refuses_a_source_that_is_not_a_path():
    from adaptlab.rlhf import read_preferences

    with pytest.raises(AdaptlabError, match="preference data must be a file"):
        read_preferences(None)


def test_every_accepted_preference_format_still_reads(tmp_path):
    from adaptlab.rlhf import read_preferences

    csv = tmp_path / "numbers.csv"
    csv.write_text('prompt,chosen,rejected\n42,"yes, 7",no\n')  # cells stay text, even when they look like numbers
    ((pair,), kind) = read_preferences(csv)
    assert kind == "pairs" and (pair.prompt, pair.chosen, pair.rejected) == ("42", "yes, 7", "no")
    ranking = tmp_path / "ranking.csv"
    ranking.write_text('prompt,responses\np,"[""best"", ""middle"", ""worst""]"\n')
    pairs, kind = read_preferences(str(ranking))
    assert kind == "rankings" and len(pairs) == 3
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b", "extra": 1}]))
    assert read_preferences(str(array))[0][0].chosen == "a"  # unknown keys are ignored
    gz = tmp_path / "pairs.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n\n")
    assert len(read_preferences(str(gz))[0]) == 1


def test_a_rag_index_needs_a_store():
    from adaptlab.rag import RagIndex

    with pytest.raises(AdaptlabError, match="store must be a directory"):
        RagIndex(None)


def test_query_and_squad_readers_keep_their_accepted_forms(tmp_path):
    from adaptlab.rag.evaluate import load_queries, load_squad

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"question": "q", "relevant": "Mars#0"}\n{"question": "r", "relevant": [3], "answers": ["x"]}\n')
    first, second = load_queries(queries)
    assert first.relevant == {"Mars#0"} and second.relevant == {"3"} and second.answers == ("x",)
    squad = tmp_path / "s.json"
    squad.write_text(json.dumps({"data": [{"title": "A_B", "paragraphs": [{"context": "text", "qas": [{"question": "q?"}]}]}]}))
    records, (query,) = load_squad(squad)  # SQuAD 2.0 style: a question may have no answers
    assert records == [{"id": "A_B#0", "title": "A B", "text": "text"}] and query.answers == () and query.relevant == {"A_B#0"}
