"""Direct preference optimisation with TRL's ``DPOTrainer``: the same preference data, no reward model, no PPO.

DPO trains the policy directly on (prompt, chosen, rejected) with the loss
``-log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))])``. TRL does it well, so
adaptlab only prepares the data (its preference formats and prompt-level split), the LoRA config (the adaptation
layer's ``peft_config``, which TRL applies) and the artifact, through the shared job runner; the engineering it
shares with ORPO, SimPO and KTO is ``adaptlab.rlhf.trl_policy.TRLPolicy``. With LoRA the reference is the base with
the adapter disabled (TRL's default for PEFT models). TRL evaluates on the validation prompts during training; the
test prompts are scored once, after it.

Precision: ``--precision`` goes to TRL as ``Runtime.trl()``; training and TRL's evaluation (validation and test
pairs) both run the model under that autocast (bf16 autocast for ``bf16``, none for ``fp32``), as SFT does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import lora_options, lr_help
from adaptlab.params import param
from adaptlab.results import JobResult
from adaptlab.rlhf.preferences import PreferenceSplit
from adaptlab.rlhf.trl_policy import TRLPolicy, pair_rows, train_policy

STRATEGY = "dpo-policy"


@dataclass(kw_only=True, eq=False)
class DPOPolicy(lora_options("dpo"), TRLPolicy):
    """A DPO training job (``adaptlab.jobs.Job``)."""

    name = STRATEGY
    task = "dpo"
    beta: float = param(0.1, "DPO temperature: how far from the reference the policy may move.", above=0, maximum=100)
    lr: float | None = param(None, lr_help("dpo", "Learning rate"), above=0, maximum=10)

    def trainer_classes(self):
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig

    def config_kwargs(self) -> dict:
        return {"beta": self.beta}

    def rows(self, pairs, tokenizer) -> list[dict]:
        return pair_rows(pairs, tokenizer, self.max_length)


def train_dpo(data: PreferenceSplit, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """Train with DPO and write the policy artifact."""
    return train_policy(DPOPolicy, data, output, overwrite, params)
