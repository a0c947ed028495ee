"""Re-rank the top-N chunks a search returns with a model that reads the question and the chunk together.

A first-stage retriever embeds the question and the chunk apart (dense) or matches words (BM25); a re-ranker
reads both at once, which is more accurate and much more expensive, so it only sees the first ``depth``
candidates (default 20) and keeps the best ``k``. Two kinds:

- ``cross-encoder:NAME``: a sentence-transformers ``CrossEncoder`` (e.g. ``cross-encoder/ms-marco-MiniLM-L6-v2``
  online, or a local directory) scores each (question, chunk) pair. Cost: ``depth`` encoder passes per query.
- ``likelihood`` (or ``likelihood:MODEL``, default the packaged SmolLM2): the reader's own judgement, as in UPR
  (Sachan et al., 2022): the mean log-likelihood of the question given "Passage: ... Please write a question
  based on this passage." Needs no extra model when the reader is loaded anyway. Cost: ``depth`` causal-LM
  passes of about a chunk's length per query (about a second per query for 20 chunks with SmolLM2-135M on 2 CPU
  cores), so it suits interactive ``ask`` more than bulk evaluation.

A re-ranked hit's score is the re-ranker's (a log-probability or a cross-encoder logit), comparable within a query.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.rag.stores.base import Hit

DEFAULT_DEPTH = 20
UPR_PROMPT = "Passage: {title}: {text}\nPlease write a question based on this passage.\nQuestion:"


class Reranker(Protocol):
    name: str

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]: ...


def _top(hits: list[Hit], scores, k: int) -> list[Hit]:
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]  # ties keep the first stage's order
    return [Hit(float(scores[i]), hits[i].chunk) for i in order]


class CrossEncoderReranker:
    def __init__(self, model: str, device: str | None = None) -> None:
        from sentence_transformers import CrossEncoder

        from adaptlab.runtime import Runtime

        self.name = f"cross-encoder:{model}"
        try:
            self.model = CrossEncoder(model, device=str(Runtime(device).torch_device))
        except OSError as exc:
            raise AdaptlabError(f"--rerank {self.name}: cannot load it ({str(exc).splitlines()[0]})") from None

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]:
        if not hits:
            return []
        scores = self.model.predict([(question, hit.chunk.text) for hit in hits], show_progress_bar=False)
        return _top(hits, np.asarray(scores).reshape(len(hits), -1)[:, -1], k)


class LikelihoodReranker:
    """Query likelihood under a causal LM (UPR): log p(question | passage prompt) per question token."""

    def __init__(self, model: str = "smollm2-135m", device: str | None = None) -> None:
        from adaptlab.models.causal import load_causal_lm
        from adaptlab.prompting.scoring import LabelScorer

        self.name = f"likelihood:{model}"
        lm, tokenizer, _ = load_causal_lm(model, device)
        self.scorer = LabelScorer(lm, tokenizer, batch_size=8, reuse_prefix=False, normalize_length=True)

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]:
        if not hits:
            return []
        prompts = [("", UPR_PROMPT.format(title=hit.chunk.title, text=hit.chunk.text)) for hit in hits]
        return _top(hits, self.scorer.score(prompts, [" " + question.strip()])[:, 0], k)


def check_rerank(spec: str | None, depth: int = DEFAULT_DEPTH) -> None:
    """The spelling and depth, checked before any model loads."""
    if spec not in (None, "none"):
        kind, _, model = spec.partition(":")
        if kind not in ("likelihood", "cross-encoder") or (kind == "cross-encoder" and not model):
            raise AdaptlabError(f"--rerank must be none, likelihood[:MODEL] or cross-encoder:MODEL, not '{spec}'")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise AdaptlabError(f"--rerank-depth must be a whole number of at least 1, not {depth!r}")


def make_reranker(spec: str | None, device: str | None = None) -> Reranker | None:
    """``None``/``none`` -> no re-ranking; ``likelihood[:MODEL]``; ``cross-encoder:NAME``."""
    check_rerank(spec)
    if spec in (None, "none"):
        return None
    kind, _, model = spec.partition(":")
    return LikelihoodReranker(model or "smollm2-135m", device) if kind == "likelihood" else CrossEncoderReranker(model, device)
