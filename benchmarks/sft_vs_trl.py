"""adaptlab's LoRA SFT against TRL's ``SFTTrainer`` + PEFT, TRL as shipped and TRL at its fastest, repeated.

Three arms train SmolLM2-135M-Instruct (the packaged Q4_1 GGUF, de-quantised to float) on the same
wiki-descriptions rows with the same chat template (the tokenizer's), LoRA (r 16, alpha 32, dropout 0.05, every
linear layer), optimiser (AdamW, lr 1e-3, linear schedule, 6% warm-up, weight decay 0.01, clip 1.0), batch (8, no
accumulation), epochs, max length (512), precision (fp32) and completion-only loss:

- ``adaptlab``: ``adaptlab.train_sft(method="lora")``; conversations are not packed and batches are random, each
  padded to its longest row (adaptlab's defaults for chat data), no gradient checkpointing (its default).
- ``trl_default``: ``SFTConfig`` left at its defaults apart from the shared settings above, so with TRL's
  ``gradient_checkpointing=True`` default.
- ``trl_fastest``: the same with ``gradient_checkpointing=False``, TRL's fastest documented setting on a CPU.
  ``padding_free`` stays off: adaptlab does not pack or drop padding in this run, and TRL documents padding-free
  batches (and ``packing``, whose "bfd" strategy turns them on) as supported only with FlashAttention 2/3.

Each arm's timer covers its whole fit: model and tokenizer load, tokenization, training (adaptlab's also its
validation passes, which the TRL arms, with ``eval_strategy="no"``, do not run). Imports, a cold file cache and
first-call kernel set-up are paid by an untimed warm-up (one load and one forward/backward pass) before the first
arm. Throughput is trained tokens per second: the same labelled-token count (adaptlab's encoding; TRL's own count is
recorded beside it) over each arm's fit. The arms run one after another in one process, ``--repeats`` times in
alternating order (adaptlab, trl_fastest, trl_default; then reversed; ...), so drift on the machine falls on every
arm. ``throughput_ratio_vs_trl_fastest`` / ``_vs_trl_default`` are the median over repeats of adaptlab's tokens/s
over that arm's in the same repeat (min and max beside them). The first repeat's adaptlab model and trl_fastest model
are scored by the same code on the same test rows (token-weighted loss on the reply tokens): ``eval_loss_adaptlab``,
``eval_loss_trl``, and ``eval_loss_within_2pct`` (adaptlab's <= 1.02 x TRL's).

About 11 minutes with the defaults on 2 CPU threads (5 optimiser steps per arm, 9 timed fits).

    python benchmarks/sft_vs_trl.py [--train-size 40] [--test-size 32] [--epochs 1] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
from pathlib import Path

import _common
import torch

MODEL = "smollm2-135m"
HP = {"r": 16, "alpha": 32, "lora_dropout": 0.05, "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.06,
      "grad_clip": 1.0, "batch_size": 8, "grad_accum": 1, "max_length": 512, "precision": "fp32"}
DEFAULTS = {"train_size": 40, "val_size": 8, "test_size": 32, "epochs": 1, "repeats": 3}
ARMS = ("adaptlab", "trl_fastest", "trl_default")
TRL_ARMS = {"trl_default": {}, "trl_fastest": {"gradient_checkpointing": False}}  # over the shared settings
FASTEST = (
    "gradient_checkpointing=False: TRL turns it on by default (trl/trainer/base_config.py, _BaseConfig: 'defaults to "
    "True ... at the cost of ~20% slower training'; sft_config.py notes the changed default). padding_free and "
    "packing stay False as in adaptlab's run (conversations unpacked, each batch padded to its longest row); TRL "
    "documents padding_free as 'only supported with the FlashAttention 2 or 3' (sft_config.py), which a CPU lacks, "
    "and packing='bfd' turns padding_free on (sft_trainer.py). bf16 (TRL's default, base_config.py __post_init__) "
    "is off in both TRL arms: precision is a shared setting (fp32, adaptlab's CPU default); on a CPU without "
    "AVX512-bf16/AMX bf16 is emulated, and it would change the numerics the eval losses compare. Not used: "
    "use_liger_kernel (Triton kernels, GPU only), torch_compile (not a documented SFT speed setting; recompiles per "
    "batch shape), group_by_length (adaptlab's batches are random here).")


def shared_trl_settings(splits, epochs: int, workdir: str) -> dict:
    """What every TRL arm sets: the shared hyper-parameters, and output bookkeeping (no saving, no progress bar)."""
    return {
        "output_dir": workdir, "num_train_epochs": epochs, "per_device_train_batch_size": HP["batch_size"],
        "gradient_accumulation_steps": HP["grad_accum"], "learning_rate": HP["lr"], "weight_decay": HP["weight_decay"],
        "warmup_steps": HP["warmup_ratio"],  # < 1: a ratio, rounded up to steps as adaptlab does
        "lr_scheduler_type": "linear", "max_grad_norm": HP["grad_clip"], "max_length": HP["max_length"],
        "completion_only_loss": True, "bf16": False, "seed": splits.seed, "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "disable_tqdm": True,
    }


def run_trl(arm: str, splits, epochs: int, workdir: str) -> tuple[float, object, dict]:
    """TRL's documented recipe: prompt-completion conversational rows (loss on the completion only), PEFT LoRA.
    Returns the fit's seconds, the tuned model, and a record: whether the model really trained with activation
    checkpointing, TRL's own count of labelled tokens over the run, and ``trainer.train()``'s own seconds."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from adaptlab.measure import measure
    from adaptlab.models import resolve_model

    path = resolve_model(MODEL).path
    rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in splits.train.records]
    with measure() as fit:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        args = SFTConfig(**shared_trl_settings(splits, epochs, workdir), **TRL_ARMS[arm])
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=HP["r"], lora_alpha=HP["alpha"], lora_dropout=HP["lora_dropout"],
                                 target_modules="all-linear")
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=peft_config)
        train_runtime = trainer.train().metrics["train_runtime"]
    base = trainer.model.get_base_model()
    flag = "is_activation_checkpointing" if hasattr(base, "is_activation_checkpointing") else "is_gradient_checkpointing"
    checkpointing = bool(getattr(base, flag))
    assert checkpointing == (arm == "trl_default") and not trainer.padding_free and not args.packing, arm
    labels = trainer.train_dataset["labels"] if "labels" in trainer.train_dataset.column_names else []
    counted = sum(sum(label != -100 for label in row[1:]) for row in labels) * epochs
    return fit.seconds, trainer.model.eval(), {"activation_checkpointing": checkpointing, "labelled_tokens": counted,
                                                "inner_seconds": round(float(train_runtime), 2)}


def run_adaptlab(splits, epochs: int, workdir: str) -> tuple[float, dict]:
    import adaptlab

    manifest = adaptlab.train_sft(
        splits, workdir, method="lora", epochs=epochs, r=HP["r"], alpha=HP["alpha"], dropout=HP["lora_dropout"],
        lr=HP["lr"], weight_decay=HP["weight_decay"], warmup_ratio=HP["warmup_ratio"], schedule="linear",
        grad_clip=HP["grad_clip"], batch_size=HP["batch_size"], grad_accum=HP["grad_accum"], max_length=HP["max_length"],
        precision=HP["precision"], packing=False, group_by_length=False, gradient_checkpointing=False,
        forgetting=False, generate_limit=1, max_new_tokens=1, progress=False).manifest
    return manifest["cost"]["train_seconds"], manifest  # the fit alone (model load included), never the evaluation


def warm_up(splits) -> tuple[object, int]:
    """Untimed: import everything the arms use, read the weights once (file cache) and run one forward/backward pass
    (first-call kernel set-up), so the first timed arm pays nothing the others do not. Returns the tokenizer and the
    labelled-token count of one epoch (adaptlab's encoding)."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import trl  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import adaptlab.sft.job
    import adaptlab.training.engine  # noqa: F401
    from adaptlab.models import resolve_model
    from adaptlab.models.loading import pad_batch, pad_id
    from adaptlab.sft.template import encode_conversation

    path = resolve_model(MODEL).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = [e for e in (encode_conversation(tokenizer, m, HP["max_length"]) for m in splits.train.records) if e]
    model = AutoModelForCausalLM.from_pretrained(path).train()
    batch = encoded[: HP["batch_size"]]
    ids, mask = pad_batch([ids for ids, _ in batch], pad_id(tokenizer))
    labels, _ = pad_batch([labels for _, labels in batch], -100)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    del model
    gc.collect()
    return tokenizer, sum(sum(label != -100 for label in labels[1:]) for _, labels in encoded)


def spread(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def versus_trl(splits, epochs: int, repeats: int) -> dict:
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import sequence_loss
    from adaptlab.sft.template import encode_conversation

    tokenizer, per_epoch = warm_up(splits)
    trained = per_epoch * epochs
    test = [e for e in (encode_conversation(tokenizer, m, HP["max_length"]) for m in splits.test.records) if e]
    order = [list(ARMS) if i % 2 == 0 else list(reversed(ARMS)) for i in range(repeats)]
    rows, losses, trl_counted = [], {}, None
    for repeat, arms in enumerate(order, start=1):
        for position, arm in enumerate(arms, start=1):
            with tempfile.TemporaryDirectory() as tmp:
                row = {"repeat": repeat, "position": position, "arm": arm}
                if arm == "adaptlab":
                    seconds, manifest = run_adaptlab(splits, epochs, tmp + "/adaptlab")
                    row["eval_loss"] = manifest["metrics"]["test"]["loss"]
                    row["steps"] = manifest["training"]["steps"]
                    row["inner_seconds"] = round(manifest["training"]["seconds"], 2)
                else:
                    seconds, model, record = run_trl(arm, splits, epochs, tmp + "/trl")
                    trl_counted = record.pop("labelled_tokens")
                    row.update(record)
                    if repeat == 1 and arm == "trl_fastest":
                        row["eval_loss"] = round(sequence_loss(model, test, pad_id(tokenizer))["loss"], 4)
                    del model
            gc.collect()
            if repeat == 1 and "eval_loss" in row:
                losses[arm] = row["eval_loss"]
            rows.append({**row, "seconds": round(seconds, 2), "tokens_per_second": round(trained / seconds, 3)})
            print(rows[-1], flush=True)
    rate = {(row["repeat"], row["arm"]): row["tokens_per_second"] for row in rows}
    ratios = [{"repeat": r, **{f"vs_{arm}": round(rate[r, "adaptlab"] / rate[r, arm], 3) for arm in TRL_ARMS}}
              for r in range(1, repeats + 1)]
    per_arm = {arm: {"seconds": spread([row["seconds"] for row in rows if row["arm"] == arm], 2),
                     "tokens_per_second": spread([row["tokens_per_second"] for row in rows if row["arm"] == arm])}
               for arm in ARMS}
    ratio = {arm: spread([r[f"vs_{arm}"] for r in ratios]) for arm in TRL_ARMS}
    return {
        "model": f"{MODEL} (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions",
        "setup": {
            "train_examples": len(splits.train), "val_examples": len(splits.val), "test_examples": len(splits.test),
            "epochs": epochs, "optimizer_steps_per_arm": -(-len(splits.train) // HP["batch_size"]) * epochs,
            "repeats": repeats, "hyperparameters": HP, "loss": "completion-only (assistant reply, end-of-turn token included)",
            "trl_labelled_tokens": trl_counted,
            "labelled_tokens_note": "trained_tokens (adaptlab's count) is the numerator for every arm. TRL's own count "
                                    "is one token per row higher: its completion keeps the newline the chat template "
                                    "puts after <|im_end|>, adaptlab's reply ends at <|im_end|>.",
            "arms": {
                "adaptlab": "train_sft(method='lora'): unpacked conversations, random batches padded to their longest "
                            "row, no gradient checkpointing",
                "trl_default": "SFTConfig defaults apart from the shared settings: gradient_checkpointing=True",
                "trl_fastest": "as trl_default with gradient_checkpointing=False",
            },
            "fastest": FASTEST,
            "timer": "model construction inside every arm's timer: each arm's whole fit (model and tokenizer load, "
                     "tokenization, training; adaptlab's also its start and per-epoch validation passes on the val rows). "
                     "An untimed warm-up (imports, one load, one forward/backward) runs before the first arm.",
            "process": "all arms in one process, one after another",
            "inner_seconds": "information only, not in any ratio: adaptlab's fit_module (Lightning fit with its start and "
                             "per-epoch validation and checkpoints, without model load and tokenization); TRL's own "
                             "train_runtime (trainer.train() alone)",
        },
        "trained_tokens": trained,
        "order": order,
        "repeats": rows,
        "ratios_per_repeat": ratios,
        "arms": per_arm,
        "ratio_method": "per repeat: adaptlab trained tokens/s / the TRL arm's in the same repeat; headline = median over "
                        "repeats (min and max in *_range)",
        "throughput_ratio_vs_trl_fastest": ratio["trl_fastest"]["median"],
        "throughput_ratio_vs_trl_fastest_range": [ratio["trl_fastest"]["min"], ratio["trl_fastest"]["max"]],
        "throughput_ratio_vs_trl_default": ratio["trl_default"]["median"],
        "throughput_ratio_vs_trl_default_range": [ratio["trl_default"]["min"], ratio["trl_default"]["max"]],
        "eval_loss_scored": "repeat 1's adaptlab and trl_fastest models, the same code (token-weighted loss on the reply "
                            "tokens of the test rows)",
        "eval_loss_adaptlab": losses["adaptlab"],
        "eval_loss_trl": losses["trl_fastest"],
        "eval_loss_within_2pct": losses["adaptlab"] <= 1.02 * losses["trl_fastest"],
    }


def run(train_size: int, test_size: int, epochs: int, repeats: int, out: Path | None = None) -> Path:
    """Load the split, run the comparison and write ``sft_vs_trl.json`` (into ``out`` instead of benchmarks/results)."""
    import adaptlab

    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=train_size, val_size=DEFAULTS["val_size"],
                                             test_size=test_size)
    payload = versus_trl(splits, epochs, repeats)
    if out is not None:
        _common.RESULTS = Path(out)
    return _common.save("sft_vs_trl", payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=DEFAULTS["train_size"])
    parser.add_argument("--test-size", type=int, default=DEFAULTS["test_size"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed runs of each arm, in alternating order")
    parser.add_argument("--out", type=Path, help="write sft_vs_trl.json into this directory, not benchmarks/results")
    args = parser.parse_args()
    run(args.train_size, args.test_size, args.epochs, args.repeats, args.out)


if __name__ == "__main__":
    main()
