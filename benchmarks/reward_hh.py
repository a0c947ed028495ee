"""Reward model on Anthropic HH-RLHF (harmless-base test file, 2,312 human-labelled pairs): held-out pairwise
accuracy of minilm + LoRA and minilm fully fine-tuned, trained on the same prompt-level split in one run.

    python benchmarks/reward_hh.py [--epochs 1] [--max-length 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import save

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_test.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--methods", default="lora,full")
    args = parser.parse_args()
    if not HH.exists():
        raise SystemExit(f"{HH} is not here")
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    pairs, kind = read_preferences(str(HH), skip_invalid=True)
    split = split_preferences(pairs, str(HH), seed=0)
    rows = []
    for method in args.methods.split(","):
        manifest = train_reward_model(split, Path(tempfile.mkdtemp()) / method, model="minilm", method=method,
                                      epochs=args.epochs, max_length=args.max_length, progress=False)
        rows.append({"method": method, **manifest["metrics"]["test"], "val_pairwise_accuracy": manifest["metrics"]["val"]["pairwise_accuracy"],
                     "trainable_params": manifest["cost"]["trainable_params"], "train_seconds": manifest["cost"]["train_seconds"],
                     "peak_rss_mb": manifest["cost"]["peak_rss_mb"], "lr": manifest["params"]["lr"]})
        print(rows[-1], flush=True)
    save("reward_model_hh_rlhf", {"data": {"file": HH.name, "valid_pairs": len(pairs), "format": kind, **split.describe()},
                                  "model": "minilm", "epochs": args.epochs, "max_length": args.max_length, "results": rows,
                                  "chance": 0.5})


if __name__ == "__main__":
    main()
