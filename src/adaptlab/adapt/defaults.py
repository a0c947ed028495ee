"""The one table of adaptation defaults: per task, the PEFT task type, LoRA's settings and each method's learning rate.

Every command and both comparison ladders read it: ``train`` (the classification strategies' fields), ``sft``, ``rlhf
reward``/``dpo``/``ppo``, ``rag train-retriever``, the classification ladder (through the strategies' defaults) and
the generation ladder (its SFT entries' learning rates). The values are the measured ones:

- classification: picked on validation accuracy (1,000 Rotten Tomatoes sentences, minilm, 3 epochs), kept by
  ``benchmarks/results/defaults_transfer.json`` on three tasks;
- SFT: the generation ladder's, measured on wiki-descriptions (``sft_ladder.json``, ``generation_defaults.json``);
- reward, DPO, PPO, retriever: each family's own measured choice (``reward_model_hh_rlhf.json``, ``ppo_vs_trl.json``).

A LoRA ``alpha`` of None means 2 x r (DPO and PPO scale with the rank they are given); a ``target_modules`` of None
means the attention query/value projections PEFT knows for the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoraDefaults:
    r: int
    alpha: int | None  # None: 2 x r
    dropout: float
    target_modules: str | None  # None: the attention projections PEFT knows for the architecture


@dataclass(frozen=True)
class TaskDefaults:
    peft_task_type: str  # how PEFT wraps the model: a sequence classifier, a causal LM, or a plain encoder
    lr: dict[str, float]  # method -> peak learning rate
    lora: LoraDefaults | None = None
    used_by: str = ""


TASKS: dict[str, TaskDefaults] = {
    "classifier": TaskDefaults("SEQ_CLS", {"full": 5e-5, "last-k": 1e-4, "lora": 1e-3, "prefix-tuning": 2e-2,
                                           "p-tuning": 1e-2, "prompt-tuning": 1e-1, "head": 1e-3},
                               LoraDefaults(8, 16, 0.1, None), "`train` (encoder or decoder classifiers)"),
    "label-words": TaskDefaults("CAUSAL_LM", {"prompt-tuning": 3e-2}, None, "`train soft-prompt` (a causal LM scored through label words)"),
    "sft": TaskDefaults("CAUSAL_LM", {"full": 5e-5, "last-k": 1e-4, "lora": 1e-3, "prefix-tuning": 1e-3, "prompt-tuning": 3e-2},
                        LoraDefaults(16, 32, 0.05, "all-linear"), "`sft train` and the generation ladder"),
    "reward": TaskDefaults("SEQ_CLS", {"lora": 5e-4, "full": 3e-5}, LoraDefaults(16, 32, 0.05, None), "`rlhf reward`"),
    "dpo": TaskDefaults("CAUSAL_LM", {"lora": 5e-5, "full": 5e-7}, LoraDefaults(16, None, 0.05, "all-linear"),
                        "`rlhf dpo` and the generation ladder's dpo entry"),
    "ppo": TaskDefaults("CAUSAL_LM", {"lora": 1e-4, "full": 1e-4}, LoraDefaults(16, None, 0.0, "all-linear"), "`rlhf ppo`"),
    "orpo": TaskDefaults("CAUSAL_LM", {"lora": 5e-5, "full": 8e-6}, LoraDefaults(16, None, 0.05, "all-linear"),
                         "`rlhf orpo` (full: the ORPO paper's rate; lora: DPO's; not yet measured here)"),
    "simpo": TaskDefaults("CAUSAL_LM", {"lora": 5e-5, "full": 1e-6}, LoraDefaults(16, None, 0.05, "all-linear"),
                          "`rlhf simpo` (full: the SimPO paper's order of magnitude; lora: DPO's; not yet measured here)"),
    "kto": TaskDefaults("CAUSAL_LM", {"lora": 5e-5, "full": 5e-7}, LoraDefaults(16, None, 0.05, "all-linear"),
                        "`rlhf kto` (DPO's rates; not yet measured here)"),
    "grpo": TaskDefaults("CAUSAL_LM", {"lora": 2e-5, "full": 1e-6}, LoraDefaults(16, None, 0.0, "all-linear"),
                         "`rlhf grpo` (full: TRL's default rate; lora: a starting point, not yet measured here)"),
    "rloo": TaskDefaults("CAUSAL_LM", {"lora": 2e-5, "full": 1e-6}, LoraDefaults(16, None, 0.0, "all-linear"),
                         "`rlhf rloo` (as grpo)"),
    "retriever": TaskDefaults("FEATURE_EXTRACTION", {"full": 3e-5}, None, "`rag train-retriever`"),
}


def default_lr(task: str, method: str) -> float:
    """The measured peak learning rate of ``method`` on ``task``."""
    return TASKS[task].lr[method]


def lr_help(task: str, what: str = "Peak learning rate") -> str:
    """The help of a job's ``lr`` whose default depends on its method, written from the table."""
    return f"{what} (default per method: {rates_text(task)})."


def rates_text(task: str) -> str:
    """``full 5e-5, lora 1e-3, ...``: a task's learning rates as people write them."""
    return ", ".join(f"{method} {rate:.0e}".replace("e-0", "e-") for method, rate in TASKS[task].lr.items())


def lora_defaults(task: str) -> LoraDefaults:
    defaults = TASKS[task].lora
    if defaults is None:
        raise ValueError(f"task '{task}' trains no LoRA adapters")
    return defaults
