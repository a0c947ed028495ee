"""Fast sentence embeddings from a frozen transformer, with an on-disk cache.

Why it is fast on a CPU: texts are tokenized once, sorted by token length and batched so each batch pads
only to its own longest text; the forward pass runs under ``torch.inference_mode``; and where the hardware
does bfloat16 natively (CPUs with AVX512-BF16/AMX, recent GPUs) matrix products run in bf16 autocast, which
changes embeddings by less than 1e-4 in cosine (see ``benchmarks/``). Embeddings are cached in SQLite,
keyed by the model's fingerprint, the pooling settings and the text, so re-runs and other strategies
reuse them without loading the model at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.models import cache_root, load_backbone, load_tokenizer, resolve_model
from adaptlab.models.loading import pad_batch, pad_id, pool
from adaptlab.progress import progress_bar
from adaptlab.runtime import Runtime

Pooling = Literal["mean", "cls", "last"]
POOLINGS = ("mean", "cls", "last")
MAX_DEFAULT_LENGTH = 512
FLUSH_EVERY = 1024  # texts between writes to the embedding cache


class Embedder:
    """Turns texts into fixed-size vectors with a frozen model (``minilm`` by default).

    Pooling: ``mean`` over real tokens (what sentence-transformers models are trained for), ``cls`` (the
    first token), or ``last`` (the last real token: the natural choice for decoder models).
    """

    def __init__(
        self,
        model: str = "minilm",
        pooling: Pooling = "mean",
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        precision: str = "auto",
        normalize: bool = False,
        device: str | None = None,
        cache: bool = True,
        progress: bool = True,
    ) -> None:
        if pooling not in POOLINGS:
            raise AdaptlabError(f"--pooling must be one of {', '.join(POOLINGS)}, not '{pooling}'")
        if batch_size < 1:
            raise AdaptlabError(f"--batch-size must be at least 1, not {batch_size}")
        self.model_name = model
        self.ref = resolve_model(model)
        self.pooling = pooling
        self.batch_size = batch_size
        runtime = Runtime(device, precision)
        self.device = runtime.torch_device
        self.precision = runtime.resolved_precision()
        self.normalize = normalize
        self.use_cache = cache
        self.progress = progress
        self._max_length = max_length
        self._model = None
        self._tokenizer = None

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """Texts are truncated to this many tokens: the model's own sentence length when it declares one."""
        if self._max_length is None:
            self._max_length = _default_max_length(self.ref.path, self.tokenizer) if self.ref.local else min(
                self.tokenizer.model_max_length, MAX_DEFAULT_LENGTH
            )
        return self._max_length

    def settings(self) -> dict:
        """Everything that determines the vectors; stored in artifacts and used as the cache key."""
        return {
            "model": self.model_name,
            "model_fingerprint": self.ref.fingerprint(),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "precision": self.precision,
            "normalize": self.normalize,
        }

    @contextlib.contextmanager
    def fresh(self):
        """Within this block every vector is recomputed (no cache, no progress bar): for honest timings."""
        saved = self.use_cache, self.progress
        self.use_cache, self.progress = False, False
        try:
            yield
        finally:
            self.use_cache, self.progress = saved

    # -- model --------------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.ref)
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            self._model = load_backbone(self.ref).to(self.device)
        return self._model

    # -- embedding ----------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), in the order of ``texts`` (one string: one text)."""
        from adaptlab.data.dataset import as_texts

        texts = as_texts(texts)
        if not texts:
            raise AdaptlabError("no texts to embed")
        if not self.use_cache:
            return self._compute(texts)
        with EmbeddingCache.open(self._cache_key()) as cache:
            found = cache.get(texts)
            missing = sorted({t for t in texts if t not in found})
            if missing:
                # Stored every few batches, so an interrupted run resumes where it stopped.
                vectors = self._compute(missing, flush=lambda idx, vecs: cache.put([missing[i] for i in idx], vecs))
                found.update(zip(missing, vectors))
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _cache_key(self) -> str:
        settings = self.settings()
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]

    def _compute(self, texts: list[str], flush: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        """Embed ``texts``; ``flush(indices, vectors)`` receives finished rows every ~``FLUSH_EVERY`` texts."""
        import torch

        tokenizer, model = self.tokenizer, self.model
        padding = pad_id(tokenizer)
        token_ids = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(ids) for ids in token_ids], kind="stable")  # longest first: fail fast on memory
        out: np.ndarray | None = None
        autocast = Runtime(str(self.device), self.precision).autocast()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pending: list[np.ndarray] = []
        with torch.inference_mode(), autocast, progress_bar(
            f"embedding {len(texts)} texts", total=len(texts), enabled=self.progress
        ) as advance:
            for batch in batches:
                ids, mask = pad_batch([token_ids[i] for i in batch], padding)
                hidden = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                pooled = pool(hidden.float(), mask.to(self.device), self.pooling)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                if out is None:
                    out = np.empty((len(texts), pooled.shape[-1]), dtype=np.float32)
                out[batch] = pooled.cpu().numpy()
                advance(len(batch))
                pending.append(batch)
                if flush and sum(map(len, pending)) >= FLUSH_EVERY:
                    done = np.concatenate(pending)
                    flush(done, out[done])
                    pending = []
        assert out is not None
        if flush and pending:
            done = np.concatenate(pending)
            flush(done, out[done])
        return out


def _default_max_length(path: str, tokenizer) -> int:
    """The sentence-transformers length the model declares, else the tokenizer's (at most ``MAX_DEFAULT_LENGTH``);
    never more than the positions the model has (a small model behind a long-context tokenizer)."""
    sentence_config = Path(path) / "sentence_bert_config.json"
    declared = json.loads(sentence_config.read_text()).get("max_seq_length") if sentence_config.exists() else None
    length = int(declared) if declared else int(min(tokenizer.model_max_length, MAX_DEFAULT_LENGTH))
    try:
        positions = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        positions = None
    return min(length, int(positions)) if isinstance(positions, int) and positions > 0 else length


class EmbeddingCache:
    """One SQLite file per embedding setting: text hash -> float32 vector. WAL mode, one transaction a write."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @classmethod
    @contextlib.contextmanager
    def open(cls, key: str):
        directory = cache_root() / "embeddings"
        directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(directory / f"{key}.sqlite", timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
            yield cls(db)
        finally:
            db.close()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()[:16]

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        by_key = {self._key(t): t for t in texts}
        keys = list(by_key)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            for key, blob in rows:
                found[by_key[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                ((self._key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)),
            )
