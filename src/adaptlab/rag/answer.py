"""Answer a question with retrieved context and cite it, or closed-book for comparison.

The retrieved chunks are numbered [1]..[k] in the prompt and the model is asked to cite them by number;
the reply lists every retrieved source with a mark on those the answer actually cites.
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


@dataclass
class Answer:
    question: str
    text: str = ""
    sources: list[Hit] = field(default_factory=list)

    @property
    def cited(self) -> list[int]:
        """The 1-based numbers of the sources the answer cites."""
        numbers = {int(n) for n in re.findall(r"\[(\d+)\]", self.text)}
        return sorted(n for n in numbers if 1 <= n <= len(self.sources))


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
            answer.text = answer.text.strip()

        return answer, pieces()

    def ask(self, question: str, k: int = 3, options=None, short: bool = False, hits: list[Hit] | None = None) -> Answer:
        answer = Answer(question, sources=self.retrieve(question, k) if hits is None else hits)
        system, user = build_prompt(question, answer.sources, short)
        answer.text = self.generator.generate(self.generator.render_chat(user, system), options).strip()
        return answer
