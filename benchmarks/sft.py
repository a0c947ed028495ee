"""Supervised fine-tuning of SmolLM2-135M-Instruct on wiki-descriptions, two results from one script run:

- ``sft_vs_trl.json``: adaptlab's LoRA SFT against TRL's ``SFTTrainer`` + PEFT on the same rows, chat template,
  LoRA (r 16, alpha 32, dropout 0.05, every linear layer), optimiser (AdamW, lr, linear schedule, 6% warm-up,
  weight decay 0.01, clip 1.0), batch, epochs and completion-only loss, run back to back. ``throughput_ratio`` is
  trained tokens per second (the same labelled-token count for both, over each side's whole fit: model load,
  tokenization, training), adaptlab / TRL. Both tuned models are scored by the same code on the same test rows
  (token-weighted loss on the reply tokens): ``eval_loss_adaptlab``, ``eval_loss_trl``.
- ``sft_ladder.json``: zero-shot and 4-shot prompting, prompt tuning, prefix tuning, LoRA and full fine-tuning on
  one split, each with ROUGE-L, token F1, exact match, held-out loss, trainable parameters, train time, peak RSS
  and forgetting (general-text perplexity and zero-shot Rotten Tomatoes accuracy, before -> after).

- ``sft_batching.json``: the same LoRA run with random batches, length-grouped batches and packing
  (blocks of examples with position ids reset per example): trained tokens/s and held-out loss of each. Random
  batches are the SFT default (as in TRL): length grouping is faster but its batches of only-short or only-long
  examples cost held-out loss on small data.

The packaged SmolLM2 is the Q4_1 GGUF de-quantized to float: every figure here is for that model.

    python benchmarks/sft.py [--train-size 128] [--epochs 2] [--only trl|ladder|batching]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _common import save

HP = {"r": 16, "alpha": 32, "lora_dropout": 0.05, "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.06,
      "grad_clip": 1.0, "batch_size": 8, "max_length": 512}
LADDER_LR = {"prompt-tuning": 3e-2, "prefix-tuning": 5e-3, "lora": 1e-3, "full": 5e-5}


def trl_sft(splits, epochs: int, workdir: str) -> tuple[float, object, object]:
    """TRL's documented recipe: prompt-completion conversational rows (loss on the completion only), PEFT LoRA."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from adaptlab.models import resolve_model

    path = resolve_model("smollm2-135m").path
    rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in splits.train.records]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    args = SFTConfig(
        output_dir=workdir, num_train_epochs=epochs, per_device_train_batch_size=HP["batch_size"],
        learning_rate=HP["lr"], weight_decay=HP["weight_decay"], warmup_steps=HP["warmup_ratio"],  # < 1: a ratio
        lr_scheduler_type="linear", max_grad_norm=HP["grad_clip"], max_length=HP["max_length"], packing=False,
        completion_only_loss=True, save_strategy="no", eval_strategy="no", logging_steps=1000, report_to=[],
        seed=splits.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=False,
    )
    peft_config = LoraConfig(task_type="CAUSAL_LM", r=HP["r"], lora_alpha=HP["alpha"], lora_dropout=HP["lora_dropout"],
                             target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.train()
    return time.perf_counter() - start, trainer.model.eval(), tokenizer


def versus_trl(splits, epochs: int) -> dict:
    import adaptlab
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import sequence_loss
    from adaptlab.sft.template import encode_conversation

    with tempfile.TemporaryDirectory() as tmp:
        trl_seconds, trl_model, tokenizer = trl_sft(splits, epochs, tmp + "/trl")
        kept = [e for e in (encode_conversation(tokenizer, m, HP["max_length"]) for m in splits.test.records) if e]
        trl_loss = sequence_loss(trl_model, kept, pad_id(tokenizer))["loss"]
        del trl_model
        manifest = adaptlab.train_sft(splits, tmp + "/adaptlab", method="lora", epochs=epochs, r=HP["r"], alpha=HP["alpha"],
                                      lora_dropout=HP["lora_dropout"], lr=HP["lr"], batch_size=HP["batch_size"],
                                      max_length=HP["max_length"], forgetting=False, generate_limit=1,
                                      max_new_tokens=1, progress=False).manifest
    trained = sum(sum(label != -100 for label in labels[1:]) for _, labels in
                  (encode_conversation(tokenizer, m, HP["max_length"]) for m in splits.train.records)) * epochs
    ours_seconds = manifest["cost"]["train_seconds"]
    return {
        "model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions",
        "train_examples": len(splits.train), "test_examples": len(splits.test), "epochs": epochs, "hyperparameters": HP,
        "trained_tokens": trained,
        "adaptlab": {"train_seconds": round(ours_seconds, 1), "tokens_per_second": round(trained / ours_seconds, 2),
                     "peak_rss_mb": manifest["cost"]["peak_rss_mb"]},
        "trl": {"train_seconds": round(trl_seconds, 1), "tokens_per_second": round(trained / trl_seconds, 2),
                "version": __import__("trl").__version__},
        "throughput_ratio": round(trl_seconds / ours_seconds, 3),
        "eval_loss_adaptlab": manifest["metrics"]["test"]["loss"],
        "eval_loss_trl": trl_loss,
    }


def ladder(splits, epochs: int) -> dict:
    import adaptlab
    from adaptlab.measure import measure
    from adaptlab.sft.prompting import evaluate_prompting

    rows = []
    for shots in (0, 4):
        with measure() as cost:
            result = evaluate_prompting("smollm2-135m", splits, shots=shots, max_new_tokens=24)
        test = result["metrics"]["test"]
        rows.append({"method": result["strategy"], **_quality(test), "trainable_params": 0, "train_seconds": 0.0,
                     "peak_rss_mb": cost.as_dict()["peak_rss_mb"], "forgetting_ppl_delta": 0.0,
                     "forgetting_rt_accuracy_delta": 0.0})
        print(rows[-1], flush=True)
    for method, lr in LADDER_LR.items():
        with tempfile.TemporaryDirectory() as tmp:
            manifest = adaptlab.train_sft(splits, tmp + "/run", method=method, lr=lr, epochs=epochs,
                                          batch_size=HP["batch_size"], max_new_tokens=24, progress=False).manifest
        test, forgetting, cost = manifest["metrics"]["test"], manifest["metrics"]["forgetting"], manifest["cost"]
        rows.append({"method": method, "lr": lr, **_quality(test), "trainable_params": cost["trainable_params"],
                     "train_seconds": cost["train_seconds"], "peak_rss_mb": cost["peak_rss_mb"],
                     "forgetting_ppl_delta": forgetting["general_ppl_delta"],
                     "forgetting_ppl_relative": forgetting["general_ppl_relative"],
                     "forgetting_rt_accuracy_delta": forgetting["rt_accuracy_delta"],
                     "forgetting_before_after": {"before": forgetting["before"], "after": forgetting["after"]}})
        print(rows[-1], flush=True)
    by = {row["method"]: row for row in rows}
    return {
        "model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions", "epochs": epochs,
        "sizes": splits.describe()["sizes"], "results": rows,
        "lora_rouge_l_over_full": round(by["lora"]["rouge_l"] / max(by["full"]["rouge_l"], 1e-9), 3),
        "lora_forgets_less_than_full": by["lora"]["forgetting_ppl_delta"] < by["full"]["forgetting_ppl_delta"],
    }


def batching(splits, epochs: int) -> dict:
    import adaptlab

    rows = []
    for name, options in (("random batches", {"group_by_length": False}), ("length-grouped", {"group_by_length": True}),
                          ("packed", {"packing": True, "max_length": 256})):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = adaptlab.train_sft(splits, tmp + "/run", method="lora", lr=HP["lr"], epochs=epochs,
                                          batch_size=HP["batch_size"], forgetting=False, generate_limit=1,
                                          max_new_tokens=1, progress=False, **options).manifest
        rows.append({"batching": name, **options, "train_seconds": manifest["cost"]["train_seconds"],
                     "tokens_per_second": manifest["training"]["tokens_per_second"],
                     "steps": manifest["training"]["steps"], "eval_loss": manifest["metrics"]["test"]["loss"]})
        print(rows[-1], flush=True)
    base = rows[0]["tokens_per_second"]
    for row in rows:
        row["speedup_vs_random"] = round(row["tokens_per_second"] / base, 3)
    return {"model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions", "epochs": epochs,
            "train_examples": len(splits.train), "results": rows}


def _quality(test: dict) -> dict:
    return {key: test.get(key) for key in ("rouge_l", "token_f1", "exact_match", "stopped", "mean_length")} | {"eval_loss": test.get("loss")}


def main() -> None:
    import adaptlab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--test-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", choices=("trl", "ladder", "batching"))
    args = parser.parse_args()
    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=args.train_size, val_size=16,
                                             test_size=args.test_size)
    if args.only in (None, "trl"):
        save("sft_vs_trl", versus_trl(splits, args.epochs))
    if args.only in (None, "ladder"):
        save("sft_ladder", ladder(splits, args.epochs))
    if args.only in (None, "batching"):
        save("sft_batching", batching(splits, 1))


if __name__ == "__main__":
    main()
