"""Direct preference optimisation with TRL's ``DPOTrainer``: the same preference data, no reward model, no PPO.

DPO trains the policy directly on (prompt, chosen, rejected) with the loss
``-log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))])``. TRL does it well, so
adaptlab only prepares the data (its preference formats and prompt-level split), the LoRA config and the
artifact. With LoRA the reference is the base with the adapter disabled (TRL's default for PEFT models).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from adaptlab.artifacts import write_artifact
from adaptlab.errors import AdaptlabError
from adaptlab.rlhf.preferences import Pair, PreferenceSplit


def _dataset(pairs: list[Pair], tokenizer):
    """TRL's conversational format when the tokenizer has a chat template (instruct models), else plain text."""
    from datasets import Dataset

    if tokenizer.chat_template:
        rows = [{"prompt": [{"role": "user", "content": p.prompt}], "chosen": [{"role": "assistant", "content": p.chosen}],
                 "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    else:
        rows = [{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]
    return Dataset.from_list(rows)


def train_dpo(data: PreferenceSplit, output: str | Path, *, model: str = "smollm2-135m", method: str = "lora", r: int = 16,
              beta: float = 0.1, lr: float | None = None, epochs: int = 1, batch_size: int = 4, max_length: int = 512,
              seed: int = 0, device: str | None = None, progress: bool = True) -> dict:
    from peft import LoraConfig, TaskType
    from trl import DPOConfig, DPOTrainer

    from adaptlab.embeddings import pick_device
    from adaptlab.generation import load_causal_lm
    from adaptlab.measure import measure
    from adaptlab.training.engine import work_dir

    if method not in ("lora", "full"):
        raise AdaptlabError(f"--method must be lora or full, not '{method}'")
    output = Path(output)
    target = pick_device(device)
    lm, tokenizer, ref = load_causal_lm(model, str(target))
    bf16 = target.type == "cuda" and torch.cuda.is_bf16_supported()
    args = DPOConfig(
        output_dir=str(work_dir(output)), beta=beta, learning_rate=lr or (5e-5 if method == "lora" else 5e-7),
        num_train_epochs=epochs, per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        max_length=max_length, seed=seed, bf16=bf16, use_cpu=target.type == "cpu", report_to="none",
        logging_steps=1, save_strategy="no", eval_strategy="epoch", disable_tqdm=not progress,
    )
    peft_config = None if method == "full" else LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r,
                                                           lora_dropout=0.05, target_modules="all-linear")
    trainer = DPOTrainer(model=lm, args=args, train_dataset=_dataset(data.train, tokenizer),
                         eval_dataset=_dataset(data.test, tokenizer), processing_class=tokenizer, peft_config=peft_config)
    started = time.perf_counter()
    with measure() as cost:
        trainer.train()
    metrics = trainer.evaluate()  # held-out prompts: reward accuracy = share of pairs the policy now prefers
    manifest = {
        "strategy": "dpo-policy",
        "base_model": {"name": model, "fingerprint": ref.fingerprint()},
        "labels": [],
        "data": data.describe(),
        "params": {"method": method, "r": r, "beta": beta, "lr": args.learning_rate, "epochs": epochs,
                   "batch_size": batch_size, "max_length": max_length, "seed": seed},
        "metrics": {"test": {k.removeprefix("eval_"): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}},
        "cost": {"train_seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": cost.as_dict()["peak_rss_mb"],
                 "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)},
    }

    def save(directory: Path) -> None:
        trainer.model.save_pretrained(directory / ("adapter" if method == "lora" else "model"))
        tokenizer.save_pretrained(directory / "tokenizer")

    manifest = write_artifact(output, manifest, save)
    import shutil

    shutil.rmtree(work_dir(output), ignore_errors=True)
    return manifest
