"""ORPO (odds-ratio preference optimisation, Hong et al. 2024) on TRL's ``ORPOTrainer``: supervised fine-tuning on the
chosen replies plus an odds-ratio penalty on the rejected ones, in one stage and without a reference model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import lora_options, lr_help
from adaptlab.params import param
from adaptlab.results import JobResult
from adaptlab.rlhf.trl_policy import TRLPolicy, pair_rows, tokenized_pairs, train_policy


@dataclass(kw_only=True, eq=False)
class ORPOPolicy(lora_options("orpo"), TRLPolicy):
    """An ORPO training job on preference pairs."""

    name = "orpo-policy"
    task = "orpo"
    beta: float = param(0.1, "ORPO's lambda: the weight of the odds-ratio term against the SFT loss.", above=0, maximum=100)
    lr: float | None = param(None, lr_help("orpo", "Learning rate"), above=0, maximum=10)

    def trainer_classes(self):
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, ORPOConfig

    def config_kwargs(self) -> dict:
        return {"beta": self.beta}

    def rows(self, pairs, tokenizer) -> list[dict]:
        return pair_rows(pairs, tokenizer, self.max_length)

    def eval_dataset(self, dataset):
        return tokenized_pairs(self.trainer_, dataset)


def train_orpo(data, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """ORPO on a ``PreferenceSplit`` (``adaptlab.rlhf.split_preferences``); writes the policy artifact."""
    return train_policy(ORPOPolicy, data, output, overwrite, params)
