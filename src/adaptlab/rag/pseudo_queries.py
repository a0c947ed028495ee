"""Questions a store's own chunks answer, made without labels, for choosing and tuning retrieval (``rag adapt``).

**Inverse cloze** (Lee et al., 2019, "Latent Retrieval for Weakly Supervised Open Domain QA"): a sentence of a
chunk is the query and the chunk *without that sentence* is its positive. The sentence is cut out of the positive
and is never in the overlap with a neighbouring chunk (chunks of one record overlap by ``chunk_overlap`` tokens):
otherwise BM25 would find the query's own words verbatim and every choice made on these queries would favour it.
Only whole interior sentences of 5-40 words are taken, leaving at least 20 words of passage.

**Generated questions** (``--generator``): a causal LM reads a chunk and writes one question it answers; the
positive is the whole chunk. These are closer to what users ask; they cost one generation per chunk.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adaptlab.rag.stores.base import ChunkRow

#: a sentence ends at . ! or ? followed by white space and an upper-case letter, a digit or a quote
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
MIN_WORDS, MAX_WORDS, MIN_PASSAGE_WORDS = 5, 40, 20
QUESTION_PROMPT = ("Write one question that the passage below answers. Reply with the question only.\n\n"
                   "Passage: {passage}")


@dataclass(frozen=True)
class PseudoQuery:
    question: str
    chunk: ChunkRow  #: the chunk the question came from (its document is the relevant one)
    passage: str  #: the positive passage: the chunk's text, without the question's sentence for inverse cloze
    kind: str  #: "inverse_cloze" or "generated"

    @property
    def document(self) -> str:
        """The id ``rag eval`` judges relevance by: the record's locator, else its source."""
        return self.chunk.locator or self.chunk.source


def sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of ``text``'s sentences (white space between them left out)."""
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def inverse_cloze(rows: list[ChunkRow], n: int, seed: int = 0) -> list[PseudoQuery]:
    """Up to ``n`` inverse-cloze queries, at most one per chunk, from chunks drawn at random (seeded)."""
    neighbours = defaultdict(list)  # chunks of one record, by their span in it
    for row in rows:
        neighbours[(row.source, row.locator)].append(row)
    rng = np.random.default_rng(seed)
    queries = []
    for i in rng.permutation(len(rows)):
        row = rows[i]
        spans = _candidates(row, neighbours[(row.source, row.locator)])
        if not spans:
            continue
        start, end = spans[int(rng.integers(len(spans)))]
        passage = " ".join((row.text[:start].rstrip() + " " + row.text[end:].lstrip()).split())
        queries.append(PseudoQuery(" ".join(row.text[start:end].split()), row, passage, "inverse_cloze"))
        if len(queries) == n:
            break
    return queries


def _candidates(row: ChunkRow, record_chunks: list[ChunkRow]) -> list[tuple[int, int]]:
    """Interior sentences of ``row`` of a usable length that no other chunk of its record also holds."""
    spans = sentences(row.text)[1:-1]  # the first and last may be cut by the chunk's window
    words = len(row.text.split())
    kept = []
    for start, end in spans:
        length = len(row.text[start:end].split())
        if not MIN_WORDS <= length <= MAX_WORDS or words - length < MIN_PASSAGE_WORDS:
            continue
        absolute = (row.start + start, row.start + end)
        if any(other.id != row.id and other.start < absolute[1] and absolute[0] < other.end for other in record_chunks):
            continue
        kept.append((start, end))
    return kept


def generated_questions(rows: list[ChunkRow], n: int, write: Callable[[str], str], seed: int = 0,
                        progress: bool = True) -> list[PseudoQuery]:
    """Up to ``n`` questions written by ``write`` (a prompt -> reply function: a local causal LM or a served model)
    for chunks drawn at random (seeded, a different draw from ``inverse_cloze``'s). Replies that are not one line
    ending in '?' are dropped."""
    from adaptlab.progress import progress_bar

    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(rows))[:n]
    queries = []
    with progress_bar("writing questions", len(order), progress) as advance:
        for i in order:
            row = rows[i]
            reply = write(QUESTION_PROMPT.format(passage=row.text)).strip()
            line = reply.splitlines()[0].strip() if reply else ""
            if line.endswith("?") and len(line.split()) >= 3:
                queries.append(PseudoQuery(line, row, row.text, "generated"))
            advance(1)
    return queries


def split_by_document(queries: list[PseudoQuery], held_out: float, seed: int = 0) -> tuple[list[PseudoQuery], list[PseudoQuery]]:
    """(train, held-out): no document has queries on both sides, so choices made on the held-out part are not
    made on passages the embedder was tuned on."""
    documents = sorted({q.document for q in queries}, key=lambda d: hashlib.sha256(f"{seed}\0{d}".encode()).hexdigest())
    n_held = max(1, round(len(documents) * held_out)) if documents else 0
    chosen = set(documents[:n_held])
    return [q for q in queries if q.document not in chosen], [q for q in queries if q.document in chosen]
