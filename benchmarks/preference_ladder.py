"""DPO, KTO, ORPO, SimPO and PPO from one SFT start on the same HH-RLHF preferences, judged on held-out prompts.

Data: Anthropic HH-RLHF harmless-base (``../shared/data``), split by prompt (``split_preferences``, seed 0). The
policy model is SmolLM2-135M-Instruct (the packaged Q4_1 GGUF, de-quantised to float). One SFT start (LoRA, 1 epoch
on the training pairs' chosen replies); from it, each trainer with adaptlab's defaults on the same training pairs
(KTO reads each pair as two thumbs: chosen up, rejected down; PPO samples on the training prompts against the
judge). The **judge** is a reward model (``rlhf reward``, all-MiniLM-L6-v2 LoRA) trained on the whole training
split; PPO optimises that same judge, so its win rate is the most flattered (said in the result file).

Scored on held-out test prompts no run trained on (``rlhf eval``'s ``compare_policies``, one sampling seed for all):
the judge's win rate of each policy's reply over the SFT start's (ties half), with a prompt-bootstrap 95% interval;
KL to the start; forgetting as the change of general-text NLL (the forgetting probe's held-out Wikipedia
summaries; paired bootstrap over texts). Each model trains in its own process (its peak RSS is its own); finished
jobs are kept in --workdir and a rerun reuses them.

    python benchmarks/preference_ladder.py [--pairs 256] [--test-prompts 128] [--workdir DIR]

Writes ``benchmarks/results/preference_ladder.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import save

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_test.jsonl.gz"
TRAINERS = ("dpo", "kto", "orpo", "simpo", "ppo")


def splits(pairs_n: int):
    from adaptlab.rlhf import read_preferences, split_preferences

    pairs, _ = read_preferences(str(HH), skip_invalid=True)
    full, data = split_preferences(pairs, str(HH), seed=0), split_preferences(pairs, str(HH), seed=0, train_size=pairs_n)
    # the trainers' own held-out metrics (TRL's) on a part of validation and test: the judged win rate below is the
    # measure, and scoring every held-out pair with every trainer would cost more than the training
    return full, dataclasses.replace(data, val=data.val[:64], test=data.test[:128])


def train_job(name: str, work: Path, args) -> None:
    """One model, in this (fresh) process."""
    import adaptlab
    from adaptlab.data.generation import GenerationData, GenerationSplits
    from adaptlab.rlhf.kto import ThumbSplit, thumbs_from_pairs

    full, data = splits(args.pairs)
    out, sft = work / name, str(work / "sft")
    common = {"max_length": args.max_length, "progress": False, "precision": "fp32"}
    if name == "judge":
        if args.judge_pairs:  # a quick check of the script; the benchmark's judge reads every training pair
            full = dataclasses.replace(full, train=full.train[:args.judge_pairs])
        adaptlab.rlhf.train_reward_model(full, out, model=args.judge, method="lora", max_length=args.max_length, epochs=1,
                                         progress=False)
    elif name == "sft":
        chat = lambda part: GenerationData("chat", [[{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.chosen}]
                                                    for p in part], [str(p.group) for p in part], str(HH))
        adaptlab.train_sft(GenerationSplits(chat(data.train), chat(data.val), chat(data.test[:64]), 0), out, model=args.model,
                           method="lora", epochs=1, max_length=args.max_length, forgetting=False, max_new_tokens=8,
                           generate_limit=4, progress=False)
    elif name == "dpo":
        from adaptlab.rlhf.dpo import train_dpo

        train_dpo(data, out, model=sft, **common)
    elif name == "kto":
        from adaptlab.rlhf.kto import train_kto

        thumbs = ThumbSplit(thumbs_from_pairs(data.train), thumbs_from_pairs(data.val), thumbs_from_pairs(data.test), str(HH))
        train_kto(thumbs, out, model=sft, **common)
    elif name in ("orpo", "simpo"):
        train = getattr(__import__(f"adaptlab.rlhf.{name}", fromlist=["x"]), f"train_{name}")
        train(data, out, model=sft, **common)
    elif name == "ppo":
        from adaptlab.rlhf.ppo import train_ppo

        prompts = short_prompts(data.train, args)
        train_ppo(prompts, out, reward=str(work / "judge"), model=sft, steps=args.ppo_steps, max_new_tokens=args.new_tokens,
                  progress=False)


def short_prompts(pairs, args) -> list[str]:
    """The distinct prompts, each cut from the left as the trainers cut theirs (``fit_prompt``: half of max_length)."""
    from adaptlab.models.loading import load_tokenizer, resolve_model
    from adaptlab.rlhf.trl_policy import fit_prompt

    tokenizer = load_tokenizer(resolve_model(args.model))
    return [fit_prompt(tokenizer, prompt, args.max_length) for prompt in dict.fromkeys(p.prompt for p in pairs)]


def general_nll(model: str) -> np.ndarray:
    """Per general text (the forgetting probe's held-out Wikipedia summaries): mean NLL per token."""
    from adaptlab.data.generation import general_text_sample
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import GENERAL_MAX_TOKENS, sequence_loss
    from adaptlab.sft.template import encode_text

    lm, tokenizer, _ = load_causal_lm(model, "cpu")
    examples = [encode_text(tokenizer, text, GENERAL_MAX_TOKENS)[0] for text in general_text_sample()[:32]]
    return np.array([sequence_loss(lm.eval(), [example], pad_id(tokenizer))["loss"] for example in examples])


def interval(values: np.ndarray, draws: int = 2000) -> list[float]:
    """95% bootstrap interval of the mean of ``values`` (resampling its rows)."""
    index = np.random.default_rng(0).integers(0, len(values), size=(draws, len(values)))
    means = values[index].mean(1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256, help="training pairs for the SFT start and every trainer")
    parser.add_argument("--test-prompts", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=48, help="reply length when judged (and PPO's rollouts)")
    parser.add_argument("--ppo-steps", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adaptlab-preference-ladder")
    parser.add_argument("--model", default="smollm2-135m", help="the policy model")
    parser.add_argument("--judge", default="minilm", help="the reward model's backbone")
    parser.add_argument("--judge-pairs", type=int, default=None, help="train the judge on fewer pairs (a smoke test)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not HH.exists():
        raise SystemExit(f"{HH} is not here (reference data the project keeps beside the repository)")
    os.environ.setdefault("ADAPTLAB_CACHE", str(args.workdir / "cache"))
    if args.job:
        return train_job(args.job, args.workdir, args)
    from adaptlab.artifacts import read_manifest
    from adaptlab.rlhf import load_reward
    from adaptlab.rlhf.evaluate import compare_policies

    for name in ("judge", "sft", *TRAINERS):  # one process per model, one after the other (two would share 2 cores)
        if not (args.workdir / name / "manifest.json").exists():
            print(f"training {name}", flush=True)
            subprocess.run([sys.executable, __file__, "--job", name, "--workdir", str(args.workdir), "--pairs", str(args.pairs),
                            "--model", args.model, "--judge", args.judge, *(["--judge-pairs", str(args.judge_pairs)] if args.judge_pairs else []),
                            "--max-length", str(args.max_length), "--new-tokens", str(args.new_tokens),
                            "--ppo-steps", str(args.ppo_steps)], check=True)
    full, data = splits(args.pairs)
    prompts = short_prompts(data.test, args)[:args.test_prompts]
    judge = load_reward(str(args.workdir / "judge"))
    policies = [str(args.workdir / name) for name in TRAINERS]
    compared = compare_policies(policies, prompts, judge, reference=str(args.workdir / "sft"),
                                max_new_tokens=args.new_tokens, seed=0)
    start_nll = general_nll(str(args.workdir / "sft"))
    start_reward = np.asarray(compared["rewards_per_prompt"]["reference"])
    rows = []
    for name, policy, row in zip(TRAINERS, policies, compared["policies"]):
        rewards = np.asarray(compared["rewards_per_prompt"][policy])
        wins = (rewards > start_reward) + 0.5 * (rewards == start_reward)
        nll = general_nll(policy)
        manifest = read_manifest(args.workdir / name)
        rows.append({"trainer": name, "win_rate_vs_start": round(float(wins.mean()), 4), "win_rate_ci95": interval(wins),
                     "reward_gain": round(row["reward_gain"], 4), "reward_gain_ci95": interval(rewards - start_reward),
                     "kl_to_start": round(row["kl_to_reference"], 4),
                     "forgetting_nll_delta": round(float((nll - start_nll).mean()), 4),
                     "forgetting_nll_delta_ci95": interval(nll - start_nll),
                     "forgetting_ppl_delta": round(float(np.exp((nll).mean()) - np.exp(start_nll.mean())), 3),
                     "train_seconds": manifest["cost"]["train_seconds"], "peak_rss_mb": manifest["cost"]["peak_rss_mb"],
                     "lr": manifest["params"].get("lr"), "trainable_params": manifest["cost"].get("trainable_params")})
        print(rows[-1], flush=True)
    judge_manifest, sft_manifest = read_manifest(args.workdir / "judge"), read_manifest(args.workdir / "sft")
    save("preference_ladder", {
        "model": f"{args.model} (the packaged Q4_1 GGUF, de-quantised to float)" if args.model == "smollm2-135m" else args.model,
        "data": {"file": HH.name, "train_pairs": len(data.train), "test_prompts": len(prompts),
                 "split": "by prompt (split_preferences, seed 0); test prompts never trained on"},
        "settings": {"start": "SFT LoRA, 1 epoch on the training pairs' chosen replies", "max_length": args.max_length,
                     "reply_tokens": args.new_tokens, "ppo_steps": args.ppo_steps,
                     "trainers": "adaptlab's defaults (LoRA, 1 epoch, batch 4), fp32", "sampling": "temperature 1, seed 0"},
        "judge": {"model": f"{args.judge} LoRA reward model on the whole training split (1 epoch)",
                  "held_out_pairwise_accuracy": judge_manifest["metrics"]["test"]["pairwise_accuracy"],
                  "ci95": judge_manifest["metrics"]["test"]["ci95"], "train_pairs": len(full.train),
                  "note": "PPO trains against this judge, so its win rate is the most flattered"},
        "start": {"reward": round(float(start_reward.mean()), 4), "train_seconds": sft_manifest["cost"]["train_seconds"],
                  "peak_rss_mb": sft_manifest["cost"]["peak_rss_mb"]},
        "results": rows,
        "best_win_rate": max(rows, key=lambda r: r["win_rate_vs_start"])["trainer"],
        "samples": "not kept: HH-RLHF's harmless split holds offensive red-teaming prompts by design",
    })


if __name__ == "__main__":
    main()
