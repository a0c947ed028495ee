"""The classic RLHF demonstration, offline: make SmolLM2's movie-review continuations positive with PPO.

Prompts are the first 2-8 words of IMDB reviews; the reward is the log-odds of "positive" from a sentiment
classifier adaptlab trains here on IMDB (minilm + new head); the policy is SmolLM2-135M-Instruct with LoRA.
Before and after training, base and tuned policies are compared on held-out prompts (another sample of
reviews): mean reward, win rate, KL to the base, and samples. Every PPO step's time is split into
generation, scoring and optimisation (batch 8, 24 new tokens), with the peak memory of the run.

    python benchmarks/ppo_sentiment.py [--steps 30] [--eval-prompts 64]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab
    from adaptlab.rlhf.evaluate import evaluate_policy
    from adaptlab.rlhf.ppo import PPOConfig, review_prompts, train_ppo
    from adaptlab.rlhf.rewards import load_reward

    work = Path(tempfile.mkdtemp(prefix="adaptlab-ppo-"))
    splits = adaptlab.load_splits("imdb", train_size=2000, val_size=300, test_size=500)
    classifier = adaptlab.train("head", splits, work / "imdb-head", model="minilm", max_length=256, progress=False)
    reward = load_reward(str(work / "imdb-head"), "positive")
    config = PPOConfig(steps=args.steps, batch_size=8, mini_batch_size=4, ppo_epochs=4, max_new_tokens=24, lr=args.lr,
                       init_kl_coef=0.2, target_kl=6.0)
    manifest = train_ppo("smollm2-135m", review_prompts(512, seed=0), reward, config, work / "policy",
                         reward_spec="imdb head classifier, log-odds of positive")
    with open(work / "policy" / "training_log.csv") as handle:
        log = list(csv.DictReader(handle))
    held_out = review_prompts(args.eval_prompts, seed=10_000)
    evaluation = evaluate_policy(work / "policy", held_out, reward, max_new_tokens=24)
    timing = {part: round(float(np.mean([float(row[f"seconds_{part}"]) for row in log])), 2)
              for part in ("generation", "scoring", "optimisation")}
    save("ppo_sentiment_imdb", {
        "policy": "smollm2-135m + LoRA r=16 (all linear layers)", "reward": "minilm head on IMDB (2,000 reviews), log-odds of positive",
        "classifier_test_accuracy": classifier.metrics["accuracy"], "config": manifest["params"],
        "train": {"steps": len(log), "reward_per_step": [round(float(r["reward_mean"]), 3) for r in log],
                  "kl_per_step": [round(float(r["kl"]), 3) for r in log], "seconds": manifest["cost"]["train_seconds"],
                  "peak_rss_mb": manifest["cost"]["peak_rss_mb"]},
        "seconds_per_step": timing,
        "held_out": {k: v for k, v in evaluation.items() if k != "policy"},
    })


if __name__ == "__main__":
    main()
