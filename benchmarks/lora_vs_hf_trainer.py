"""LoRA on minilm: adaptlab vs a plain Hugging Face Trainer + PEFT script, same hyper-parameters, one run.

4,000 Rotten Tomatoes training sentences, 3 epochs, batch 32, r=8 on query/value, alpha 16, dropout 0.1,
AdamW lr 1e-3 with weight decay 0.01, linear schedule with 6% warm-up, gradient clipping at 1.0, fp32,
max length 256, best epoch chosen on the same validation split, accuracy on the same test split.
The plain script is what the PEFT and transformers docs show: dynamic padding with
``DataCollatorWithPadding``, randomly composed batches, evaluation and a checkpoint each epoch.

    python benchmarks/lora_vs_hf_trainer.py [--train-size 4000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _common import save

HP = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.06, "grad_clip": 1.0,
      "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"], "max_length": 256}


def plain_hf_trainer(splits, workdir: str) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from adaptlab.models import resolve_model

    path = resolve_model("minilm").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=HP["r"], lora_alpha=HP["alpha"],
                                             lora_dropout=HP["dropout"], target_modules=HP["target_modules"]))

    def dataset(part):
        encoded = tokenizer(part.texts, truncation=True, max_length=HP["max_length"])
        return Dataset.from_dict({**encoded, "labels": part.labels.tolist()})

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        output_dir=workdir, num_train_epochs=HP["epochs"], per_device_train_batch_size=HP["batch_size"],
        per_device_eval_batch_size=64, learning_rate=HP["lr"], weight_decay=HP["weight_decay"],
        warmup_steps=HP["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=HP["grad_clip"],
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        save_total_limit=1, logging_steps=50, report_to=[], seed=splits.seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset(splits.train), eval_dataset=dataset(splits.val),
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    test = trainer.predict(dataset(splits.test))
    return {
        "train_seconds": round(seconds, 1),
        "train_samples_per_second": round(output.metrics["train_samples_per_second"], 1),
        "test_accuracy": float((test.predictions.argmax(-1) == test.label_ids).mean()),
    }


def adaptlab_lora(splits, workdir: str) -> dict:
    import adaptlab

    result = adaptlab.train("lora", splits, f"{workdir}/lora", model="minilm", progress=False, **HP)
    training = result.manifest["training"]
    return {
        "train_seconds": round(training["seconds"], 1),
        "train_samples_per_second": round(training["samples_per_second"], 1),
        "test_accuracy": result.metrics["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-size", type=int, default=4000)
    args = parser.parse_args()
    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=args.train_size, seed=0)
    with tempfile.TemporaryDirectory() as workdir:
        plain = plain_hf_trainer(splits, workdir)
        ours = adaptlab_lora(splits, workdir)
    save("lora_vs_hf_trainer", {
        "setup": {**HP, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test), "model": "minilm"},
        "hf_trainer_peft": plain,
        "adaptlab": ours,
        "throughput_ratio": round(ours["train_samples_per_second"] / plain["train_samples_per_second"], 2),
        "accuracy_difference_points": round(100 * (ours["test_accuracy"] - plain["test_accuracy"]), 2),
    })


if __name__ == "__main__":
    main()
