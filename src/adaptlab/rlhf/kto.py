"""KTO (Ethayarajh et al. 2024) on TRL's ``KTOTrainer``: learning from feedback that is not paired — each reply marked
good or bad on its own (thumbs up/down), as users give it.

Data: ``{prompt, completion, label}`` rows (JSONL, CSV or Parquet; ``label`` true/false, 1/0, up/down, good/bad), or
preference pairs, read as one thumbs-up (chosen) and one thumbs-down (rejected) row each. Whole prompts are held out
for validation and test, as for pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import lora_options, lr_help
from adaptlab.errors import AdaptlabError
from adaptlab.params import param
from adaptlab.results import JobResult
from adaptlab.rlhf.trl_policy import TRLPolicy, fit_prompt, train_policy

_UP, _DOWN = {"true", "1", "up", "good", "yes", "1.0"}, {"false", "0", "down", "bad", "no", "0.0"}


@dataclass(frozen=True)
class Thumb:
    prompt: str
    completion: str
    label: bool  # thumbs up
    group: int  # the prompt's index: the unit of the split


@dataclass
class ThumbSplit:
    train: list[Thumb]
    val: list[Thumb]
    test: list[Thumb]
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "rows": {name: len(getattr(self, name)) for name in ("train", "val", "test")},
                "thumbs_up": {name: sum(t.label for t in getattr(self, name)) for name in ("train", "val", "test")},
                "prompts": {name: len({t.group for t in getattr(self, name)}) for name in ("train", "val", "test")}}


def thumbs_from_pairs(pairs) -> list[Thumb]:
    """Each preference pair as a thumbs-up for the chosen reply and a thumbs-down for the rejected one."""
    return [thumb for p in pairs for thumb in (Thumb(p.prompt, p.chosen, True, p.group), Thumb(p.prompt, p.rejected, False, p.group))]


def read_thumbs(source: str | Path) -> list[Thumb]:
    """Unpaired feedback rows (a file, or a thumbs-mode feedback project), or preference pairs read as thumbs; one line
    naming the row and field when malformed."""
    from adaptlab.data.files import read_table

    from adaptlab.feedback import db, project

    path = Path(source)
    if path.is_dir() and (path / db.DB_NAME).is_file():  # a feedback project: its own export (thumbs or pairs)
        conn = db.connect(path)
        try:
            thumbs_mode = db.mode(conn) == "thumbs"
        finally:
            conn.close()
        if thumbs_mode:
            groups: dict[str, int] = {}
            return [Thumb(r["prompt"], r["completion"], bool(r["label"]), groups.setdefault(r["prompt"], len(groups)))
                    for r in project.export(path, "kto")]
    if path.is_file():
        frame, row_name = read_table(path, need="one {prompt, completion, label} row per reply")
        if {"prompt", "completion", "label"} <= set(frame.columns):
            groups: dict[str, int] = {}
            thumbs = []
            for index, row in enumerate(frame.to_dict("records")):
                prompt, completion, label = row["prompt"], row["completion"], str(row["label"]).strip().lower()
                if not isinstance(prompt, str) or not prompt.strip() or not isinstance(completion, str) or not completion.strip():
                    raise AdaptlabError(f"'{path}' {row_name(index)}: 'prompt' and 'completion' must be non-empty text")
                if label not in _UP | _DOWN:
                    raise AdaptlabError(f"'{path}' {row_name(index)}: 'label' must be true/false (or 1/0, up/down), not "
                                        f"{row['label']!r}")
                thumbs.append(Thumb(prompt, completion, label in _UP, groups.setdefault(prompt, len(groups))))
            return thumbs
    from adaptlab.rlhf.preferences import read_preferences

    return thumbs_from_pairs(read_preferences(str(source))[0])


def split_thumbs(thumbs: list[Thumb], source: str, *, seed: int = 0, train_size: int | None = None) -> ThumbSplit:
    """Whole prompts held out for validation and test (``split_preferences``'s rule)."""
    from adaptlab.rlhf.preferences import split_preferences

    split = split_preferences(thumbs, source, seed=seed, train_size=train_size)
    if not any(t.label for t in split.train) or all(t.label for t in split.train):
        raise AdaptlabError(f"'{source}': KTO needs both thumbs up and thumbs down among the training rows")
    return ThumbSplit(split.train, split.val, split.test, source)


@dataclass(kw_only=True, eq=False)
class KTOPolicy(lora_options("kto"), TRLPolicy):
    """A KTO training job on thumbs up/down."""

    name = "kto-policy"
    task = "kto"
    beta: float = param(0.1, "KTO's beta: how far from the reference the policy may move.", above=0, maximum=100)
    desirable_weight: float = param(1.0, "Weight of the thumbs-up rows' loss.", above=0, maximum=100)
    undesirable_weight: float = param(1.0, "Weight of the thumbs-down rows' loss.", above=0, maximum=100)
    lr: float | None = param(None, lr_help("kto", "Learning rate"), above=0, maximum=10)

    def trainer_classes(self):
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer, KTOConfig

    def config_kwargs(self) -> dict:
        return {"beta": self.beta, "desirable_weight": self.desirable_weight, "undesirable_weight": self.undesirable_weight}

    def rows(self, thumbs, tokenizer) -> list[dict]:
        prompts = [fit_prompt(tokenizer, t.prompt, self.max_length) for t in thumbs]
        if tokenizer.chat_template:
            return [{"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": t.completion}],
                     "label": t.label} for prompt, t in zip(prompts, thumbs)]
        return [{"prompt": prompt, "completion": " " + t.completion, "label": t.label} for prompt, t in zip(prompts, thumbs)]

    def eval_dataset(self, dataset):
        trainer = self.trainer_  # KTO tokenizes in __init__; its own preparation, for the held-out rows
        return trainer._prepare_dataset(dataset, trainer.processing_class, trainer.args, "eval")


def train_kto(data: ThumbSplit, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """KTO on a ``ThumbSplit`` (``split_thumbs(read_thumbs(path), path)``); writes the policy artifact."""
    return train_policy(KTOPolicy, data, output, overwrite, params)
