"""The command line answers fast: a validation error, --help and `models` import no model library.

Timing itself lives in ``benchmarks/startup.py`` (``benchmarks/results/startup.json``); here the cause is tested:
which heavy modules a real ``adaptlab`` process imports before it answers (``python -X importtime``)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "transformers", "lightning", "sklearn", "scipy", "peft", "sentence_transformers", "datasets",
         "skops", "pandas", "fastapi", "lancedb", "matplotlib")


def run(*argv: str, cwd) -> tuple[subprocess.CompletedProcess, set[str], float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "adaptlab", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    seconds = time.perf_counter() - start
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +([\w.]+)$", done.stderr, flags=re.M))
    return done, {name for name in imported if name.split(".")[0] in HEAVY}, seconds


def messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.parametrize("argv", [
    ("train", "features", "--data", "missing.csv"),
    ("train", "lora", "--data", "missing.csv"),
    ("sft", "train", "--data", "missing.jsonl"),
    ("rlhf", "reward", "--data", "missing.jsonl", "-o", "rm"),
    ("predict", "no-such-artifact", "some text"),
    ("serve", "no-such-artifact"),
    ("compare", "--data", "missing.csv"),
])
def test_a_validation_error_is_one_line_before_any_model_library_loads(argv, tmp_path):
    done, heavy, seconds = run(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = messages(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("adaptlab: error: ") and "Traceback" not in done.stderr, lines
    assert not heavy, f"imported before answering: {sorted(heavy)} ({seconds:.1f} s)"


@pytest.mark.parametrize("argv", [("--help",), ("models",), ("train", "--help"), ("train", "lora", "--help"),
                                  ("sft", "train", "--help"), ("rlhf", "ppo", "--help"), ("serve", "--help")])
def test_help_and_models_import_no_model_library(argv, tmp_path):
    done, heavy, seconds = run(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not heavy, f"imported for {' '.join(argv)}: {sorted(heavy)} ({seconds:.1f} s)"


#: what must not load before a wrong value is refused: the libraries that take seconds to import
MODEL_LIBRARIES = ("torch", "transformers", "lightning", "peft", "sentence_transformers", "lancedb", "trl")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, tiny_bert, tiny_llama):
    """A trained artifact, models (one with truncated weights), stores that are not stores, malformed files."""
    import shutil

    import adaptlab
    from adaptlab.data import load_data, split_data
    from conftest import sentiment_rows, write_csv, write_jsonl

    root = tmp_path_factory.mktemp("fast-refusals")
    data = write_csv(root / "data.csv", sentiment_rows(10))
    write_jsonl(root / "chat.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(12)])
    write_jsonl(root / "docs.jsonl", [["not", "an", "object"]])
    write_jsonl(root / "examples.jsonl", [{"input": "x"}])
    (root / "texts.txt").write_text("a fine film\n", encoding="utf-8")
    (root / "empty-store").mkdir()
    (root / "folder").mkdir()
    (root / "folder" / "notes.txt").write_text("mine", encoding="utf-8")
    adaptlab.train("lora", split_data(load_data(data), seed=0), root / "lora", model=str(tiny_bert), epochs=1, progress=False)
    shutil.copytree(tiny_bert, root / "cut-bert")
    weights = root / "cut-bert" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "bert").symlink_to(tiny_bert)
    (root / "llama").symlink_to(tiny_llama)
    return root


FAST_REFUSALS = {
    "predict: missing --file, before the artifact loads": (["predict", "lora", "--file", "missing.txt"], "does not exist"),
    "train: Hub name while offline": (["train", "icl", "--data", "data.csv", "--model", "0"], "HF_HUB_OFFLINE"),
    "train: empty --model": (["train", "lora", "--data", "data.csv", "--model", ""], "--model is empty"),
    "train: truncated weights": (["train", "lora", "--data", "data.csv", "--model", "cut-bert"], "damaged or incomplete"),
    "train: huge virtual tokens": (["train", "prompt-tuning", "--data", "data.csv", "--model", "bert", "--num-virtual-tokens",
                                    "513"], "at most 512"),
    "train: label words of the wrong form": (["train", "soft-prompt", "--data", "data.csv", "--model", "llama", "--label-words",
                                              "-1"], "label=word"),
    "sft eval: a classifier as the model": (["sft", "eval", "--data", "chat.jsonl", "--model", "lora"], "not a generator"),
    "generate: an encoder": (["generate", "hello", "--model", "bert"], "not a causal"),
    "generate: examples of the wrong shape": (["generate", "hello", "--model", "llama", "--examples", "examples.jsonl"], "line 1"),
    "serve: an encoder as generator": (["serve", "--generator", "bert", "--port", "8937"], "not a causal"),
    "rlhf ppo: empty --device": (["rlhf", "ppo", "--reward", "lora", "--reward-label", "pos", "--model", "llama", "--device", ""],
                                 "--device must be"),
    "rlhf ppo: missing prompts": (["rlhf", "ppo", "--reward", "lora", "--reward-label", "pos", "--model", "llama", "--prompts",
                                   "missing.txt"], "does not exist"),
    "rlhf ppo: wrong reward label": (["rlhf", "ppo", "--reward", "lora", "--reward-label", "meh", "--model", "llama"],
                                     "--reward-label must be one of"),
    "rag search: an empty folder": (["rag", "search", "film", "--store", "empty-store"], "is empty"),
    "rag index: a user's folder as --store": (["rag", "index", "texts.txt", "--store", "folder"], "not an adaptlab store"),
    "rag index: no document can be indexed": (["rag", "index", "docs.jsonl", "--store", "new-store"], "no document can be indexed"),
}


@pytest.mark.parametrize("name", list(FAST_REFUSALS))
def test_a_wrong_value_is_refused_before_any_model_library_loads(name, user_files, monkeypatch):
    """Values that need a look at the user's files (a model directory's headers, an artifact's manifest, a store's
    description, a prompts file) are still refused before torch, transformers or lancedb import."""
    argv, needle = FAST_REFUSALS[name]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = sorted(p.name for p in user_files.iterdir())
    done, _, seconds = run(*argv, cwd=user_files)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = messages(done.stderr)
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr, lines
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +([\w.]+)$", done.stderr, flags=re.M))
    late = sorted(name for name in imported if name.split(".")[0] in MODEL_LIBRARIES and "." not in name)
    assert not late, f"imported before refusing: {late} ({seconds:.1f} s)"
    assert sorted(p.name for p in user_files.iterdir()) == before, "a refused run left something behind"
