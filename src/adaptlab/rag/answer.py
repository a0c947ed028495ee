"""Answer a question with retrieved context and cite it, or closed-book for comparison.

The retrieved chunks are numbered [1]..[k] in the prompt and the model is asked to cite them by number;
the reply lists every retrieved source with a mark on those the answer actually cites. A citation of a passage
that was not retrieved (``[7]`` when three were) is removed from the answer and reported, never shown as a
source. Whether the passages support the answer at all is measured by word overlap (``support``: the share of the
answer's content words found in the retrieved passages): a cheap signal that catches an answer made up from the
model's own memory, not a judgement of faithfulness.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from adaptlab.rag.stores.base import Hit

SYSTEM_RAG = ("Answer the question using only the numbered context passages. Cite the passages you use by "
              "number, like [1]. If the passages do not contain the answer, say that you do not know.")
SYSTEM_CLOSED = "Answer the question briefly and accurately."
SHORT = " Answer with a short phrase only."
#: an answer whose content words are less than this share in the retrieved passages is flagged as unsupported
MIN_SUPPORT = 0.5
STOP_WORDS = frozenset("i you he she it we they is are was were be been am do does did not no of in on at to for by "
                       "with from and or but as that this these those which who what when where why how".split())
ABSTAIN = re.compile(r"\b(do not|don't|cannot|can't) (know|tell|say|find)|\bnot (mentioned|stated|in the (context|passages))",
                     re.IGNORECASE)


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Hit] = field(default_factory=list)

    invalid_citations: list[int] = field(default_factory=list)  #: cited numbers no retrieved passage has (removed)

    @property
    def cited(self) -> list[int]:
        """The 1-based numbers of the sources the answer cites."""
        numbers = {int(n) for n in re.findall(r"\[(\d+)\]", self.text)}
        return sorted(n for n in numbers if 1 <= n <= len(self.sources))

    def finish(self) -> "Answer":
        """The generated text made safe to show: citations of passages that were not retrieved are removed (and
        listed in ``invalid_citations``)."""
        self.text = self.text.strip()
        bad = sorted({int(n) for n in re.findall(r"\[(\d+)\]", self.text)} - set(range(1, len(self.sources) + 1)))
        if bad:
            self.invalid_citations = bad
            self.text = re.sub(r"\s*\[(" + "|".join(map(str, bad)) + r")\]", "", self.text).strip()
        return self

    @property
    def support(self) -> float | None:
        """The share of the answer's content words that appear in the retrieved passages (None: closed-book or no
        content words)."""
        from adaptlab.metrics import normalize_answer

        if not self.sources:
            return None
        words = [w for w in normalize_answer(re.sub(r"\[\d+\]", " ", self.text)).split() if w not in STOP_WORDS]
        if not words:
            return None
        passages = set(normalize_answer(" ".join(hit.chunk.text + " " + hit.chunk.title for hit in self.sources)).split())
        return round(sum(w in passages for w in words) / len(words), 3)

    @property
    def supported(self) -> bool | None:
        """False when the answer is neither an abstention nor drawn from the passages' words (None closed-book)."""
        if not self.sources:
            return None
        return bool(ABSTAIN.search(self.text)) or (self.support or 0.0) >= MIN_SUPPORT

    def summary(self) -> dict:
        """What ``rag ask --json`` and ``/v1/rag/ask`` report besides the sources."""
        return {"answer": self.text, "cited": self.cited, "invalid_citations": self.invalid_citations,
                "support": self.support, "supported": self.supported}


def build_prompt(question: str, hits: list[Hit], short: bool = False) -> tuple[str, str]:
    """(system, user) messages. Without hits: the closed-book prompt."""
    if not hits:
        return SYSTEM_CLOSED, f"Question: {question}" + (SHORT if short else "")
    return SYSTEM_RAG, f"Context:\n{format_passages(hits)}\n\nQuestion: {question}" + (SHORT if short else "")


def format_passages(hits: list[Hit]) -> str:
    """The retrieved chunks numbered [1]..[k], each with its title: what a reader is asked to cite."""
    return "\n\n".join(f"[{n}] {hit.chunk.title}: {hit.chunk.text}" for n, hit in enumerate(hits, start=1))


class Answerer:
    """Retrieval (optional) + a causal LM. ``index=None`` answers closed-book."""

    def __init__(self, index, model: str = "smollm2-135m", device: str | None = None, generator=None) -> None:
        from adaptlab.generation import Generator

        self.index, self.generator = index, generator or Generator(model, device)

    def retrieve(self, question: str, k: int, retrieval=None) -> list[Hit]:
        """The top ``k`` chunks (the index's retrieval, or ``retrieval``: an ``adaptlab.rag.retrieval.Retrieval``)."""
        return [] if self.index is None or k == 0 else self.index.search(question, k, retrieval)

    def stream(self, question: str, k: int = 3, options=None, short: bool = False,
               hits: list[Hit] | None = None, launch=None) -> tuple[Answer, Iterator[str]]:
        """The answer object (sources filled now, text filled as the iterator is consumed) and the pieces;
        ``launch``: where the generation runs (see ``Generator.stream``)."""
        answer = Answer(question, sources=self.retrieve(question, k) if hits is None else hits)
        system, user = build_prompt(question, answer.sources, short)
        prompt = self.generator.render_chat(user, system)

        def pieces() -> Iterator[str]:
            for piece in self.generator.stream(prompt, options, launch):
                answer.text += piece
                yield piece
            answer.finish()

        return answer, pieces()

    def ask(self, question: str, k: int = 3, options=None, short: bool = False, hits: list[Hit] | None = None) -> Answer:
        answer = Answer(question, sources=self.retrieve(question, k) if hits is None else hits)
        system, user = build_prompt(question, answer.sources, short)
        answer.text = self.generator.generate(self.generator.render_chat(user, system), options)
        return answer.finish()
