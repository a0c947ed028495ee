"""GRPO and RLOO with reward functions, on TRL's ``GRPOTrainer`` and ``RLOOTrainer`` (not a re-implementation).

For each training prompt the policy samples a group of ``num_generations`` completions; every reward function scores
them (``adaptlab.rlhf.reward_functions``: exact or numeric answers, a pattern, a JSON schema, a length band, a reward
model, the user's ``module:function``), weighted and summed; GRPO normalises the rewards within the group, RLOO takes
each completion's leave-one-out baseline, and the policy moves towards the better ones, held near the start by a KL
penalty ``beta`` (0: none, TRL's default). The prompts come from any generation data (prompt/completion or chat: the
completion or the last assistant turn is the reference answer the checks read). The weights change by the adaptation
layer (LoRA or full), starting from any causal LM or an ``sft`` artifact.

Evaluation, after training, on the test prompts once (and the validation prompts): greedy replies scored by every
reward function (their means, and the weighted total), under the job's precision.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import default_lr, lora_options, lr_help, peft_config
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.results import JobResult
from adaptlab.rlhf.trl_policy import TrainedPolicy
from adaptlab.runtime import DEPRECATED_PRECISIONS, PRECISIONS, Runtime

EVAL_LIMIT = 256  # held-out prompts generated and scored per split


def prompt_rows(part) -> list[dict]:
    """TRL's conversational prompts with the reference answer beside them: ``{"prompt": turns, "answer": text}``."""
    if part.kind != "chat":
        raise AdaptlabError("GRPO and RLOO need prompts: give prompt/completion or chat data (plain text has none)")
    return [{"prompt": turns[:-1], "answer": turns[-1]["content"]} for turns in part.records]


@dataclass(kw_only=True, eq=False)
class GRPOPolicy(lora_options("grpo"), TrainedPolicy):
    """A GRPO training job (``adaptlab.jobs.Job``); ``RLOOPolicy`` changes only the trainer."""

    name = "grpo-policy"
    task = "grpo"  # its row of the defaults table
    model: str = param("smollm2-135m", "Policy to start from: a causal LM or an sft artifact.")
    reward: list[str] | None = param(None, "Reward functions, NAME[:ARGUMENT][@WEIGHT] (see adaptlab.rlhf.reward_functions).",
                                     cli=False)
    method: str = param("lora", "lora (default) or full.", choices=("lora", "full"))
    num_generations: int = param(4, "Completions sampled per prompt (the group).", minimum=2, maximum=1024)
    beta: float = param(0.0, "KL penalty towards the starting policy (0: none, TRL's default).", minimum=0, maximum=100)
    epsilon: float = param(0.2, "Clipping of the policy ratio.", above=0, maximum=10)
    max_completion_length: int = param(32, "Most tokens per sampled completion (and per evaluation reply).", minimum=1,
                                       maximum=100_000)
    temperature: float = param(1.0, "Sampling temperature of the completions.", above=0, maximum=100)
    lr: float | None = param(None, lr_help("grpo", "Learning rate"), above=0, maximum=10)
    batch_size: int = param(4, "Prompts per optimiser step (each with num-generations completions).", minimum=1, below=2**31)
    epochs: int = param(1, "Epochs over the training prompts.", minimum=1, maximum=10_000)
    max_steps: int | None = param(None, "Stop after this many optimiser steps (default: the epochs').", minimum=1)
    seed: int = param(0, "Seed.", minimum=0, below=2**32)
    precision: str = param("auto", "fp32, bf16 or fp16 (CUDA); auto: bf16 on CUDA GPUs that have it, else fp32. "
                           "Training and the held-out evaluation alike.", choices=PRECISIONS + tuple(DEPRECATED_PRECISIONS))
    resume: bool = param(False, "Continue from the last checkpoint of an interrupted run.")
    logger: str = param("none", "Training log through TRL's report_to (every reward per step): tensorboard, mlflow, wandb "
                        "or none.", choices=("none", "tensorboard", "mlflow", "wandb"))
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        from adaptlab.rlhf.reward_functions import check_rewards

        from adaptlab.training.tracking import check_logger

        check_fields(self)
        check_logger(self.logger)
        self.rewards_ = check_rewards(self.reward or [])  # every reward refused now, before any model loads
        if self.lr is None:
            self.lr = default_lr(self.task, self.method)
        if self.method == "lora":
            self.check_lora_targets(self.model)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def trainer_classes(self):
        from trl import GRPOConfig, GRPOTrainer

        return GRPOTrainer, GRPOConfig

    def fit(self, data, workdir: Path) -> "GRPOPolicy":
        from datasets import Dataset

        from adaptlab.models.causal import load_causal_lm
        from adaptlab.rlhf.reward_functions import build_rewards
        from adaptlab.sft.template import ensure_chat_template

        trainer_class, config_class = self.trainer_classes()
        lm, self.tokenizer_, self.ref_ = load_causal_lm(self.model, str(self.runtime.torch_device))
        ensure_chat_template(self.tokenizer_)
        self.functions_ = build_rewards(self.rewards_, self.device)
        train = prompt_rows(data.train)
        self.train_prompts_ = sorted({row["prompt"][-1]["content"] for row in train})
        args = config_class(
            output_dir=str(workdir), learning_rate=self.lr, num_train_epochs=self.epochs, max_steps=self.max_steps or -1,
            per_device_train_batch_size=self.batch_size * self.num_generations, num_generations=self.num_generations,
            beta=self.beta, epsilon=self.epsilon, max_completion_length=self.max_completion_length,
            temperature=self.temperature, reward_weights=[spec.weight for spec in self.rewards_], seed=self.seed,
            **self.runtime.trl(self.logger), logging_steps=1, save_strategy="steps", save_steps=25,
            save_total_limit=1, disable_tqdm=not self.progress,
        )
        lora = None if self.method == "full" else peft_config(lm, "lora", self, self.task, model_name=f"model '{self.model}'")
        self.trainer_ = trainer_class(model=lm, reward_funcs=self.functions_, args=args, train_dataset=Dataset.from_list(train),
                                      processing_class=self.tokenizer_, peft_config=lora)
        checkpoints = sorted(workdir.glob("checkpoint-*"))
        self.resumed_ = bool(self.resume and checkpoints)
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints each step's log: progress, not the command's output
            self.trainer_.train(resume_from_checkpoint=str(checkpoints[-1]) if self.resumed_ else None)
        return self

    def evaluate(self, data) -> dict:
        return {"test": self.score(data.test), "val": self.score(data.val)}

    def score(self, part) -> dict:
        """Greedy replies to up to ``EVAL_LIMIT`` prompts, scored by every reward function."""
        from adaptlab.sft.evaluate import generate_replies
        from adaptlab.sft.template import encode_prompt

        rows = prompt_rows(part)[:EVAL_LIMIT]
        model = self.trainer_.model.eval()
        with self.runtime.autocast():
            replies = generate_replies(model, self.tokenizer_, [encode_prompt(self.tokenizer_, r["prompt"]) for r in rows],
                                       self.max_completion_length)
        prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
        means, total = {}, 0.0
        for spec, function in zip(self.rewards_, self.functions_):
            values = function(prompts, replies["texts"], answer=answers)
            means[spec.name] = round(sum(values) / max(len(values), 1), 4)
            total += spec.weight * means[spec.name]
        return {"reward": round(total, 4), "rewards": means, "n": len(rows),
                "mean_length": round(sum(replies["lengths"]) / max(len(rows), 1), 2), "samples": [
                    {"prompt": r["prompt"][-1]["content"], "reference": r["answer"], "output": t}
                    for r, t in zip(rows[:5], replies["texts"][:5])]}

    def get_params(self) -> dict:
        return {k: v for k, v in recorded_params(self).items() if k != "resume"}

    def training_report(self) -> dict:
        state = self.trainer_.state
        rewards = [entry["reward"] for entry in state.log_history if "reward" in entry]
        return {"epochs_run": int(state.epoch or 0), "steps": state.global_step, "resumed": self.resumed_,
                "reward_first_steps": _mean(rewards[:3]), "reward_last_steps": _mean(rewards[-3:]),
                "reward_per_step": [round(r, 4) for r in rewards]}

    def details(self) -> dict:
        return {"rewards": [{"name": s.name, "spec": s.text, "weight": s.weight} for s in self.rewards_]}


@dataclass(kw_only=True, eq=False)
class RLOOPolicy(GRPOPolicy):
    """RLOO: each completion's baseline is the mean reward of the others in its group (TRL's ``RLOOTrainer``)."""

    name = "rloo-policy"
    task = "rloo"
    lr: float | None = param(None, lr_help("rloo", "Learning rate"), above=0, maximum=10)

    def trainer_classes(self):
        from trl import RLOOConfig, RLOOTrainer

        return RLOOTrainer, RLOOConfig


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _train(job_class, data, output, overwrite: bool, params: dict) -> JobResult:
    check_names(job_class, params, f"train_{job_class.task}", job_class.task.upper())
    job = job_class(**params)
    return run_job(job, data, output, seed=job.seed, labels=[], data_description=data.describe(),
                   train_examples=len(data.train), resume=job.resume, overwrite=overwrite)


def train_grpo(data, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """GRPO on ``data``'s training prompts (``adaptlab.load_generation_splits``) with ``reward=[...]``; writes the policy."""
    return _train(GRPOPolicy, data, output, overwrite, params)


def train_rloo(data, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """RLOO, as ``train_grpo``."""
    return _train(RLOOPolicy, data, output, overwrite, params)
