"""How chunks are found: by meaning (dense vectors), by words (BM25 full-text), or both fused.

Dense retrieval finds paraphrases and misses rare exact terms (names, numbers, codes); BM25 finds those and
misses paraphrases. ``hybrid`` runs both to a depth of ``FUSION_DEPTH`` and fuses the two rankings by
reciprocal rank fusion (Cormack et al., 2009; what Elasticsearch, Weaviate and LlamaIndex's fusion retriever
use): a chunk scores ``sum(weight / (RRF_K + rank))`` over the rankings it appears in. RRF needs no score
calibration between the two (cosine similarities and BM25 scores live on unrelated scales); the weights tilt it.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.errors import AdaptlabError
from adaptlab.rag.stores.base import Hit

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60  # the constant of the RRF paper (and of Elasticsearch's default)
FUSION_DEPTH = 50  # each ranking's depth before fusing


@dataclass(frozen=True)
class Retrieval:
    """A search's settings: ``mode``, the two rankings' weights for ``hybrid``, exact-match ``where`` filters."""

    mode: str = "dense"
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    where: tuple[tuple[str, str], ...] | dict[str, str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.where, dict):  # the API's natural spelling, kept as pairs (hashable, ordered)
            object.__setattr__(self, "where", tuple(self.where.items()))
        if not all(isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair) for pair in self.where):
            raise AdaptlabError(f"where must map field names to strings, not {self.where!r}")
        if self.mode not in MODES:
            raise AdaptlabError(f"--retrieval must be one of {', '.join(MODES)}, not '{self.mode}'")
        for option, weight in (("--dense-weight", self.dense_weight), ("--bm25-weight", self.bm25_weight)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
                raise AdaptlabError(f"{option} must be a number >= 0, not {weight!r}")
        if self.mode == "hybrid" and self.dense_weight == self.bm25_weight == 0:
            raise AdaptlabError("--dense-weight and --bm25-weight are both 0: give one of them a weight")

    @property
    def filters(self) -> dict[str, str] | None:
        return dict(self.where) or None


def parse_filters(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``["topic=Science", "source=a.md"]`` -> ``(("topic", "Science"), ("source", "a.md"))``."""
    parsed = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AdaptlabError(f"--where '{pair}' must be FIELD=VALUE, e.g. --where topic=Science or --where source=notes.md")
        parsed.append((key.strip(), value))
    keys = [key for key, _ in parsed]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise AdaptlabError(f"--where names {', '.join(repeated)} more than once (filters are combined with AND)")
    return tuple(parsed)


def reciprocal_rank_fusion(rankings: list[list[Hit]], weights: list[float], k: int, constant: int = RRF_K) -> list[Hit]:
    """The top ``k`` chunks by weighted reciprocal rank over ``rankings`` (best first); each hit's score is its
    fused score. Ties go to the chunk ranked first by the earlier ranking."""
    fused: dict[str, float] = {}
    chunks = {}
    for ranking, weight in zip(rankings, weights):
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.chunk.id] = fused.get(hit.chunk.id, 0.0) + weight / (constant + rank)
            chunks.setdefault(hit.chunk.id, hit.chunk)
    order = sorted(fused, key=lambda chunk_id: -fused[chunk_id])  # stable: first seen wins a tie
    return [Hit(fused[chunk_id], chunks[chunk_id]) for chunk_id in order[:k]]
