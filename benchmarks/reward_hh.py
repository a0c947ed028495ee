"""Reward models on Anthropic HH-RLHF (harmless-base test file, 2,312 human-labelled pairs): held-out pairwise
accuracy per backbone, method and context length, trained on the same prompt-level split in one run.

Rows are ``backbone:method:max_length`` (default: minilm LoRA and full at 256 tokens, SmolLM2-135M-Instruct +
LoRA with chat-formatted turns at 256 and 512 tokens: what truncation costs). Each row reports the held-out
pairwise accuracy with its prompt-bootstrap 95% interval, the peak memory while it trained (rows share one
process, so memory an earlier row still holds counts: an upper bound on its own), and how many held-out
sequences its ``max_length`` cuts. The "longer response wins" rule is reported beside them, as the bar to clear. SmolLM2 comes
from the packaged Q4_1 GGUF, de-quantised to float.

    python benchmarks/reward_hh.py [--epochs 2] [--rows minilm:lora:256,smollm2-135m:lora:512]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import save

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_test.jsonl.gz"
ROWS = "minilm:lora:256,minilm:full:256,smollm2-135m:lora:256,smollm2-135m:lora:512"
TARGETS = {"pairwise_accuracy": 0.60, "peak_rss_mb": 3000}


def truncated_share(pairs, backbone: str, max_length: int, chat: bool | None) -> float:
    """Share of held-out sequences, framed as the reward model frames them, longer than max_length tokens."""
    from adaptlab.models.loading import load_tokenizer, resolve_model
    from adaptlab.rlhf.pairs import encode, pair_template

    tokenizer = load_tokenizer(resolve_model(backbone))
    template = pair_template(tokenizer, chat)
    lengths = np.array([len(encode(tokenizer, p.prompt, response, 10**9, template))
                        for p in pairs for response in (p.chosen, p.rejected)])
    return round(float((lengths > max_length).mean()), 3)


def longer_wins(pairs) -> float:
    """Accuracy of "the longer response is the chosen one" (ties count half)."""
    wins = [1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0 for p in pairs]
    return round(float(np.mean(wins)), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", default=ROWS, help="comma-separated backbone:method:max_length")
    args = parser.parse_args()
    if not HH.exists():
        raise SystemExit(f"{HH} is not here")
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    pairs, kind = read_preferences(str(HH), skip_invalid=True)
    split = split_preferences(pairs, str(HH), seed=0)
    rows = []
    for spec in args.rows.split(","):
        backbone, method, max_length = spec.split(":")
        manifest = train_reward_model(split, Path(tempfile.mkdtemp()) / method, model=backbone, method=method,
                                      epochs=args.epochs, max_length=int(max_length), progress=False)
        test = manifest["metrics"]["test"]
        rows.append({"backbone": backbone, "method": method, "max_length": int(max_length),
                     "chat": manifest["params"].get("chat"), "pairwise_accuracy": test["pairwise_accuracy"],
                     "ci95": test["ci95"], "pairs": test["pairs"], "mean_margin": test["mean_margin"],
                     "val_pairwise_accuracy": manifest["metrics"]["val"]["pairwise_accuracy"],
                     "truncated_share": truncated_share(split.test, backbone, int(max_length), manifest["params"].get("chat")),
                     "trainable_params": manifest["cost"]["trainable_params"], "train_seconds": manifest["cost"]["train_seconds"],
                     "peak_rss_mb": manifest["cost"]["peak_rss_mb"], "lr": manifest["params"]["lr"]})
        print(rows[-1], flush=True)
    best = max(rows, key=lambda row: row["pairwise_accuracy"])
    save("reward_model_hh_rlhf", {
        "data": {"file": HH.name, "valid_pairs": len(pairs), "format": kind, **split.describe()},
        "epochs": args.epochs, "results": rows, "chance": 0.5, "longer_response_wins": longer_wins(split.test),
        "best": {"backbone": best["backbone"], "method": best["method"], "max_length": best["max_length"],
                 "pairwise_accuracy": best["pairwise_accuracy"], "ci95": best["ci95"], "peak_rss_mb": best["peak_rss_mb"]},
        "targets": TARGETS,
        "meets_targets": best["pairwise_accuracy"] >= TARGETS["pairwise_accuracy"] and best["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "weights_note": "smollm2-135m is the packaged Q4_1 GGUF de-quantised to float",
    })


if __name__ == "__main__":
    main()
