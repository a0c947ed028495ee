"""The adaptation ladder on Rotten Tomatoes with minilm: every strategy, same split, one run.

Accuracy, trainable parameters (and %), training time, throughput, peak memory and artifact size for
features + logistic regression, head-only, last-2 layers, full fine-tuning, LoRA, prefix tuning,
P-tuning and prompt tuning, each with adaptlab's default hyper-parameters for that strategy.

    python benchmarks/ladder.py [--train-size 4000] [--epochs 3] [--strategies head,lora]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

LADDER = ["features", "head", "last-k", "full", "lora", "prefix-tuning", "p-tuning", "prompt-tuning"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(LADDER))
    args = parser.parse_args()
    os.environ["ADAPTLAB_CACHE"] = tempfile.mkdtemp(prefix="adaptlab-bench-")

    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=args.train_size, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for strategy in args.strategies.split(","):
            params = {"progress": False}
            if strategy != "features":
                params["epochs"] = args.epochs if strategy != "head" else 10
            result = adaptlab.train(strategy, splits, f"{workdir}/{strategy}", model="minilm", **params)
            manifest, cost = result.manifest, result.manifest["cost"]
            rows.append({
                "strategy": strategy,
                "test_accuracy": round(result.metrics["accuracy"], 4),
                "macro_f1": round(result.metrics["macro_f1"], 4),
                "val_accuracy": round(manifest["metrics"]["val"]["accuracy"], 4),
                "trainable_params": cost["trainable_params"],
                "trainable_percent": round(100 * cost["trainable_params"] / cost["total_params"], 4),
                "train_seconds": cost["train_seconds"],
                "peak_rss_mb": cost["peak_rss_mb"],
                "artifact_mb": round(manifest["size_bytes"] / 2**20, 2),
                "lr": manifest["params"].get("lr"),
                "epochs": manifest["params"].get("epochs"),
            })
            print(rows[-1], flush=True)
    save("ladder_minilm_rotten_tomatoes", {
        "setup": {"model": "minilm", "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                  "seed": 0, "batch_size": 32},
        "results": rows,
    })


if __name__ == "__main__":
    main()
