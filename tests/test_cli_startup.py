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
