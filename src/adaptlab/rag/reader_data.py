"""Training data for an adapted reader: the exact prompt ``rag ask`` builds (retrieved chunks numbered [1]..[k],
the question, "answer with a short phrase"), answered the way a user wants: the gold span and the number of the
passage it comes from, ``Denver Broncos [2]``.

The reader learns from what the retriever really returns, so it learns to pick the passage that holds the answer
among distractors. When the top ``k`` misses the gold paragraph, the gold chunk replaces the last hit at a seeded
position: every example is answerable, and the reader still sees the retriever's distractors beside it. The
conversations (system, user, assistant) are what ``adaptlab sft train --data`` trains on (loss on the answer only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adaptlab._io import atomic_file
from adaptlab.errors import AdaptlabError
from adaptlab.rag.answer import build_prompt
from adaptlab.rag.evaluate import Query, load_squad
from adaptlab.rag.retrieval import Retrieval


def reader_conversations(index, squad: str | Path | list[Query], k: int = 3, seed: int = 0, limit: int | None = None,
                         progress: bool = True) -> tuple[list[dict], dict]:
    """Conversations for SFT from a SQuAD-format file whose paragraphs ``index`` holds (``rag eval --squad``
    or ``rag index`` of its paragraphs), or from its questions as ``load_squad`` returns them (``rag reader-data``
    checks the file before the index loads), and counts: examples, gold inserted, skipped (answer not in any chunk)."""
    from adaptlab.progress import progress_bar

    if k < 1:
        raise AdaptlabError(f"-k must be at least 1, not {k}")
    if limit is not None and limit < 1:
        raise AdaptlabError(f"--limit must be at least 1, not {limit}")
    queries = squad if isinstance(squad, list) else load_squad(Path(squad))[1]
    queries = [q for q in queries if q.answers][:limit]
    rng = np.random.default_rng(seed)
    rows, inserted, skipped = [], 0, 0
    with progress_bar("building reader examples", len(queries), progress) as advance:
        for query in queries:
            answer = query.answers[0]
            hits = index.search(query.question, k)
            cite = next((n for n, hit in enumerate(hits, start=1) if answer in hit.chunk.text), None)
            if cite is None:
                (paragraph,) = query.relevant
                gold = [h for h in index.search(query.question, 5, Retrieval(index.retrieval.mode, where=(("locator", paragraph),)))
                        if answer in h.chunk.text]
                if not gold:
                    skipped += 1  # the answer straddles two chunks of its paragraph
                    advance(1)
                    continue
                cite = int(rng.integers(1, len(hits) + 1)) if hits else 1
                hits = hits[:cite - 1] + [gold[0]] + hits[cite - 1:len(hits) - 1] if hits else [gold[0]]
                inserted += 1
            system, user = build_prompt(query.question, hits, short=True)
            rows.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                      {"role": "assistant", "content": f"{answer} [{cite}]"}]})
            advance(1)
    return rows, {"examples": len(rows), "gold_inserted": inserted, "skipped": skipped, "k": k}


def write_conversations(rows: list[dict], path: str | Path) -> None:
    with atomic_file(Path(path)) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
