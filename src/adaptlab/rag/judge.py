"""A model as the judge of RAG answers: faithfulness (is the answer supported by the passages it was given?) and
context relevance (does a retrieved passage help answer the question?), for ``rag eval --judge``.

Each is one yes/no question to the judge, asked with the prompts below (also in the docs). A local causal LM
(a name, path or sft artifact) answers by *scoring* the two words: the judgement is p(yes) / (p(yes) + p(no)) from
its next-token distribution after its chat template's assistant turn, so nothing is parsed and every question gets
a graded score. A served model (an OpenAI-compatible ``/v1`` URL, ``adaptlab serve`` included; the model after
``#``: ``http://127.0.0.1:8000/v1#smollm2-135m``) is asked the same question with greedy decoding; its reply
scores 1 when it starts with "yes", 0 otherwise.

Judges are fallible, small ones very much so; ``agreement`` measures this one where gold answers exist: context
relevance against whether the passage belongs to the question's gold document, faithfulness against whether the
answer is right (token F1 >= 0.5), each as ROC AUC (0.5 = the judge tells nothing).
"""

from __future__ import annotations

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.rag.served import check_spec, is_served, probe, reply

FAITHFULNESS_PROMPT = ("Passages:\n{passages}\n\nAnswer: {answer}\n\nIs every statement of the answer supported by the "
                       "passages above? Reply with yes or no.")
RELEVANCE_PROMPT = ("Question: {question}\n\nPassage: {passage}\n\nDoes this passage contain information that answers "
                    "the question? Reply with yes or no.")
WORDS = ("Yes", "No")


def check_judge(spec: str | None) -> None:
    """The spelling of ``--judge``, checked before any model loads."""
    if spec is None:
        return
    if not spec.strip():
        raise AdaptlabError("--judge is empty; give a causal LM, or an OpenAI-compatible URL such as http://127.0.0.1:8000/v1#MODEL")
    check_spec(spec, "--judge")


def probe_judge(spec: str | None) -> None:
    """A served judge answers and serves its model: checked before any evaluation work."""
    if is_served(spec):
        probe(spec, "--judge")


def make_judge(spec: str, device: str | None = None):
    check_judge(spec)
    return EndpointJudge(spec) if is_served(spec) else LocalJudge(spec, device)


class LocalJudge:
    """p(yes) of a local causal LM, scored rather than generated."""

    def __init__(self, model: str, device: str | None = None) -> None:
        from adaptlab.generation import Generator
        from adaptlab.prompting.scoring import LabelScorer

        self.name = model
        self.generator = Generator(model, device)
        self.scorer = LabelScorer(self.generator.model, self.generator.tokenizer, batch_size=8, reuse_prefix=False)

    def yes(self, prompts: list[str]) -> np.ndarray:
        rendered = [("", self.generator.render_chat(prompt)) for prompt in prompts]
        scores = self.scorer.score(rendered, list(WORDS))
        return np.exp(scores[:, 0] - np.logaddexp(scores[:, 0], scores[:, 1]))


class EndpointJudge:
    """Greedy replies of a served OpenAI-compatible chat model: 1 for a reply starting with yes, else 0."""

    def __init__(self, spec: str) -> None:
        self.name = spec

    def yes(self, prompts: list[str]) -> np.ndarray:
        return np.array([float(reply(self.name, p, 3, "--judge").strip().lower().startswith("yes")) for p in prompts])


def judge_answers(judge, samples: list[dict]) -> dict:
    """Faithfulness of each RAG answer to its passages and relevance of each passage to its question.

    ``samples``: ``{"question", "answer", "passages": [text], "gold_passage": [bool] | None, "f1": float | None}``.
    """
    faithful = judge.yes([FAITHFULNESS_PROMPT.format(passages=_numbered(s["passages"]), answer=s["answer"] or "(empty)")
                          for s in samples])
    pairs = [(i, passage) for i, s in enumerate(samples) for passage in s["passages"]]
    relevant = judge.yes([RELEVANCE_PROMPT.format(question=samples[i]["question"], passage=p) for i, p in pairs])
    per_question = [float(np.mean([r for (i, _), r in zip(pairs, relevant) if i == n])) if samples[n]["passages"] else 0.0
                    for n in range(len(samples))]
    result = {"judge": judge.name, "n": len(samples), "faithfulness": round(float(np.mean(faithful)), 4),
              "context_relevance": round(float(np.mean(per_question)), 4)}
    gold = [g for s in samples for g in (s.get("gold_passage") or [None] * len(s["passages"]))]
    right = [s.get("f1") for s in samples]
    result["agreement"] = {
        "context_relevance_vs_gold_passage_auc": _auc(relevant, gold),
        "faithfulness_vs_correct_answer_auc": _auc(faithful, [None if f is None else f >= 0.5 for f in right]),
    }
    result["scores"] = {"faithfulness": [round(float(x), 4) for x in faithful], "context_relevance": per_question}
    return result


def _numbered(passages: list[str]) -> str:
    return "\n\n".join(f"[{n}] {text}" for n, text in enumerate(passages, start=1))


def _auc(scores, labels) -> float | None:
    """ROC AUC of ``scores`` for the True ``labels`` (None labels skipped; None when one class is missing)."""
    pairs = [(s, bool(l)) for s, l in zip(scores, labels) if l is not None]
    positives = [s for s, l in pairs if l]
    negatives = [s for s, l in pairs if not l]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 4)
