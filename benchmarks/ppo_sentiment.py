"""The classic RLHF demonstration, offline: make SmolLM2's movie-review continuations positive with PPO.

Prompts are the first 2-8 words of IMDB reviews; the reward is the log-odds of "positive" from a sentiment
classifier adaptlab trains here on IMDB (minilm + new head); the policy is SmolLM2-135M-Instruct with LoRA.
Before and after training, base and tuned policies are compared on held-out prompts (another sample of
reviews): mean reward, win rate, KL to the base, and samples. Every PPO step's time is split into
generation, scoring and optimisation (batch 8, 24 new tokens), with the peak memory of the run.

``--start sft`` runs the RLHF pipeline's order instead: SmolLM2 is first supervised-fine-tuned (LoRA, merged when PPO
loads the artifact) on IMDB reviews as plain text, so it continues a review like a reviewer; PPO then starts from that
artifact, and its KL leash and the held-out comparison are to the SFT model (``ppo_sentiment_imdb_from_sft.json``).
SmolLM2 is the packaged Q4_1 GGUF, de-quantised to float.

    python benchmarks/ppo_sentiment.py [--steps 30] [--eval-prompts 64] [--start base|sft] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
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
    parser.add_argument("--start", choices=("base", "sft"), default="base")
    parser.add_argument("--sft-reviews", type=int, default=800, help="IMDB reviews the SFT start trains on")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep artifacts here; a rerun reuses the classifier, SFT start and policy it finds finished")
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab
    from adaptlab.artifacts import read_manifest
    from adaptlab.rlhf.evaluate import compare_policies, evaluate_policy, held_out
    from adaptlab.rlhf.ppo import PPOConfig, train_ppo
    from adaptlab.rlhf.prompts import review_prompts
    from adaptlab.rlhf.rewards import load_reward

    work = args.workdir or Path(tempfile.mkdtemp(prefix="adaptlab-ppo-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "imdb-head" / "manifest.json").exists():  # a resumed --workdir keeps its classifier
        splits = adaptlab.load_splits("imdb", train_size=2000, val_size=300, test_size=500)
        adaptlab.train("head", splits, work / "imdb-head", model="minilm", max_length=256, progress=False)
    classifier_accuracy = read_manifest(work / "imdb-head")["metrics"]["test"]["accuracy"]
    reward = load_reward(str(work / "imdb-head"), "positive")
    config = PPOConfig(steps=args.steps, batch_size=8, mini_batch_size=4, ppo_epochs=4, max_new_tokens=24, lr=args.lr,
                       init_kl_coef=0.2, target_kl=6.0)
    start, sft = "smollm2-135m", None
    if args.start == "sft":
        sft = supervised_start(work, args.sft_reviews)
        start = str(work / "sft")
    policy = work / "policy"
    if not (policy / "manifest.json").exists():  # a resumed --workdir keeps its trained policy
        train_ppo(review_prompts(512, seed=0), policy, reward=reward, model=start, config=config,
                  reward_spec="imdb head classifier, log-odds of positive")
    manifest = read_manifest(policy)
    trained = {k: manifest["params"].get(k) for k in ("steps", "lr")}
    if trained != {"steps": args.steps, "lr": args.lr}:
        raise SystemExit(f"{policy} was trained with {trained}, not --steps {args.steps} --lr {args.lr}; "
                         "choose another --workdir")
    with open(policy / "training_log.csv") as handle:
        log = list(csv.DictReader(handle))
    prompts = held_out(policy, review_prompts(2 * args.eval_prompts, seed=10_000), args.eval_prompts)
    if sft:  # the reference is the SFT start (PPO's leash); the untuned model is listed beside it for context
        evaluation = compare_policies([policy, "smollm2-135m"], prompts, reward, reference=str(work / "sft"), max_new_tokens=24)
        names = {str(policy): "ppo (from the sft start)", "smollm2-135m": "smollm2-135m (no sft, no ppo)"}
        evaluation["reference"] = "sft start"
        for row in evaluation["policies"]:
            row["policy"] = names[row["policy"]]
        evaluation["samples"] = [{names.get(key, key): value for key, value in sample.items()} for sample in evaluation["samples"]]
    else:
        evaluation = evaluate_policy(policy, prompts, reward, max_new_tokens=24)
    timing = {part: round(float(np.mean([float(row[f"seconds_{part}"]) for row in log])), 2)
              for part in ("generation", "scoring", "optimisation")}
    save("ppo_sentiment_imdb" + ("_from_sft" if sft else ""), {
        "policy": "smollm2-135m + LoRA r=16 (all linear layers)", "start": sft or "smollm2-135m (no SFT)", "reward": "minilm head on IMDB (2,000 reviews), log-odds of positive",
        "classifier_test_accuracy": classifier_accuracy, "config": manifest["params"],
        "train": {"steps": len(log), "reward_per_step": [round(float(r["reward_mean"]), 3) for r in log],
                  "kl_per_step": [round(float(r["kl"]), 3) for r in log], "seconds": manifest["cost"]["train_seconds"],
                  "peak_rss_mb": manifest["cost"]["peak_rss_mb"]},
        "seconds_per_step": timing,
        "held_out": {k: v for k, v in evaluation.items() if k != "policy"},
    })


def supervised_start(work: Path, reviews: int) -> dict:
    """SFT on IMDB reviews as plain text (LoRA, one epoch, 128-token packed blocks): the pipeline's first step.

    A finished SFT artifact already in ``work`` (same review count) is reused: it takes half an hour on 2 cores."""
    import adaptlab
    from adaptlab.artifacts import read_manifest
    from adaptlab.data import load_data

    corpus = work / "reviews.jsonl"
    if not (work / "sft" / "manifest.json").exists():
        texts = load_data("imdb").texts
        chosen = np.random.default_rng(1).choice(len(texts), reviews, replace=False)
        corpus.write_text("".join(json.dumps({"text": texts[i].replace("<br />", " ")}) + "\n" for i in chosen))
        splits = adaptlab.load_generation_splits(str(corpus), test_size=64)
        adaptlab.train_sft(splits, work / "sft", method="lora", epochs=1, max_length=128, forgetting=False, progress=False)
    elif len(corpus.read_text().splitlines()) != reviews:
        raise SystemExit(f"{work / 'sft'} was trained on another --sft-reviews; choose another --workdir")
    manifest = read_manifest(work / "sft")
    return {"artifact": "sft: LoRA on IMDB reviews as plain text (merged when PPO loads it)", "reviews": reviews,
            "test_loss": manifest["metrics"]["test"].get("loss"), "train_seconds": manifest["cost"]["train_seconds"]}


if __name__ == "__main__":
    main()
