"""The items of the task YAMLs beside this file (their ``custom_dataset``), built from adaptlab's packaged data.

lm-evaluation-harness loads this file by path and calls these functions with the task's ``metadata`` as keyword
arguments: ``size`` (how many Rotten Tomatoes sentences, default 200: the forgetting probe's) and ``limit`` (how
many Wikipedia summaries; default all 64).
"""

from __future__ import annotations


def rotten_tomatoes(size: int = 200, **_) -> dict:
    """The forgetting probe's items: {"question": RT_QUESTION + sentence, "label": 0 negative / 1 positive}."""
    from datasets import Dataset, DatasetDict

    from adaptlab.sft.evaluate import RT_QUESTION, rotten_tomatoes_probe

    texts, labels = rotten_tomatoes_probe(int(size))
    return DatasetDict({"test": Dataset.from_dict({"question": [RT_QUESTION + t for t in texts],
                                                   "label": [int(k) for k in labels]})})


def wikipedia(limit: int | None = None, **_) -> dict:
    """The default forgetting sample: held-out Wikipedia summaries, {"text"}."""
    from datasets import Dataset, DatasetDict

    from adaptlab.data.generation import general_text_sample

    texts = general_text_sample()
    return DatasetDict({"test": Dataset.from_dict({"text": texts[: int(limit)] if limit else texts})})
