"""The cases of ``bad_input_sweep.py``: generated from the typer app, the ``param()`` metadata and the file
schemas, so a new command, option or bound is swept without new sweep code.

- Commands and their options and arguments are read from the typer app (every group, lazy ones included).
- Each command is matched to the parameter dataclass it was built from (the one whose command-line fields it
  covers best: a strategy, ``SFTJob``, ``PPOConfig``...), so each option maps back to its ``param()`` field and
  gets values just outside its declared ``minimum`` / ``above`` / ``below`` and a value not among its ``choices``.
- Each option's click type adds a wrong type (``1.5`` for an integer) and huge values (2**70, ``inf``).
- An option or argument whose base value is a workspace file or folder gets the faults of that kind of input:
  valid JSON/JSONL/CSV/parquet/YAML with missing or wrong-typed fields, corrupt stores, artifacts, models and
  projects, a path under a regular file, a folder where a file is expected (and the reverse).
- An output gets: a place under a regular file, each input of the command (with and without --overwrite), the
  working directory, a user's folder, and for training commands the ``<output>.work`` collisions (a user folder
  holding a file, a file, a link to a user folder), whose files the damage check covers.

The workspace is declared here (``ENTRIES``, ``fault_files``, ``fault_dirs``), so cases can be counted without
building it (``--count``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GENERIC = ("-1", "0", "nan", "x", "")
HUGE = str(2**70)
REPRESENTATIVE_TRAIN = "train lora"  # options every strategy shares (same field, same metadata) are swept here only
SMALL = ["--train-size", "8", "--val-size", "2", "--test-size", "4"]


@dataclass(frozen=True)
class Pos:
    """A positional argument in a base invocation, so a case can replace it by name."""

    name: str
    value: str


@dataclass
class Base:
    """A command's valid invocation (``{w}``: the case's copy of the workspace, ``{out}``: a fresh output path,
    ``{port}``: a free port). ``drop``: tokens removed when a target is swept (``--file`` replaces the texts);
    ``alt``: another base for some targets (compare's generation options); ``writes``: workspace entries a run
    that was accepted may change (``feedback add-annotator`` writes its project)."""

    argv: list
    drop: dict = field(default_factory=dict)
    alt: dict = field(default_factory=dict)
    writes: tuple = ()


@dataclass
class Case:
    command: str
    target: str  # --option, or a positional argument's name
    value: str
    kind: str  # generic, type, huge, bound, choice, path, schema, config, corrupt, output, collision
    argv: list
    note: str = ""
    setup: dict = field(default_factory=dict)  # path under {w} -> text, bytes, DIR or ("link", path under {w})
    writes: tuple = ()


DIR = "<dir>"


@dataclass
class Target:
    name: str
    opts: tuple
    positional: bool
    type: str  # int, float, path, text, ...
    minimum: float | None
    maximum: float | None


# -- the workspace -------------------------------------------------------------------------------------------
#: valid inputs: name under {w} -> kind (directories: model, artifact, store, project, documents)
ENTRIES = {
    "tiny-bert": "model", "tiny-llama": "model", "data.csv": "data", "chat.jsonl": "chat", "prefs.jsonl": "prefs",
    "candidates.jsonl": "candidates", "queries.jsonl": "queries", "prompts.txt": "prompts", "prompts-eval.txt": "prompts",
    "prompts.jsonl": "prompts", "examples.jsonl": "examples", "squad.json": "squad", "pairs.jsonl": "pairs",
    "texts.parquet": "texts", "docs": "documents", "lora": "artifact", "rm": "artifact", "sft": "artifact",
    "ppo": "artifact", "store": "store", "project": "project",
}
DIR_KINDS = {"model", "artifact", "store", "project", "documents"}
#: an option absent from a base but taking a workspace input: the entry whose faults it gets
TARGET_ENTRY = {"--examples": "examples.jsonl", "--prompts": "prompts.jsonl", "--candidates": "candidates.jsonl",
                "--queries": "queries.jsonl", "--squad": "squad.json", "--pairs": "pairs.jsonl", "--preferences": "prefs.jsonl",
                "--documents": "docs", "--file": "texts.parquet", "--store": "store", "--rag-store": "store",
                "--reference": "tiny-llama", "--data": "data.csv", "--generator": "sft", "--embedder": "tiny-bert", "--reward": "rm"}
#: positional arguments that are outputs, and options other than --output that are (command, target)
OUTPUT_TARGETS = {("feedback new", "project"), ("rag index", "--store")}
ROWS = [(f"{'a wonderful film' if i % 2 else 'a dull mess'} ({i})", "pos" if i % 2 else "neg") for i in range(20)]


def _jsonl(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _parquet(columns: dict, truncate: bool = False) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)
        if truncate:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    return write


def valid_files() -> dict:
    squad = {"version": "1", "data": [
        {"title": "Eiffel", "paragraphs": [{"context": "The Eiffel Tower was completed in 1889. It is in Paris.", "qas": [
            {"id": "q1", "question": "When was the Eiffel Tower completed?", "answers": [{"text": "1889", "answer_start": 34}]},
            {"id": "q2", "question": "Where is the Eiffel Tower?", "answers": [{"text": "Paris", "answer_start": 50}]}]}]},
        {"title": "Moon", "paragraphs": [{"context": "The Moon orbits the Earth every 27 days.", "qas": [
            {"id": "q3", "question": "What orbits the Earth?", "answers": [{"text": "The Moon", "answer_start": 0}]}]}]}]}
    return {
        "data.csv": "text,label\n" + "".join(f"{t},{label}\n" for t, label in ROWS),
        "chat.jsonl": _jsonl({"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(12)),
        "prefs.jsonl": _jsonl({"prompt": f"p{i}", "chosen": "a kind reply", "rejected": "rude"} for i in range(12)),
        "candidates.jsonl": _jsonl({"prompt": f"p{i}", "responses": ["one", "two"]} for i in range(3)),
        "queries.jsonl": _jsonl([{"question": "the eiffel tower", "relevant": ["a.txt"]}]),
        "prompts.txt": "The film was\nThe plot\n",
        "prompts-eval.txt": "A new day\nThe movie\nI think\nOnce upon\n",
        "prompts.jsonl": _jsonl({"prompt": f"p{i}"} for i in range(2)),
        "examples.jsonl": _jsonl([{"input": "great", "output": "pos"}, {"input": "awful", "output": "neg"}]),
        "squad.json": json.dumps(squad),
        "pairs.jsonl": _jsonl({"question": f"question {i} about topic {i}", "passage": f"passage {i} explains topic {i}"}
                              for i in range(12)),
        "texts.parquet": _parquet({"text": ["a fine film", "a dull one"]}),
    }


@functools.cache
def fault_files() -> dict[str, dict]:
    """kind -> {file name under {w}: text, bytes or a writer}: valid JSON/JSONL/CSV/parquet/YAML, wrong schema."""
    texts = [t for t, _ in ROWS]
    rows = lambda make: _jsonl(make(i, t, label) for i, (t, label) in enumerate(ROWS))
    chat = lambda make: _jsonl(make(i) for i in range(12))
    latin = "text,label\n" + "".join(f"caf\xe9 {t},{label}\n" for t, label in ROWS)
    return {
        "data": {
            "bad-data-no-label.csv": "text\n" + "".join(f"{t}\n" for t in texts),
            "bad-data-no-text.csv": "label\n" + "".join(f"{label}\n" for _, label in ROWS),
            "bad-data-one-class.csv": "text,label\n" + "".join(f"{t},pos\n" for t in texts),
            "bad-data-header-only.csv": "text,label\n",
            "bad-data-empty.csv": "",
            "bad-data-ragged.csv": "text,label\n" + "".join(f"{t},{label}" + (",extra,9" if i % 3 == 0 else "") + "\n"
                                                           for i, (t, label) in enumerate(ROWS)),
            "bad-data-label-blank.csv": "text,label\n" + "".join(f"{t},{'' if i % 4 == 0 else label}\n" for i, (t, label) in enumerate(ROWS)),
            "bad-data-not-utf8.csv": latin.encode("latin-1"),
            "bad-data-label-list.jsonl": rows(lambda i, t, label: {"text": t, "label": [label]}),
            "bad-data-text-null.jsonl": rows(lambda i, t, label: {"text": None if i % 4 == 0 else t, "label": label}),
            "bad-data-text-number.jsonl": rows(lambda i, t, label: {"text": i, "label": label}),
            "bad-data-text-object.jsonl": rows(lambda i, t, label: {"text": {"body": t}, "label": label}),
            "bad-data-not-objects.jsonl": rows(lambda i, t, label: [t, label]),
            "bad-data-not-json.jsonl": "{text: a film, label: pos}\n" * 20,
            "bad-data-one-object.json": json.dumps({"text": "a film", "label": "pos"}),
            "bad-data-garbage.parquet": b"PAR1 this is not a parquet file",
        },
        "chat": {
            "bad-chat-no-completion.jsonl": chat(lambda i: {"prompt": f"q{i}"}),
            "bad-chat-completion-number.jsonl": chat(lambda i: {"prompt": f"q{i}", "completion": i}),
            "bad-chat-prompt-null.jsonl": chat(lambda i: {"prompt": None, "completion": f"a{i}"}),
            "bad-chat-messages-string.jsonl": chat(lambda i: {"messages": f"hello {i}"}),
            "bad-chat-messages-empty.jsonl": chat(lambda i: {"messages": []}),
            "bad-chat-bad-role.jsonl": chat(lambda i: {"messages": [{"role": "wizard", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}),
            "bad-chat-no-content.jsonl": chat(lambda i: {"messages": [{"role": "user"}, {"role": "assistant", "content": f"a{i}"}]}),
            "bad-chat-content-number.jsonl": chat(lambda i: {"messages": [{"role": "user", "content": i}, {"role": "assistant", "content": i}]}),
            "bad-chat-no-assistant.jsonl": chat(lambda i: {"messages": [{"role": "user", "content": f"q{i}"}]}),
            "bad-chat-not-objects.jsonl": chat(lambda i: [f"q{i}", f"a{i}"]),
            "bad-chat-text-number.jsonl": chat(lambda i: {"text": i}),
            "bad-chat-empty.jsonl": "",
            "bad-chat-other-columns.csv": "a,b\n" + "".join(f"{i},{i}\n" for i in range(12)),
            "bad-chat-not-utf8.jsonl": chat(lambda i: {"prompt": f"caf\xe9 {i}", "completion": "a"}).encode("utf-8").replace(b"\\u00e9", b"\xe9"),
        },
        "prefs": {
            "bad-prefs-no-rejected.jsonl": chat(lambda i: {"prompt": f"p{i}", "chosen": "kind"}),
            "bad-prefs-chosen-list.jsonl": chat(lambda i: {"prompt": f"p{i}", "chosen": ["kind"], "rejected": "rude"}),
            "bad-prefs-same-response.jsonl": chat(lambda i: {"prompt": f"p{i}", "chosen": "same", "rejected": "same"}),
            "bad-prefs-chosen-empty.jsonl": chat(lambda i: {"prompt": f"p{i}", "chosen": "", "rejected": "rude"}),
            "bad-prefs-prompt-number.jsonl": chat(lambda i: {"prompt": i, "chosen": "kind", "rejected": "rude"}),
            "bad-prefs-ranking-one.jsonl": chat(lambda i: {"prompt": f"p{i}", "responses": ["only"]}),
            "bad-prefs-responses-string.jsonl": chat(lambda i: {"prompt": f"p{i}", "responses": "a, b"}),
            "bad-prefs-not-objects.jsonl": chat(lambda i: [f"p{i}", "kind", "rude"]),
            "bad-prefs-empty.jsonl": "",
            "bad-prefs-other-columns.csv": "question,good,bad\n" + "".join(f"p{i},kind,rude\n" for i in range(12)),
            "bad-prefs-not-utf8.jsonl": b'{"prompt": "caf\xe9", "chosen": "kind", "rejected": "rude"}\n' * 12,
        },
        "candidates": {
            "bad-candidates-no-responses.jsonl": _jsonl({"prompt": f"p{i}"} for i in range(3)),
            "bad-candidates-responses-string.jsonl": _jsonl({"prompt": f"p{i}", "responses": "one two"} for i in range(3)),
            "bad-candidates-responses-empty.jsonl": _jsonl({"prompt": f"p{i}", "responses": []} for i in range(3)),
            "bad-candidates-responses-numbers.jsonl": _jsonl({"prompt": f"p{i}", "responses": [1, 2]} for i in range(3)),
            "bad-candidates-prompt-number.jsonl": _jsonl({"prompt": i, "responses": ["one", "two"]} for i in range(3)),
            "bad-candidates-response-no-source.jsonl": _jsonl({"prompt": f"p{i}", "response": "one"} for i in range(3)),
            "bad-candidates-not-objects.jsonl": _jsonl([f"p{i}", "one", "two"] for i in range(3)),
            "bad-candidates-empty.jsonl": "",
        },
        "queries": {
            "bad-queries-no-relevant.jsonl": _jsonl([{"question": "the eiffel tower"}]),
            "bad-queries-relevant-empty.jsonl": _jsonl([{"question": "the eiffel tower", "relevant": []}]),
            "bad-queries-relevant-object.jsonl": _jsonl([{"question": "the eiffel tower", "relevant": {"id": "a.txt"}}]),
            "bad-queries-question-number.jsonl": _jsonl([{"question": 5, "relevant": ["a.txt"]}]),
            "bad-queries-question-blank.jsonl": _jsonl([{"question": " ", "relevant": ["a.txt"]}]),
            "bad-queries-not-objects.jsonl": _jsonl([["the eiffel tower", "a.txt"]]),
            "bad-queries-empty.jsonl": "",
        },
        "squad": {
            "bad-squad-data-number.json": json.dumps({"data": 5}),
            "bad-squad-no-data.json": json.dumps({"version": "1"}),
            "bad-squad-top-list.json": json.dumps([{"title": "x"}]),
            "bad-squad-paragraphs-string.json": json.dumps({"data": [{"title": "x", "paragraphs": "text"}]}),
            "bad-squad-no-context.json": json.dumps({"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}),
            "bad-squad-context-number.json": json.dumps({"data": [{"title": "x", "paragraphs": [{"context": 5, "qas": []}]}]}),
            "bad-squad-no-question.json": json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"answers": []}]}]}]}),
            "bad-squad-answers-string.json": json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"question": "q?", "answers": "c"}]}]}]}),
            "bad-squad-two-documents.json": json.dumps({"data": []}) + "\n" + json.dumps({"data": []}),
            "bad-squad-empty.json": "",
        },
        "pairs": {
            "bad-pairs-no-passage.jsonl": chat(lambda i: {"question": f"q{i}"}),
            "bad-pairs-passage-number.jsonl": chat(lambda i: {"question": f"q{i}", "passage": i}),
            "bad-pairs-question-blank.jsonl": chat(lambda i: {"question": "", "passage": f"passage {i}"}),
            "bad-pairs-not-objects.jsonl": chat(lambda i: [f"q{i}", f"passage {i}"]),
            "bad-pairs-empty.jsonl": "",
        },
        "prompts": {
            "bad-prompts-no-prompt.jsonl": _jsonl({"text": f"p{i}"} for i in range(3)),
            "bad-prompts-prompt-number.jsonl": _jsonl({"prompt": i} for i in range(3)),
            "bad-prompts-prompt-null.jsonl": _jsonl({"prompt": None} for i in range(3)),
            "bad-prompts-not-objects.jsonl": _jsonl([f"p{i}"] for i in range(3)),
            "bad-prompts-other-column.csv": "text\np0\np1\n",
            "bad-prompts-empty.txt": "",
            "bad-prompts-blank-lines.txt": "\n  \n\n",
            "bad-prompts-not-utf8.txt": b"caf\xe9 au lait\nthe plot\n",
        },
        "examples": {
            "bad-examples-no-output.jsonl": _jsonl([{"input": "great"}]),
            "bad-examples-input-number.jsonl": _jsonl([{"input": 5, "output": "pos"}]),
            "bad-examples-output-list.jsonl": _jsonl([{"input": "great", "output": ["pos"]}]),
            "bad-examples-not-objects.jsonl": _jsonl([["great", "pos"]]),
            "bad-examples-empty.jsonl": "",
        },
        "texts": {
            "bad-texts-garbage.parquet": b"PAR1 not a parquet file PAR1",
            "bad-texts-truncated.parquet": _parquet({"text": [f"text {i}" for i in range(200)]}, truncate=True),
            "bad-texts-no-text-column.parquet": _parquet({"body": ["a", "b"]}),
            "bad-texts-text-ints.parquet": _parquet({"text": [1, 2]}),
            "bad-texts-text-null.parquet": _parquet({"text": ["a", None]}),
            "bad-texts-zero-rows.parquet": _parquet({"text": [""] * 0}),
            "bad-texts-no-text-column.csv": "body\na\nb\n",
            "bad-texts-not-objects.jsonl": _jsonl([["a"], ["b"]]),
            "bad-texts-empty.txt": "",
            "bad-texts-not-utf8.txt": b"caf\xe9\n",
        },
        "documents": {
            "bad-docs-corrupt.pdf": b"%PDF-1.4 this is not a real pdf",
            "bad-docs-not-utf8.txt": b"caf\xe9 au lait\n",
            "bad-docs-no-text.jsonl": _jsonl([{"title": "x"}]),
            "bad-docs-not-objects.jsonl": _jsonl([["x"]]),
            "bad-docs-empty.txt": "",
            "bad-docs-unsupported.docx": b"PK\x03\x04 not a document",
        },
        "config": {
            "bad-config-models-number.yaml": "models: 5\n",
            "bad-config-params-list.yaml": "params: [1, 2]\n",
            "bad-config-text-column-list.yaml": "data: {text_column: [a]}\n",
            "bad-config-tune-inf.yaml": "tune: {trials: 2, params: {lora: {lr: [0.001, .inf]}}}\n",
            "bad-config-tune-reversed.yaml": "tune: {trials: 2, params: {lora: {lr: [0.1, 0.001]}}}\n",
            "bad-config-tune-negative.yaml": "tune: -1\n",
            "bad-config-tune-huge.yaml": f"tune: {HUGE}\n",
            "bad-config-top-list.yaml": "- data\n- params\n",
            "bad-config-scalar.yaml": "5\n",
            "bad-config-syntax.yaml": "data: [\n",
            "bad-config-unknown-key.yaml": "bogus: 1\n",
            "bad-config-data-number.yaml": "data: 5\n",
            "bad-config-source-list.yaml": "data: {source: [a, b]}\n",
            "bad-config-seed-string.yaml": "data: {seed: '5'}\n",
            "bad-config-size-float.yaml": "data: {train_size: 1.5}\n",
            "bad-config-size-zero.yaml": "data: {train_size: 0}\n",
            "bad-config-epochs-text.yaml": "params: {epochs: x}\n",
            "bad-config-epochs-nan.yaml": "params: {epochs: .nan}\n",
            "bad-config-lr-negative.yaml": "params: {lr: -1}\n",
            "bad-config-lr-inf.yaml": "params: {lr: .inf}\n",
            "bad-config-batch-huge.yaml": f"params: {{batch_size: {HUGE}}}\n",
            "bad-config-params-unknown.yaml": "params: {bogus: 1}\n",
            "bad-config-entry-list.yaml": "params: {lora: [1, 2]}\n",
            "bad-config-output-list.yaml": "output: [1]\n",
            "bad-config-strategy-other.yaml": "strategy: not-a-strategy\n",
            "bad-config-strategies-unknown.yaml": "strategies: [not-a-strategy]\n",
            "bad-config-seeds-zero.yaml": "seeds: 0\n",
            "bad-config-preset-unknown.yaml": "preset: bogus\n",
            "bad-config-documents-number.yaml": "documents: 5\n",
            "bad-config-not-utf8.yaml": b"data: {text_column: caf\xe9}\n",
            "bad-config-empty.yaml": "",
        },
    }


def _meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        meta_path = path / "adaptlab-index.json"
        meta = json.loads(meta_path.read_text())
        result = change(meta)
        meta_path.write_text(result if isinstance(result, str) else json.dumps(meta))
    return mutate


def _write(relative: str, content: str | bytes | None) -> Callable[[Path], None]:
    """Replace (or with None remove) a file of a copied directory; ``*`` finds the first match."""
    def mutate(path: Path) -> None:
        target = next(path.glob(relative)) if "*" in relative else path / relative
        if content is None:
            target.unlink()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return mutate


def _truncate(pattern: str) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        target = next(path.glob(pattern))
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    return mutate


def _manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        change(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))
    return mutate


def _each(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        for one in mutations:
            one(path)
    return mutate


ARTIFACT_FAULTS = {
    "manifest-garbage": _write("manifest.json", "{not json"),
    "manifest-list": _write("manifest.json", "[1, 2]"),
    "manifest-wrong-types": _manifest(lambda m: m.update(strategy=5, labels="pos", base_model="x")),
    "manifest-missing": _write("manifest.json", None),
    "weights-truncated": _truncate("**/*.safetensors"),
    "weights-garbage": _write("**/*.safetensors", b"\x00garbage"),
    "weights-missing": _write("**/*.safetensors", None),
    "tokenizer-garbage": _write("**/tokenizer.json", "{not json"),
}
MODEL_FAULTS = {
    "config-garbage": _write("config.json", "{not json"),
    "config-empty-object": _write("config.json", "{}"),
    "weights-truncated": _truncate("model.safetensors"),
    "weights-missing": _write("model.safetensors", None),
    "tokenizer-garbage": _write("tokenizer.json", "{not json"),
}
STORE_FAULTS = {
    "meta-garbage": _write("adaptlab-index.json", "{not json"),
    "meta-list": _write("adaptlab-index.json", "[1, 2]"),
    "meta-wrong-types": _meta(lambda m: m.update(embedding=5, dim="x", chunk_size=[1])),
    "meta-empty": _write("adaptlab-index.json", ""),
    "meta-missing": _write("adaptlab-index.json", None),
    "meta-dim-mismatch": _meta(lambda m: m.update(dim=7)),
    "meta-chunk-size-zero": _meta(lambda m: m.update(chunk_size=0)),
    "meta-model-missing": _meta(lambda m: m["embedding"].update(model="/nonexistent/model")),
    "meta-dir": _each(_write("adaptlab-index.json", None), lambda p: (p / "adaptlab-index.json").mkdir()),
    "no-chunks": lambda p: shutil.rmtree(p / "chunks.lance"),
    "chunks-garbage": lambda p: [f.write_bytes(b"garbage") for f in (p / "chunks.lance" / "data").iterdir()],
    "empty": lambda p: [shutil.rmtree(c) if c.is_dir() else c.unlink() for c in list(p.iterdir())],
}
def _foreign_database(path: Path) -> None:
    """Another program's SQLite file (rollback journal, user_version 0) where the project's database goes."""
    path.unlink()
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
    conn.close()


PROJECT_FAULTS = {
    "no-db": lambda p: (p / "feedback.sqlite").unlink(),
    "db-garbage": _write("feedback.sqlite", b"this is not a database"),
    "db-empty": _write("feedback.sqlite", b""),
    "db-foreign": lambda p: _foreign_database(p / "feedback.sqlite"),
    "db-dir": _each(_write("feedback.sqlite", None), lambda p: (p / "feedback.sqlite").mkdir()),
}
DIR_FAULTS = {"artifact": ARTIFACT_FAULTS, "model": MODEL_FAULTS, "store": STORE_FAULTS, "project": PROJECT_FAULTS}


def fault_dirs() -> dict[str, tuple[str, Callable[[Path], None]]]:
    """Corrupt copies: name under {w} -> (the valid entry it copies, what breaks it)."""
    found = {}
    for entry, kind in ENTRIES.items():
        for name, mutate in DIR_FAULTS.get(kind, {}).items():
            found[f"{entry}-{name}"] = (entry, mutate)
    return found


def write_content(path: Path, content) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def build_workspace(w: Path, adaptlab: str, env: dict) -> None:
    """The valid inputs, tiny models and artifacts, and every fault file and corrupt copy, under ``w``."""
    import subprocess
    import uuid

    import adaptlab as api
    from adaptlab.data import load_data, split_data
    from adaptlab.feedback import db as feedback_db
    from adaptlab.feedback import project
    from adaptlab.models.tiny import save_tiny_bert, save_tiny_llama
    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    (w / "docs").mkdir(parents=True)
    (w / "docs" / "a.txt").write_text("The Eiffel Tower was completed in 1889.\n", encoding="utf-8")
    bert, llama = str(save_tiny_bert(w / "tiny-bert")), str(save_tiny_llama(w / "tiny-llama"))
    for name, content in valid_files().items():
        write_content(w / name, content)
    api.train("lora", split_data(load_data(w / "data.csv"), seed=0), w / "lora", model=bert, epochs=1, progress=False)
    pairs, _ = read_preferences(str(w / "prefs.jsonl"))
    train_reward_model(split_preferences(pairs, str(w / "prefs.jsonl")), w / "rm", model=bert, epochs=1, progress=False)
    project.new_project(w / "project", candidates_path=w / "candidates.jsonl")
    conn = feedback_db.connect(w / "project")  # one annotator ranks every item, so export has rows
    feedback_db.add_annotator(conn, "ann", False)
    annotator = conn.execute("SELECT id FROM annotators WHERE name = 'ann'").fetchone()[0]
    for (prompt_id,) in conn.execute("SELECT id FROM prompts").fetchall():
        _, candidates = feedback_db.item(conn, prompt_id)
        feedback_db.submit(conn, annotator, uuid.uuid4().hex, prompt_id, "ranked", [[c["id"]] for c in candidates], None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for argv in (["rag", "index", f"{w}/docs", "--store", f"{w}/store", "--model", bert],
                 ["sft", "train", "--data", f"{w}/chat.jsonl", "--model", llama, "--epochs", "1", "--no-forgetting", "-o", f"{w}/sft"],
                 ["rlhf", "ppo", "--reward", f"{w}/rm", "--model", llama, "--prompts", f"{w}/prompts.txt", "--steps", "1",
                  "--batch-size", "2", "--mini-batch-size", "2", "-o", f"{w}/ppo"]):
        done = subprocess.run([adaptlab, *argv], check=False, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"building the workspace failed: adaptlab {' '.join(argv)}\n{done.stderr[-2000:]}")
    for files in fault_files().values():
        for name, content in files.items():
            write_content(w / name, content)
    for name, (source, mutate) in fault_dirs().items():
        shutil.copytree(w / source, w / name, symlinks=True)
        mutate(w / name)


# -- base invocations ----------------------------------------------------------------------------------------
def make_bases(specs: dict[str, list[Target]]) -> dict[str, Base]:
    from adaptlab.methods import STRATEGIES

    w, out = "{w}", "{out}"
    bert, llama = f"{w}/tiny-bert", f"{w}/tiny-llama"
    generation = ["compare", "--data", f"{w}/chat.jsonl", *SMALL, "--models", llama, "--strategies", "zero-shot", "-o", out]
    bases = {
        "compare": Base(["compare", "--data", f"{w}/data.csv", *SMALL, "--models", bert, "--strategies", "head", "-o", out],
                        alt={t: generation for t in ("--preferences", "--documents", "--prompt-column", "--completion-column", "--metric")}),
        "serve": Base(["serve", Pos("artifacts", f"{w}/lora"), "--port", "{port}"]),
        "generate": Base(["generate", "--model", llama, "--max-new-tokens", "2", Pos("prompt", "hello")]),
        "merge": Base(["merge", Pos("artifact", f"{w}/lora"), "-o", out]),
        "predict": Base(["predict", Pos("artifact", f"{w}/lora"), Pos("texts", "a text")], drop={"--file": ("texts",)}),
        "embed": Base(["embed", "--model", bert, "-o", f"{out}.npy", Pos("texts", "hello")], drop={"--file": ("texts",), "--data": ("texts",)}),
        "data": Base(["data", "--data", f"{w}/data.csv"]),
        "rag index": Base(["rag", "index", Pos("paths", f"{w}/docs"), "--store", out, "--model", bert]),
        "rag search": Base(["rag", "search", Pos("query", "eiffel"), "--store", f"{w}/store"]),
        "rag ask": Base(["rag", "ask", Pos("question", "eiffel"), "--store", f"{w}/store", "--model", llama, "--max-new-tokens", "2"]),
        "rag eval": Base(["rag", "eval", "--queries", f"{w}/queries.jsonl", "--store", f"{w}/store", "-o", out], drop={"--squad": ("--queries",)}),
        "rag reader-data": Base(["rag", "reader-data", "--squad", f"{w}/squad.json", "--store", f"{w}/store", "-o", f"{out}.jsonl"]),
        "rag train-retriever": Base(["rag", "train-retriever", "--pairs", f"{w}/pairs.jsonl", "--model", bert, "--epochs", "1", "-o", out]),
        "feedback new": Base(["feedback", "new", Pos("project", out), "--candidates", f"{w}/candidates.jsonl", "--model", llama,
                              "--max-new-tokens", "2", "--n", "2"], drop={"--prompts": ("--candidates",)}),
        "feedback add-annotator": Base(["feedback", "add-annotator", Pos("project", f"{w}/project"), Pos("name", "bob")], writes=("project",)),
        "feedback serve": Base(["feedback", "serve", Pos("project", f"{w}/project"), "--port", "{port}"], writes=("project",)),
        "feedback export": Base(["feedback", "export", Pos("project", f"{w}/project"), "-o", f"{out}.jsonl"]),
        "rlhf reward": Base(["rlhf", "reward", "--data", f"{w}/prefs.jsonl", "--model", bert, "--epochs", "1", "-o", out]),
        "rlhf dpo": Base(["rlhf", "dpo", "--data", f"{w}/prefs.jsonl", "--model", llama, "--epochs", "1", "-o", out]),
        "rlhf ppo": Base(["rlhf", "ppo", "--reward", f"{w}/rm", "--model", llama, "--prompts", f"{w}/prompts.txt", "--steps", "1",
                          "--batch-size", "2", "--mini-batch-size", "2", "-o", out]),
        "rlhf eval": Base(["rlhf", "eval", Pos("policies", f"{w}/ppo"), "--reward", f"{w}/rm", "--prompts", f"{w}/prompts-eval.txt",
                           "--n", "2", "--max-new-tokens", "2", "-o", out]),
        "sft train": Base(["sft", "train", "--data", f"{w}/chat.jsonl", "--model", llama, "--epochs", "1", "-o", out]),
        "sft eval": Base(["sft", "eval", "--data", f"{w}/chat.jsonl", "--model", llama, "--max-new-tokens", "2", "--test-size", "2"]),
    }
    for name in STRATEGIES:
        model = llama if name in ("icl", "soft-prompt") else bert
        bases[f"train {name}"] = Base(["train", name, "--data", f"{w}/data.csv", "--model", model, "--epochs", "1", "-o", out])
    for command, base in bases.items():  # a base option the command lacks (train icl has no --epochs) is left out
        known = {o for t in specs.get(command, []) for o in t.opts}
        for argv in [base.argv, *base.alt.values()]:
            i = 0
            while i < len(argv):
                token = argv[i]
                if isinstance(token, str) and token.startswith("-") and token not in known and specs.get(command):
                    del argv[i:i + 2]
                    continue
                i += 1
    return bases


# -- reading the app -----------------------------------------------------------------------------------------
def command_specs() -> dict[str, list[Target]]:
    """Every leaf command of the app (lazy groups included) -> its value-taking options and its arguments."""
    import typer.main

    from adaptlab.cli import LAZY_GROUPS, build_app

    found: dict[str, list[Target]] = {}

    def walk(node, path: list[str], group: str | None) -> None:
        if hasattr(node, "commands"):
            for name, child in node.commands.items():
                walk(child, [*path, name], group)
            return
        if group is None and path[0] in LAZY_GROUPS or group is not None and path[0] != group:
            return
        found[" ".join(path)] = [target for p in node.params if (target := _target(p)) is not None]

    for group in (None, *LAZY_GROUPS):
        walk(typer.main.get_command(build_app(["adaptlab", *([group] if group else [])])), [], group)
    return found


def _target(param) -> Target | None:
    import typing

    annotation = param.type_descriptor.annotation
    while typing.get_args(annotation):  # list[str] -> str, Optional[int] -> int
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    kind = {int: "integer", float: "float", Path: "path", bool: "boolean"}.get(annotation, "text")
    if param.name == "help":
        return None
    if getattr(param, "is_flag", False) or kind == "boolean":  # kept so bases and --overwrite can be checked
        return Target(param.opts[0], tuple(param.opts) + tuple(getattr(param, "secondary_opts", ())), False, "flag", None, None)
    minimum, maximum = getattr(param, "min", None), getattr(param, "max", None)
    if param.param_type_name == "argument":
        return Target(param.name, (), True, kind, minimum, maximum)
    long = [o for o in param.opts if o.startswith("--")]
    return Target(long[0] if long else param.opts[0], tuple(param.opts), False, kind, minimum, maximum)


def param_classes() -> list[type]:
    """The parameter dataclasses (fields made with ``param()``) that the app's modules imported."""
    from adaptlab.params import params_of

    classes = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("adaptlab"):
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name
                    and any("minimum" in f.metadata for f in params_of(obj))):
                classes.append(obj)
    return classes


def flags(cls: type) -> dict[str, dataclasses.Field]:
    from adaptlab.params import option_name

    return {f.metadata.get("flag") or option_name(f.name): f for f in dataclasses.fields(cls)
            if f.metadata.get("cli", True) and "minimum" in f.metadata}


def covering_class(targets: list[Target], classes: list[type]) -> type | None:
    """The class the command was built from: the one with the most command-line fields (at least 3) among those
    whose fields the command's options cover (at least 80%); on a tie, the subclass."""
    options = {t.name for t in targets}
    best, best_count = None, 2
    for cls in classes:
        fields = flags(cls)
        covered = len(set(fields) & options)
        if fields and covered / len(fields) >= 0.8 and (covered > best_count or covered == best_count and best
                                                         and issubclass(cls, best)):
            best, best_count = cls, covered
    return best


def owner(cls: type, name: str) -> type:
    import inspect

    return next(k for k in cls.__mro__ if name in inspect.get_annotations(k))


def signature(cls: type | None, option: str) -> tuple:
    """What decides how an option is checked: the field's declaring class and metadata (None: not a field)."""
    spec = flags(cls).get(option) if cls else None
    if spec is None:
        return (None,)
    meta = {k: v for k, v in spec.metadata.items() if k != "help"}
    return owner(cls, spec.name), tuple(sorted(meta.items(), key=str)), repr(spec.default)


# -- values --------------------------------------------------------------------------------------------------
def _number(value: float, integer: bool) -> str:
    return str(int(value)) if integer or float(value).is_integer() else repr(float(value))


def option_values(target: Target, spec: dataclasses.Field | None) -> list[tuple[str, str]]:
    """(kind, value): the generic values, then the type's, the click range's and the param() metadata's."""
    values = [("generic", v) for v in GENERIC]
    integer = target.type == "integer"
    numeric = integer or target.type == "float"
    if integer:
        values += [("type", "1.5"), ("huge", HUGE)]
    elif numeric:
        values += [("huge", "inf"), ("huge", HUGE)]
    if target.minimum is not None:
        values.append(("bound", _number(target.minimum - 1, integer)))
    if target.maximum is not None:
        values.append(("bound", _number(target.maximum + 1, integer)))
    meta = spec.metadata if spec is not None else {}
    if numeric and meta.get("minimum") is not None:
        values.append(("bound", _number(meta["minimum"] - (1 if integer else 0.5), integer)))
    if numeric and meta.get("maximum") is not None:
        values.append(("bound", _number(meta["maximum"] + (1 if integer else 0.5), integer)))
    for key in ("above", "below"):
        if numeric and meta.get(key) is not None:
            values.append(("bound", _number(meta[key], integer)))
    if meta.get("choices"):
        first = str(meta["choices"][0])
        values.append(("choice", "not-a-choice"))
        if first.swapcase() not in map(str, meta["choices"]):
            values.append(("choice", first.swapcase()))
    seen, unique = set(), []
    for kind, value in values:
        if value not in seen:
            seen.add(value)
            unique.append((kind, value))
    return unique


def entry_of(value: str | None) -> str | None:
    if isinstance(value, str) and value.startswith("{w}/"):
        return value[4:].split("/")[0]
    return None


def base_value(argv: list, target: Target) -> str | None:
    for i, token in enumerate(argv):
        if isinstance(token, Pos) and target.positional and token.name == target.name:
            return token.value
        if not target.positional and isinstance(token, str) and token in target.opts and i + 1 < len(argv):
            return argv[i + 1]
    return None


def input_faults(target: Target, entry: str) -> list[tuple[str, str]]:
    """The bad inputs for a target whose valid value is workspace entry ``entry`` (or a kind's stand-in)."""
    kind = "config" if target.name == "--config" else ENTRIES.get(entry)
    found = []
    if kind in DIR_KINDS - {"documents"}:  # documents may be files or folders
        found.append(("path", "{w}/prompts.txt"))  # a file where a folder is expected
    elif kind is not None or target.type == "path":
        found.append(("path", "{w}/docs"))  # a folder where a file is expected
    found.append(("path", "{w}/prompts.txt/inside"))  # a path under a regular file
    if kind in DIR_FAULTS:
        found += [("corrupt", f"{{w}}/{entry}-{name}") for name in DIR_FAULTS[kind]]
        if entry == "tiny-llama":  # a generator artifact is taken wherever a causal LM is
            found += [("corrupt", f"{{w}}/sft-{name}") for name in ARTIFACT_FAULTS]
        others = {"model": ["lora", "tiny-llama" if entry == "tiny-bert" else "tiny-bert"],
                  "artifact": ["tiny-bert", "sft" if entry in ("lora", "rm") else "lora"],
                  "store": ["docs"], "project": ["docs"]}[kind]
        found += [("wrong-kind", f"{{w}}/{other}") for other in others]
    files = fault_files()
    if kind in files:
        found += [("config" if kind == "config" else "schema", f"{{w}}/{name}") for name in files[kind]]
    if kind == "pairs":  # pairs may also be SQuAD JSON
        found += [("schema", f"{{w}}/{name}") for name in files["squad"]]
    return found


def output_faults(base: Base, target: Target, value: str | None, trains: bool, can_overwrite: bool):
    """(kind, value, extra arguments, setup, note) for an output target."""
    over = ["--overwrite"] if can_overwrite else []
    suffix = Path(value).suffix if value else ""
    found = [("output", "{w}/prompts.txt/out", [], {}, "under a regular file")]
    if suffix:
        found.append(("output", f"{{w}}/exists{suffix}", [], {f"exists{suffix}/keep.txt": "mine"}, "a folder where the output file goes"))
        found.append(("output", f"{{w}}/taken{suffix}", [], {f"taken{suffix}": "mine"}, "an existing file, no --overwrite"))
    else:
        found.append(("output", "{w}/user", [], {"user/keep.txt": "mine"}, "a folder of the user's that is not an artifact"))
        if over:
            found.append(("output", "{w}/user", over, {"user/keep.txt": "mine"}, "a folder of the user's, with --overwrite"))
    found.append(("output", ".", [], {}, "the working directory"))
    if over:
        found.append(("output", ".", over, {}, "the working directory, with --overwrite"))
    inputs = [e for e in dict.fromkeys(entry_of(t.value if isinstance(t, Pos) else t) for t in base.argv) if e]
    for entry in inputs:
        if entry == entry_of(value):
            continue
        found.append(("output", f"{{w}}/{entry}", [], {}, "an input of the command"))
        if over:
            found.append(("output", f"{{w}}/{entry}", over, {}, "an input of the command, with --overwrite"))
        if ENTRIES.get(entry) in DIR_KINDS:
            found.append(("output", f"{{w}}/{entry}/run", [], {}, "inside an input folder"))
    if trains:
        notes = {"run.work/notes.txt": "mine"}
        found += [("collision", "{w}/run", [], notes, "a user folder run.work holding a file"),
                  ("collision", "{w}/run", [], {"run.work": "a file of mine"}, "run.work is a file"),
                  ("collision", "{w}/run", [], {"mine/keep.txt": "mine", "run.work": ("link", "mine")}, "run.work links to a user folder")]
        if over:
            found += [("collision", "{w}/run", over, notes, "a user folder run.work holding a file, with --overwrite"),
                      ("collision", "{w}/run", over, {"run/keep.txt": "mine", **notes}, "run and run.work are user folders, with --overwrite")]
    return found


def build_argv(argv: list, drop: tuple, target: Target, value: str, extra: list) -> list:
    tokens, i = [], 0
    while i < len(argv):
        token = argv[i]
        if isinstance(token, Pos):
            if token.name not in drop:
                tokens.append(Pos(token.name, value) if target.positional and token.name == target.name else token)
        elif token in drop:
            i += 2
            continue
        else:
            tokens.append(token)
        i += 1
    if not target.positional:
        where = next((j for j, t in enumerate(tokens) if isinstance(t, str) and t in target.opts), None)
        if where is None:
            tokens += [target.name, value]
        else:
            tokens[where + 1] = value
    flat = [t.value if isinstance(t, Pos) else t for t in tokens]
    return flat + [e for e in extra if e not in flat]


def generate(only: set[str] | None = None) -> tuple[list[Case], dict]:
    """Every case, and what was not swept (commands without a base, or without value-taking options)."""
    specs = command_specs()
    bases = make_bases(specs)
    classes = param_classes()
    representative = covering_class(specs.get(REPRESENTATIVE_TRAIN, []), classes)
    cases: list[Case] = []
    for command, base in bases.items():
        if command not in specs or only and command not in only:
            continue
        names = {t.name for t in specs[command]} | {o for t in specs[command] for o in t.opts}
        targets = [t for t in specs[command] if t.type != "flag"]
        cls = covering_class(specs[command], classes)
        trains = "--epochs" in names or "--steps" in names
        for target in targets:
            if (command.startswith("train ") and command != REPRESENTATIVE_TRAIN and target.name in
                    {t.name for t in specs[REPRESENTATIVE_TRAIN] if t.type != "flag"} and signature(cls, target.name) == signature(representative, target.name)):
                continue
            argv = base.alt.get(target.name, base.argv)
            drop = base.drop.get(target.name, ())
            spec = flags(cls).get(target.name) if cls else None
            value = base_value(argv, target)
            made = [(kind, v, [], {}, "") for kind, v in option_values(target, spec)]
            is_output = target.name == "--output" or (command, target.name) in OUTPUT_TARGETS
            if is_output:
                made += output_faults(base, target, value, trains, "--overwrite" in names)
            else:
                entry = entry_of(value) or (TARGET_ENTRY.get(target.name) if value is None else None)
                if entry or target.name == "--config" or target.type == "path":
                    made += [(kind, v, [], {}, "") for kind, v in input_faults(target, entry or "")]
            seen = set()
            for kind, v, extra, setup, note in made:
                key = (v, tuple(extra), tuple(setup))
                if key in seen:
                    continue
                seen.add(key)
                cases.append(Case(command, target.name, v, kind, build_argv(argv, drop, target, v, extra), note, setup, base.writes))
    missing = {"no base invocation": sorted(c for c, t in specs.items() if c not in bases and any(x.type != "flag" for x in t)),
               "no value-taking option or argument": sorted(c for c, t in specs.items() if not t)}
    return cases, missing
