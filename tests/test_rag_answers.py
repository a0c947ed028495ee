"""What rag ask shows about its answer: citations only of passages it retrieved, and whether they support it."""

from __future__ import annotations

import json

import pytest

from adaptlab.rag.answer import Answer
from adaptlab.rag.stores.base import ChunkRow, Hit
from adaptlab.loopback import serve_in_background


def hits(*texts: str) -> list[Hit]:
    return [Hit(0.9, ChunkRow(f"c{i}", f"doc{i}.txt", "", f"Doc {i}", 0, 0, len(t), t)) for i, t in enumerate(texts)]


def test_citations_of_passages_not_retrieved_are_removed_and_reported():
    answer = Answer("q", "It was built in 1889 [1] by Eiffel [3] and [12].", hits("Built in 1889.", "By Gustave Eiffel.")).finish()
    assert answer.text == "It was built in 1889 [1] by Eiffel and." and answer.invalid_citations == [3, 12]
    assert answer.cited == [1]
    clean = Answer("q", " Paris [2] ", hits("a", "Paris")).finish()
    assert clean.text == "Paris [2]" and clean.invalid_citations == []


def test_support_is_the_share_of_the_answers_words_found_in_the_passages():
    sources = hits("The Eiffel Tower was completed in 1889 for the World's Fair.", "Paris is the capital of France.")
    supported = Answer("q", "The tower was completed in 1889 [1].", sources).finish()
    assert supported.support == 1.0 and supported.supported is True
    made_up = Answer("q", "Napoleon designed it during the Renaissance.", sources).finish()
    assert made_up.support < 0.5 and made_up.supported is False
    assert Answer("q", "I do not know.", sources).finish().supported is True  # an abstention is not a made-up answer
    assert Answer("q", "Paris.", []).finish().supported is None  # closed-book: nothing to be supported by
    summary = made_up.summary()
    assert set(summary) == {"answer", "cited", "invalid_citations", "support", "supported"}


def test_rag_ask_json_reports_support_and_the_listing_escapes_document_text(cli, tmp_path, tiny_bert, tiny_llama):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "markup.txt").write_text("[bold red]Not markup[/] The museum opens at nine in the morning every day.")
    assert cli("rag", "index", docs, "--store", tmp_path / "store", "--model", tiny_bert)[0] == 0
    code, out, err = cli("rag", "ask", "When does the museum open?", "--store", tmp_path / "store", "--model", tiny_llama,
                         "--max-new-tokens", "8", "--json")
    assert code == 0, err
    reply = json.loads(out)
    assert {"support", "supported", "invalid_citations"} <= set(reply) and reply["sources"]
    assert all(1 <= n <= len(reply["sources"]) for n in reply["cited"])
    code, out, err = cli("rag", "search", "museum", "--store", tmp_path / "store")
    assert code == 0 and "[bold" in out, out  # shown as written: rich markup inside a document is not applied


# -- a model as the judge (rag eval --judge) ------------------------------------------------------------------------
class KeywordJudge:
    """Says yes exactly when the prompt holds 'Paris': a judge whose right answers are known."""

    name = "keyword"

    def yes(self, prompts):
        import numpy as np

        return np.array([float("Paris" in p.split("Is every")[0].split("Does this")[0]) for p in prompts])


def test_judge_scores_and_its_agreement_with_gold_are_aggregated_per_question():
    from adaptlab.rag.judge import judge_answers

    samples = [
        {"question": "Capital of France?", "answer": "Paris", "passages": ["Paris is the capital.", "Berlin is big."],
         "gold_passage": [True, False], "f1": 1.0},
        {"question": "Capital of Germany?", "answer": "Rome", "passages": ["Berlin is the capital.", "Rome is old."],
         "gold_passage": [True, False], "f1": 0.0},
    ]
    judged = judge_answers(KeywordJudge(), samples)
    assert judged["faithfulness"] == 0.5 and judged["scores"]["faithfulness"] == [1.0, 0.0]
    assert judged["scores"]["context_relevance"] == [0.5, 0.0] and judged["context_relevance"] == 0.25
    assert judged["agreement"]["faithfulness_vs_correct_answer_auc"] == 1.0  # yes on the right answer only
    # gold passages scored [1, 0], the others [0, 0]: of the four (gold, other) pairs 2 won, 2 tied -> (2 + 2 / 2) / 4
    assert judged["agreement"]["context_relevance_vs_gold_passage_auc"] == 0.75


@pytest.fixture(scope="module")
def served_llama(tiny_llama):
    """``adaptlab serve`` on a tiny Llama (served as "tiny"): its OpenAI-compatible root, ``.../v1``."""
    from adaptlab.serve import ServeOptions, create_app, load_registry

    registry = load_registry({}, [f"tiny={tiny_llama}"], None, "cpu")
    with serve_in_background(create_app(registry, ServeOptions()), "adaptlab serve") as root:
        yield f"{root}/v1"


def test_rag_eval_judges_with_a_local_model_and_with_adaptlab_serve(cli, tmp_path, tiny_bert, tiny_llama, served_llama):
    from test_rag import synthetic_squad

    squad = synthetic_squad(tmp_path / "squad.json", articles=6)
    for number, judge in enumerate((str(tiny_llama), f"{served_llama}#tiny")):
        code, out, err = cli("rag", "eval", "--squad", squad, "--answers", "3", "--model", tiny_llama, "--judge", judge,
                             "-o", tmp_path / f"eval{number}", "--json")
        assert code == 0, err
        judged = json.loads(out)["answers"]["judged"]
        assert judged["n"] == 3 and judged["judge"] == judge
        assert 0 <= judged["faithfulness"] <= 1 and 0 <= judged["context_relevance"] <= 1
        assert set(judged["agreement"]) == {"context_relevance_vs_gold_passage_auc", "faithfulness_vs_correct_answer_auc"}
        if number == 1:  # a served judge's replies are read as yes (1) or anything else (0)
            assert set(judged["scores"]["faithfulness"]) <= {0.0, 1.0}
        assert "Judged by" in (tmp_path / f"eval{number}" / "results.md").read_text()


def test_bad_judge_options_exit_2(cli, tmp_path):
    from test_rag import synthetic_squad

    squad = synthetic_squad(tmp_path / "squad.json", articles=3)
    for args, message in ((("--judge", "http://127.0.0.1:9/v1"), "#MODEL"), (("--judge", "smollm2-135m"), "--answers N"),
                          (("--answers", "2", "--judge", "http://127.0.0.1:9/v1#x"), "no usable reply")):
        code, _, err = cli("rag", "eval", "--squad", squad, "-o", tmp_path / "e", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
