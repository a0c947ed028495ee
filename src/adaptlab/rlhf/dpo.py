"""Direct preference optimisation with TRL's ``DPOTrainer``: the same preference data, no reward model, no PPO.

DPO trains the policy directly on (prompt, chosen, rejected) with the loss
``-log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))])``. TRL does it well, so
adaptlab only prepares the data (its preference formats and prompt-level split), the LoRA config (the adaptation
layer's ``peft_config``, which TRL applies) and the artifact, through the shared job runner. With LoRA the reference is the base with the
adapter disabled (TRL's default for PEFT models). TRL evaluates on the validation prompts during training; the
test prompts are scored once, after it.

Precision: ``--precision`` goes to TRL as ``Runtime.trl()``; training and TRL's evaluation (validation and test
pairs) both run the model under that autocast (bf16 autocast for ``bf16``, none for ``fp32``), as SFT does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import default_lr, lora_options, lr_help, peft_config
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.results import JobResult
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.rlhf.preferences import Pair, PreferenceSplit
from adaptlab.runtime import DEPRECATED_PRECISIONS, PRECISIONS, Runtime
from adaptlab.training.tracking import check_logger

STRATEGY = "dpo-policy"


def _dataset(pairs: list[Pair], tokenizer):
    """TRL's conversational format when the tokenizer has a chat template (instruct models), else plain text."""
    from datasets import Dataset

    if tokenizer.chat_template:
        rows = [{"prompt": [{"role": "user", "content": p.prompt}], "chosen": [{"role": "assistant", "content": p.chosen}],
                 "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    else:
        rows = [{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]
    return Dataset.from_list(rows)


@dataclass(kw_only=True, eq=False)
class DPOPolicy(lora_options("dpo")):
    """A DPO training job (``adaptlab.jobs.Job``)."""

    name = STRATEGY
    model: str = param("smollm2-135m", "Policy: a causal LM.")
    method: str = param("lora", "lora (default) or full.", choices=("lora", "full"))
    beta: float = param(0.1, "DPO temperature: how far from the reference the policy may move.", above=0, maximum=100)
    lr: float | None = param(None, lr_help("dpo", "Learning rate"), above=0, maximum=10)
    epochs: int = param(1, "Epochs.", minimum=1, maximum=10_000)
    batch_size: int = param(4, "Pairs per step.", minimum=1, below=2**31)
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
        check_fields(self)
        check_logger(self.logger)
        if self.lr is None:
            self.lr = default_lr("dpo", self.method)
        if self.method == "lora":
            self.check_lora_targets(self.model)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def fit(self, data: PreferenceSplit, workdir: Path) -> "DPOPolicy":
        from trl import DPOConfig, DPOTrainer

        from adaptlab.models.causal import load_causal_lm

        lm, self.tokenizer_, self.ref_ = load_causal_lm(self.model, str(self.runtime.torch_device))
        args = DPOConfig(
            output_dir=str(workdir), beta=self.beta, learning_rate=self.lr, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=self.batch_size,
            max_length=self.max_length, seed=self.seed, **self.runtime.trl(self.logger),
            logging_steps=1, save_strategy="no", eval_strategy="epoch", disable_tqdm=not self.progress,
        )
        lora = None if self.method == "full" else peft_config(lm, "lora", self, "dpo", model_name=f"model '{self.model}'")
        self.trainer_ = DPOTrainer(model=lm, args=args, train_dataset=_dataset(data.train, self.tokenizer_),
                                   eval_dataset=_dataset(data.val, self.tokenizer_), processing_class=self.tokenizer_,
                                   peft_config=lora)
        if len(self.trainer_.train_dataset) == 0:  # TRL drops pairs whose prompt alone fills max_length
            raise AdaptlabError(f"every training pair was cut away by --max-length {self.max_length} (the prompt, with "
                                f"the chat template, fills it); raise --max-length")
        self.trainer_.train()
        return self

    def evaluate(self, data: PreferenceSplit) -> dict:
        """Held-out prompts: reward accuracy = share of pairs the policy now prefers over the reference."""
        def scores(pairs: list[Pair], prefix: str) -> dict:
            metrics = self.trainer_.evaluate(_dataset(pairs, self.tokenizer_), metric_key_prefix=prefix)
            # TRL logs its reward metrics as eval_* whatever the prefix
            return {k.removeprefix(prefix + "_").removeprefix("eval_"): float(v) for k, v in metrics.items()
                    if isinstance(v, (int, float))}

        return {"test": scores(data.test, "test"), "val": scores(data.val, "val")}

    def inference_rate(self, data: PreferenceSplit) -> None:
        return None  # generation speed is the base model's; `rlhf eval` measures the policy

    def cost(self) -> dict:
        model = self.trainer_.model
        return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "total_params": sum(p.numel() for p in model.parameters())}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def get_params(self) -> dict:
        return recorded_params(self)

    def training_report(self) -> dict:
        state = self.trainer_.state
        return {"epochs_run": int(state.epoch or 0), "steps": state.global_step}

    def details(self) -> dict:
        return {}

    def save(self, directory: Path) -> None:
        from adaptlab.models.causal import save_generator

        save_generator(self.trainer_.model, self.tokenizer_, directory, self.base_model())


def train_dpo(data: PreferenceSplit, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """Train with DPO and write the policy artifact; returns the manifest."""
    check_names(DPOPolicy, params, "train_dpo", "DPO")
    job = DPOPolicy(**params)
    return run_job(job, data, output, seed=job.seed, labels=[], data_description=data.describe(),
                   train_examples=len(data.train), overwrite=overwrite)
