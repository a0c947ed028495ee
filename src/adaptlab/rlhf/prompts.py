"""The prompts a policy is trained and evaluated on, read without importing torch (the commands read them before
any model loads, so a missing or malformed file is one line at once)."""

from __future__ import annotations

import numpy as np

from adaptlab.errors import AdaptlabError


def read_prompts(source: str, column: str = "prompt", n: int | None = None, seed: int = 0) -> list[str]:
    """'imdb' / 'rotten_tomatoes': n (default 512) review openings drawn with ``seed``; otherwise the first n
    prompts of a file (all when n is None)."""
    if not str(source).strip():
        raise AdaptlabError("--prompts is empty; give 'imdb' or a prompts file")
    if source in ("imdb", "rotten_tomatoes"):
        return review_prompts(n or 512, seed=seed, source=source)
    from adaptlab.data import read_texts

    return read_texts(source, column)[:n]


def review_prompts(n: int = 512, seed: int = 0, source: str = "imdb") -> list[str]:
    """The classic demonstration's prompts: the first 2-8 words of movie reviews (line breaks removed)."""
    from adaptlab.data import load_data

    texts = load_data(source).texts
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(texts), min(n, len(texts)), replace=False)
    return [" ".join(texts[i].replace("<br />", " ").split()[: int(rng.integers(2, 9))]) for i in chosen]
