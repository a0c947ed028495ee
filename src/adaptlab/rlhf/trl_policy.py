"""The engineering every TRL preference trainer shares, written once: ORPO, SimPO and KTO are each a subclass that
says which trainer and config to use, the settings that are its own, and how its rows look.

A ``TRLPolicy`` is a job for the shared runner (``adaptlab.jobs.run_job``): it loads the policy (any causal LM or an
``sft`` artifact), hands TRL the adaptation layer's LoRA config (or trains every weight), trains with TRL's trainer
(validation each epoch), evaluates the held-out test rows once after training with TRL's own metrics, and saves a
generator artifact. Precision goes to TRL as ``Runtime.trl()``: training and the held-out evaluation alike.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab._io import write_json
from adaptlab.adapt import LoraOptions, default_lr, peft_config
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.results import JobResult
from adaptlab.runtime import DEPRECATED_PRECISIONS, PRECISIONS, Runtime


class TrainedPolicy:
    """What every TRL-trained policy job says about itself once ``fit`` has set ``trainer_``, ``tokenizer_``, ``ref_``
    and ``train_prompts_``: its cost, its base model, and its generator artifact (with the prompts it trained on, which
    ``rlhf eval`` holds out). Shared by ``TRLPolicy`` (pairs, thumbs) and the GRPO/RLOO jobs."""

    def inference_rate(self, data) -> None:
        return None  # generation speed is the base model's; `rlhf eval` measures the policy

    def cost(self) -> dict:
        model = self.trainer_.model
        return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "total_params": sum(p.numel() for p in model.parameters())}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def save(self, directory: Path) -> None:
        from adaptlab.models.causal import save_generator
        from adaptlab.rlhf.ppo import TRAIN_PROMPTS

        save_generator(self.trainer_.model, self.tokenizer_, directory, self.base_model())
        write_json(directory / TRAIN_PROMPTS, self.train_prompts_)  # `rlhf eval` holds them out


@dataclass(kw_only=True, eq=False)
class TRLPolicy(TrainedPolicy, LoraOptions):
    """Subclasses set ``name`` (the artifact's strategy), ``task`` (its row of the defaults table) and implement
    ``trainer_classes``, ``config_kwargs`` and ``rows``; their own options are dataclass fields, as here."""

    name = ""
    task = ""
    model: str = param("smollm2-135m", "Policy: a causal LM or an sft artifact.")
    method: str = param("lora", "lora (default) or full.", choices=("lora", "full"))
    lr: float | None = param(None, "Learning rate (default: the method's in the defaults table).", above=0, maximum=10)
    epochs: int = param(1, "Epochs.", minimum=1, maximum=10_000)
    batch_size: int = param(4, "Rows per step.", minimum=1, below=2**31)
    max_length: int = param(512, "Tokens per prompt + response.", minimum=8, maximum=100_000)
    seed: int = param(0, "Seed.", minimum=0, below=2**32)
    precision: str = param("auto", "fp32, bf16 or fp16 (CUDA); auto: bf16 on CUDA GPUs that have it, else fp32. "
                           "Training and the held-out evaluation alike.", choices=PRECISIONS + tuple(DEPRECATED_PRECISIONS))
    logger: str = param("none", "Training log through TRL's report_to: tensorboard (events kept in the artifact), mlflow "
                        "or wandb (a tracking run with the params, per-step metrics and the artifact), none.",
                        choices=("none", "tensorboard", "mlflow", "wandb"))
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        from adaptlab.training.tracking import check_logger

        check_fields(self)
        check_logger(self.logger)
        if self.lr is None:
            self.lr = default_lr(self.task, self.method)
        if self.method == "lora":
            self.check_lora_targets(self.model)

    # -- what a trainer says about itself ---------------------------------------------------------------------
    def trainer_classes(self) -> tuple[type, type]:
        """(TRL trainer, its config class)."""
        raise NotImplementedError

    def config_kwargs(self) -> dict:
        """The config's settings that are this trainer's own (beta, loss type...)."""
        return {}

    def rows(self, part, tokenizer) -> list[dict]:
        """The split's rows in the trainer's dataset format."""
        raise NotImplementedError

    def count(self, part) -> int:
        return len(part)

    def eval_dataset(self, dataset):
        """A dataset for ``trainer.evaluate`` after training (trainers that tokenize only in ``__init__`` do it here)."""
        return dataset

    # -- the job ------------------------------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def fit(self, data, workdir: Path) -> "TRLPolicy":
        from datasets import Dataset

        from adaptlab.models.causal import load_causal_lm

        trainer_class, config_class = self.trainer_classes()
        self.train_prompts_ = sorted({row.prompt for row in data.train})
        lm, self.tokenizer_, self.ref_ = load_causal_lm(self.model, str(self.runtime.torch_device))
        args = config_class(
            output_dir=str(workdir), learning_rate=self.lr, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=self.batch_size,
            max_length=self.max_length, seed=self.seed, **self.runtime.trl(self.logger), logging_steps=1,
            save_strategy="no", eval_strategy="epoch", disable_tqdm=not self.progress, **self.config_kwargs(),
        )
        lora = None if self.method == "full" else peft_config(lm, "lora", self, self.task, model_name=f"model '{self.model}'")
        self.trainer_ = trainer_class(model=lm, args=args, train_dataset=Dataset.from_list(self.rows(data.train, self.tokenizer_)),
                                      eval_dataset=Dataset.from_list(self.rows(data.val, self.tokenizer_)),
                                      processing_class=self.tokenizer_, peft_config=lora)
        if len(self.trainer_.train_dataset) == 0:  # TRL drops rows whose prompt alone fills max_length
            raise AdaptlabError(f"every training row was cut away by --max-length {self.max_length} (the prompt, with "
                                "the chat template, fills it); raise --max-length")
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints each step's log: progress, not the command's output
            self.trainer_.train()
        return self

    def evaluate(self, data) -> dict:
        """TRL's own metrics on the held-out rows (the test rows once, after training)."""
        def scores(part, prefix: str) -> dict:
            from datasets import Dataset

            dataset = self.eval_dataset(Dataset.from_list(self.rows(part, self.tokenizer_)))
            metrics = self.trainer_.evaluate(dataset, metric_key_prefix=prefix)
            return {k.removeprefix(prefix + "_").removeprefix("eval_"): float(v) for k, v in metrics.items()
                    if isinstance(v, (int, float))}

        with contextlib.redirect_stdout(sys.stderr):  # TRL prints the evaluation's log too
            return {"test": scores(data.test, "test"), "val": scores(data.val, "val")}

    def get_params(self) -> dict:
        return recorded_params(self)

    def training_report(self) -> dict:
        state = self.trainer_.state
        return {"epochs_run": int(state.epoch or 0), "steps": state.global_step}

    def details(self) -> dict:
        return {}



def train_policy(job_class: type[TRLPolicy], data, output: str | Path, overwrite: bool, params: dict[str, Any]) -> JobResult:
    """Check the parameters, then train ``job_class`` on ``data`` and write its artifact."""
    check_names(job_class, params, f"train_{job_class.task}", job_class.task.upper())
    job = job_class(**params)
    return run_job(job, data, output, seed=job.seed, labels=[], data_description=data.describe(),
                   train_examples=job.count(data.train), overwrite=overwrite)


def fit_prompt(tokenizer, prompt: str, max_length: int | None) -> str:
    """``prompt`` cut from the left to half of ``max_length`` tokens (its end, the last turn, matters most), as the
    reward model cuts it: a prompt that fills ``max_length`` would leave an empty completion, which ORPO and SimPO
    average over zero tokens (NaN losses that poison the weights) and DPO and KTO drop."""
    if max_length is None:
        return prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    budget = max_length // 2
    return prompt if len(ids) <= budget else tokenizer.decode(ids[-budget:])


def pair_rows(pairs, tokenizer, max_length: int | None = None) -> list[dict]:
    """(prompt, chosen, rejected) in TRL's conversational format when the tokenizer has a chat template, else text;
    long prompts cut from the left (``fit_prompt``)."""
    prompts = [fit_prompt(tokenizer, p.prompt, max_length) for p in pairs]
    if tokenizer.chat_template:
        return [{"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": p.chosen}],
                 "rejected": [{"role": "assistant", "content": p.rejected}]} for prompt, p in zip(prompts, pairs)]
    return [{"prompt": prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for prompt, p in zip(prompts, pairs)]


def tokenized_pairs(trainer, dataset):
    """Pairs prepared as ORPO's and CPO's trainers prepare their own in ``__init__`` (prompt extracted, chat template
    applied, tokenized), so ``evaluate`` can score the held-out pairs."""
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    dataset = dataset.map(maybe_extract_prompt).map(maybe_apply_chat_template,
                                                     fn_kwargs={"processing_class": trainer.processing_class})
    return dataset.map(trainer.tokenize_row)
