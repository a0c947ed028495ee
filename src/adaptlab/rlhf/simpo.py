"""SimPO (Meng et al. 2024) on TRL's ``CPOTrainer`` with ``loss_type="simpo"``: the length-normalised log-likelihood
is the implicit reward, a margin ``gamma`` separates chosen from rejected, and there is no reference model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import lora_options, lr_help
from adaptlab.params import param
from adaptlab.results import JobResult
from adaptlab.rlhf.trl_policy import TRLPolicy, pair_rows, tokenized_pairs, train_policy


@dataclass(kw_only=True, eq=False)
class SimPOPolicy(lora_options("simpo"), TRLPolicy):
    """A SimPO training job on preference pairs."""

    name = "simpo-policy"
    task = "simpo"
    beta: float = param(2.0, "SimPO's beta: the scale of the length-normalised reward.", above=0, maximum=100)
    gamma: float = param(0.5, "The target reward margin between chosen and rejected (TRL's simpo_gamma).", minimum=0,
                         maximum=100)
    lr: float | None = param(None, lr_help("simpo", "Learning rate"), above=0, maximum=10)

    def trainer_classes(self):
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer, CPOConfig

    def config_kwargs(self) -> dict:
        return {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": self.beta, "simpo_gamma": self.gamma}

    def rows(self, pairs, tokenizer) -> list[dict]:
        return pair_rows(pairs, tokenizer, self.max_length)

    def eval_dataset(self, dataset):
        return tokenized_pairs(self.trainer_, dataset)


def train_simpo(data, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """SimPO on a ``PreferenceSplit``; writes the policy artifact."""
    return train_policy(SimPOPolicy, data, output, overwrite, params)
