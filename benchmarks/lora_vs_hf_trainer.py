"""LoRA on minilm: adaptlab vs Hugging Face Trainer + PEFT, the anchor at its fastest documented setting and at its
defaults, same network, same hyper-parameters, one process.

Three arms, each run once per repeat, order reversed on every other repeat (A B C, C B A, A B C) so drift in machine
speed hits all of them alike:

- ``adaptlab``: ``adaptlab.train("lora", ...)`` (its default length-grouped batching);
- ``hf_group_by_length``: Trainer with ``train_sampling_strategy="group_by_length"`` (transformers 5.x's name for the
  former ``group_by_length=True``, ``transformers/training_args.py``: "group samples of roughly the same length
  together (to minimize padding and be more efficient)"); the Trainer then also groups evaluation batches;
- ``hf_default``: Trainer with the default ``train_sampling_strategy="random"``.

Same network on all arms. adaptlab classifies minilm (a sentence-transformers checkpoint that declares mean pooling)
from the mean of its token vectors (``adaptlab.models.pooled.MeanPooledClassifier``), where
``AutoModelForSequenceClassification`` would read the CLS pooler. This benchmark is about speed, so the HF arms train
the same network: ``MeanPooledClassifier(AutoModel.from_pretrained(path), 2)`` wrapped by
``get_peft_model(model, LoraConfig(task_type=SEQ_CLS, ...))`` exactly as the PEFT docs wrap a classifier. That
network's ``forward`` returns logits only, so the Trainer gets its documented ``compute_loss_func`` argument
(mean cross-entropy over the batch, what a transformers classifier computes); nothing else differs from the plain
script the PEFT and transformers docs show (``DataCollatorWithPadding``, evaluation and a checkpoint each epoch,
best epoch by validation accuracy restored at the end).

Same hyper-parameters (``HP``): batch 32, LoRA r=8 / alpha 16 / dropout 0.1 on query+value (+ the head), AdamW lr 1e-3,
weight decay 0.01, linear schedule with 6% warm-up, clipping 1.0, fp32, max length 256, seed 0, same split. Head
start: adaptlab starts its head from a linear probe by default (``head_init="probe"``); here it runs with
``head_init="random"`` so all arms start from the same randomly initialised head and the probe's time is in no
timer (the accuracy figures are therefore those of a random-head start for every arm).

What is timed (``train_seconds``), the same work on every arm: the training loop with evaluation on validation each
epoch and a checkpoint each epoch. adaptlab: its own fit timer (``manifest["training"]["seconds"]``: Lightning fit plus
one validation pass of the starting weights that HF does not do, so it is charged to adaptlab); HF:
``trainer.train()`` (which also computes the length grouping, and restores the best checkpoint at the end).
Model loading, tokenisation and the test predictions are outside the timers on all arms; ``call_seconds`` gives each
arm's whole wall time for reference. The HF length-grouping computes lengths at the start of ``train()``: a
precomputed ``length`` column is dropped by the Trainer's ``remove_unused_columns`` before the sampler sees it, and
takes well under a second here.

Ratios: per repeat, HF seconds / adaptlab seconds (> 1: adaptlab faster), then median and spread (min, max).
Accuracy: test accuracy per repeat (the same seed each repeat, so they barely differ); the reported figure is the
median. Default size (1,500 training sentences, 2 epochs, 500 validation, full test set): about 12-15 minutes for
3 arms x 3 repeats on a 2-core AVX2 CPU. Anchor settings not run are listed in ``anchor_settings_not_run``.

    python benchmarks/lora_vs_hf_trainer.py [--train-size 1500] [--epochs 2] [--repeats 3] [--out DIR/NAME.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common
import torch

NAME = "lora_vs_hf_trainer"
HP = {"batch_size": 32, "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.06, "grad_clip": 1.0,
      "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"], "max_length": 256}
ARMS = ("adaptlab", "hf_group_by_length", "hf_default")
NOT_RUN = {
    'train_sampling_strategy="batch_rebalance"': "documented for data-parallel training; with one process and no "
        "gradient accumulation each step's group is the whole shuffled batch, i.e. no length grouping",
    "torch_compile=True": "not measured: dynamic sequence lengths recompile or need dynamic shapes, and inductor "
        "compilation on a busy 2-core CPU takes minutes (adaptlab does not compile either)",
    "bf16=True": "slower here: this CPU has no native bf16 (adaptlab's runtime notes 789 s vs 32 s for bf16 vs fp32 LoRA "
        "training on a 2-core EPYC); all arms run fp32",
    "dataloader_num_workers > 0": "tokenisation is done before training; collation of pre-tokenised ids is cheap, and "
        "extra worker processes would compete for the 2 cores (adaptlab also loads in the main process)",
}


def hf_trainer(splits, workdir: str, epochs: int, sampling: str) -> dict:
    """The documented Trainer + PEFT script on the mean-pooled network; ``sampling``: train_sampling_strategy."""
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from adaptlab.models import resolve_model
    from adaptlab.models.pooled import MeanPooledClassifier

    called = time.perf_counter()
    set_seed(splits.seed)
    path = resolve_model("minilm").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = MeanPooledClassifier(AutoModel.from_pretrained(path), num_labels=len(splits.label_names))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=HP["r"], lora_alpha=HP["alpha"],
                                             lora_dropout=HP["dropout"], target_modules=HP["target_modules"]))

    def dataset(part):
        encoded = tokenizer(part.texts, truncation=True, max_length=HP["max_length"])
        return Dataset.from_dict({**encoded, "labels": part.labels.tolist()})

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    def cross_entropy(outputs, labels, num_items_in_batch=None):  # the mean, as a transformers classifier computes it
        return torch.nn.functional.cross_entropy(outputs["logits"], labels)

    args = TrainingArguments(
        output_dir=workdir, num_train_epochs=epochs, per_device_train_batch_size=HP["batch_size"],
        per_device_eval_batch_size=2 * HP["batch_size"], learning_rate=HP["lr"], weight_decay=HP["weight_decay"],
        warmup_steps=HP["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=HP["grad_clip"],
        train_sampling_strategy=sampling,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        save_total_limit=1, logging_steps=50, report_to=[], seed=splits.seed, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset(splits.train), eval_dataset=dataset(splits.val),
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=accuracy, compute_loss_func=cross_entropy)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    test = trainer.predict(dataset(splits.test))
    return {
        "train_seconds": round(seconds, 2),
        "train_samples_per_second": round(output.metrics["train_samples_per_second"], 1),
        "test_accuracy": float((test.predictions.argmax(-1) == test.label_ids).mean()),
        "call_seconds": round(time.perf_counter() - called, 2),
    }


def adaptlab_lora(splits, workdir: str, epochs: int) -> dict:
    import adaptlab

    called = time.perf_counter()
    result = adaptlab.train("lora", splits, f"{workdir}/lora", model="minilm", progress=False, epochs=epochs,
                            head_init="random", precision="fp32", **HP)
    training = result.manifest["training"]
    assert training["head_start"] == "random", training["head_start"]
    pooling = result.manifest["details"]["tokenization"]["pooling"]
    return {
        "train_seconds": round(training["seconds"], 2),
        "train_samples_per_second": round(training["samples_per_second"], 1),
        "test_accuracy": result.metrics["accuracy"],
        "call_seconds": round(time.perf_counter() - called, 2),
        "pooling": pooling,
    }


def spread(values: list[float], digits: int) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--val-size", type=int, default=None, help="default: the split's (500 for Rotten Tomatoes)")
    parser.add_argument("--test-size", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help=f"result file, DIR/NAME.json (default: benchmarks/results/{NAME}.json)")
    args = parser.parse_args()
    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=args.train_size, val_size=args.val_size,
                                  test_size=args.test_size, seed=0)
    runs = {
        "adaptlab": lambda workdir: adaptlab_lora(splits, workdir, args.epochs),
        "hf_group_by_length": lambda workdir: hf_trainer(splits, workdir, args.epochs, "group_by_length"),
        "hf_default": lambda workdir: hf_trainer(splits, workdir, args.epochs, "random"),
    }
    rows: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in (ARMS if repeat % 2 == 0 else ARMS[::-1]):
            with tempfile.TemporaryDirectory(prefix="lora-bench-") as workdir:
                row = runs[arm](workdir)
            rows[arm].append({"repeat": repeat + 1, **row, "threads": torch.get_num_threads()})
            print(f"repeat {repeat + 1}: {arm}: {row['train_seconds']:.1f} s, accuracy {row['test_accuracy']:.4f}",
                  file=sys.stderr)

    seconds = {arm: [row["train_seconds"] for row in rows[arm]] for arm in ARMS}
    accuracy = {arm: statistics.median(row["test_accuracy"] for row in rows[arm]) for arm in ARMS}
    ratios = {hf: [h / a for h, a in zip(seconds[hf], seconds["adaptlab"])] for hf in ARMS[1:]}
    _save(args.out, {
        "benchmark": NAME,
        "setup": {**HP, "epochs": args.epochs, "head_init": "random", "precision": "fp32", "pooling": "mean (all arms)",
                  "train": len(splits.train), "val": len(splits.val), "test": len(splits.test), "model": "minilm",
                  "seed": splits.seed},
        "repeats": args.repeats,
        "ratio_vs_hf_group_by_length": round(statistics.median(ratios["hf_group_by_length"]), 3),
        "ratio_vs_hf_default": round(statistics.median(ratios["hf_default"]), 3),
        "accuracy_adaptlab": accuracy["adaptlab"],
        "accuracy_hf_group_by_length": accuracy["hf_group_by_length"],
        "accuracy_hf_default": accuracy["hf_default"],
        "accuracy_gap_points": round(100 * abs(accuracy["adaptlab"] - accuracy["hf_group_by_length"]), 2),
        "ratios": {f"vs_{hf}": {"per_repeat": [round(r, 3) for r in ratios[hf]], **spread(ratios[hf], 3)}
                   for hf in ARMS[1:]},
        "train_seconds": {arm: {"per_repeat": seconds[arm], **spread(seconds[arm], 2)} for arm in ARMS},
        "rows": rows,
        "arms": {
            "adaptlab": "adaptlab.train('lora', splits, dir, model='minilm', head_init='random', precision='fp32', **HP)",
            "hf_group_by_length": "Trainer + get_peft_model(MeanPooledClassifier(AutoModel), LoraConfig(SEQ_CLS)), "
                                  "TrainingArguments(train_sampling_strategy='group_by_length')",
            "hf_default": "the same with the default train_sampling_strategy='random'",
        },
        "method": {
            "timed": "adaptlab: its fit timer (training, a validation pass of the start, validation and checkpoint each "
                     "epoch); HF: trainer.train() (training, evaluation and checkpoint each epoch, best-checkpoint "
                     "restore). Model loading, tokenisation, test prediction: outside the timers (call_seconds: all)",
            "order": "all arms once per repeat, order reversed on every other repeat",
            "ratio": "HF train_seconds / adaptlab train_seconds within each repeat (> 1: adaptlab faster); median, min, max",
            "accuracy": "median over repeats of test accuracy; accuracy_gap_points = |adaptlab - hf_group_by_length| x 100",
        },
        "anchor_settings_not_run": NOT_RUN,
    })


def _save(out: Path | None, payload: dict) -> None:
    if out is not None:  # save() writes <RESULTS>/<name>.json
        _common.RESULTS = out.resolve().parent
        _common.save(out.stem, payload)
    else:
        _common.save(NAME, payload)


if __name__ == "__main__":
    main()
