"""Supervised fine-tuning of SmolLM2-135M-Instruct on wiki-descriptions, three results from one script run:

- ``sft_vs_trl.json``: adaptlab's LoRA SFT against TRL's ``SFTTrainer`` + PEFT, TRL as shipped (gradient
  checkpointing on) and at its fastest (off), same rows, template, LoRA, optimiser, batch and completion-only loss,
  each arm timed ``--repeats`` times in alternating order: ``throughput_ratio_vs_trl_fastest`` and
  ``throughput_ratio_vs_trl_default`` (median of per-repeat trained-tokens/s ratios), ``eval_loss_adaptlab``,
  ``eval_loss_trl``. Run by ``benchmarks/sft_vs_trl.py`` (its docstring has the details), which ``--only trl``
  calls with its own default sizes (40 training rows, 32 test rows, 1 epoch: about 11 minutes on 2 CPU threads).
- ``sft_ladder.json``: zero-shot and 4-shot prompting, prompt tuning, prefix tuning, LoRA and full fine-tuning on
  one split, each with ROUGE-L, token F1, exact match, held-out loss, trainable parameters, train time, peak RSS
  and forgetting (general-text perplexity and zero-shot Rotten Tomatoes accuracy, before -> after).
- ``sft_batching.json``: the same LoRA run with random batches, length-grouped batches and packing
  (blocks of examples with position ids reset per example): trained tokens/s and held-out loss of each. Random
  batches are the SFT default (as in TRL): length grouping is faster but its batches of only-short or only-long
  examples cost held-out loss on small data.

The packaged SmolLM2 is the Q4_1 GGUF de-quantized to float: every figure here is for that model.

    python benchmarks/sft.py [--train-size N] [--test-size N] [--epochs N] [--repeats 3] [--only trl|ladder|batching]
                             [--out DIR]

--train-size, --test-size and --epochs default to 128, 48 and 2 for the ladder and batching, and to
sft_vs_trl.py's defaults for the TRL comparison.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common
import sft_vs_trl

HP = sft_vs_trl.HP  # the LoRA learning rate and batch the TRL comparison uses
LADDER_LR = {"prompt-tuning": 3e-2, "prefix-tuning": 5e-3, "lora": 1e-3, "full": 5e-5}


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
    parser.add_argument("--train-size", type=int, help="default 128 (TRL comparison: sft_vs_trl.py's)")
    parser.add_argument("--test-size", type=int, help="default 48 (TRL comparison: sft_vs_trl.py's)")
    parser.add_argument("--epochs", type=int, help="default 2 (TRL comparison: sft_vs_trl.py's)")
    parser.add_argument("--repeats", type=int, default=sft_vs_trl.DEFAULTS["repeats"], help="TRL comparison: timed runs of each arm")
    parser.add_argument("--only", choices=("trl", "ladder", "batching"))
    parser.add_argument("--out", type=Path, help="write the result files into this directory, not benchmarks/results")
    args = parser.parse_args()
    if args.out is not None:
        _common.RESULTS = args.out
    if args.only in (None, "trl"):
        trl = sft_vs_trl.DEFAULTS
        sft_vs_trl.run(args.train_size or trl["train_size"], args.test_size or trl["test_size"], args.epochs or trl["epochs"],
                       args.repeats)
    if args.only == "trl":
        return
    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=args.train_size or 128, val_size=16,
                                             test_size=args.test_size or 48)
    if args.only in (None, "ladder"):
        _common.save("sft_ladder", ladder(splits, args.epochs or 2))
    if args.only in (None, "batching"):
        _common.save("sft_batching", batching(splits, 1))

if __name__ == "__main__":
    main()
