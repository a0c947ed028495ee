"""GRPO and RLOO on the verifiable task adaptlab ships (``arithmetic``), from an SFT start, scored on held-out prompts.

SmolLM2-135M-Instruct (the packaged Q4_1 GGUF, de-quantised to float) is first supervised-fine-tuned with LoRA on the
training problems (the SFT start: the answer format), then trained with GRPO and, separately, RLOO on the same
training prompts with the ``numeric`` reward. All three are scored on the same >= 200 test problems no run trained
on: greedy replies, accuracy = share whose last number is the answer, with a paired bootstrap 95% interval of the
gain over the start. Also: KL to the start (nats per sampled response, ``rlhf eval``'s measure) and the change of
general-text perplexity (the forgetting probe's held-out Wikipedia summaries).

    python benchmarks/grpo_verifiable.py [--steps 60] [--test 200] [--workdir DIR] [--model smollm2-135m]

Writes ``benchmarks/results/grpo_verifiable.json`` (fields as issue 43 names them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save


def accuracy(model: str, rows: list[dict], max_new_tokens: int) -> np.ndarray:
    """Per test prompt: 1 when the greedy reply's last number is the answer."""
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.rlhf.reward_functions import build_rewards, check_rewards
    from adaptlab.sft.evaluate import generate_replies
    from adaptlab.sft.template import encode_prompt

    lm, tokenizer, _ = load_causal_lm(model, "cpu")
    replies = generate_replies(lm.eval(), tokenizer, [encode_prompt(tokenizer, r["prompt"]) for r in rows], max_new_tokens)
    (numeric,) = build_rewards(check_rewards(["numeric"]))
    return np.asarray(numeric(None, replies["texts"], answer=[r["answer"] for r in rows]))


def general_ppl(model: str) -> float:
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import GENERAL_MAX_TOKENS, sequence_loss
    from adaptlab.sft.template import encode_text
    from adaptlab.data.generation import general_text_sample

    lm, tokenizer, _ = load_causal_lm(model, "cpu")
    examples = [chunk for text in general_text_sample()[:32] for chunk in encode_text(tokenizer, text, GENERAL_MAX_TOKENS)[:1]]
    return sequence_loss(lm.eval(), examples, pad_id(tokenizer))["perplexity"]


def gain_interval(after: np.ndarray, before: np.ndarray, draws: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(after), size=(draws, len(after)))
    gains = after[index].mean(1) - before[index].mean(1)
    return [round(float(np.quantile(gains, 0.025)), 4), round(float(np.quantile(gains, 0.975)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sft-train", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--batch", type=int, default=4, help="prompts per step")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab
    from adaptlab.rlhf.evaluate import compare_policies
    from adaptlab.rlhf.grpo import prompt_rows, train_grpo, train_rloo

    work = args.workdir or Path(tempfile.mkdtemp(prefix="adaptlab-grpo-"))
    splits = adaptlab.load_generation_splits("arithmetic", train_size=args.sft_train, val_size=64, test_size=args.test)
    rows = prompt_rows(splits.test)
    sft = work / "sft"
    if not (sft / "manifest.json").exists():
        adaptlab.train_sft(splits, sft, model=args.model, method="lora", epochs=1, max_new_tokens=args.max_new_tokens,
                           forgetting=False, progress=False)
    results, timings = {"start": accuracy(str(sft), rows, args.max_new_tokens)}, {}
    for name, train in (("grpo", train_grpo), ("rloo", train_rloo)):
        out = work / name
        started = time.perf_counter()
        if not (out / "manifest.json").exists():
            train(splits, out, model=str(sft), reward=["numeric"], max_steps=args.steps, batch_size=args.batch,
                  num_generations=args.group, max_completion_length=args.max_new_tokens, lr=args.lr, progress=False)
        timings[name] = round(time.perf_counter() - started, 1)
        results[name] = accuracy(str(out), rows, args.max_new_tokens)
    from adaptlab.artifacts import read_manifest

    kl = compare_policies([str(work / "grpo")], [r["prompt"][-1]["content"] for r in rows[:64]],
                          lambda prompts, responses: [0.0] * len(responses), reference=str(sft),
                          max_new_tokens=args.max_new_tokens, seed=0)
    before_ppl, after_ppl = general_ppl(str(sft)), general_ppl(str(work / "grpo"))
    grpo_manifest = read_manifest(work / "grpo")
    save("grpo_verifiable", {
        "model": f"{args.model} (the packaged Q4_1 GGUF, de-quantised to float)",
        "task": "arithmetic (shipped, generated offline)", "test_prompts": len(rows), "train_prompts": len(splits.train),
        "settings": {"steps": args.steps, "group": args.group, "prompts_per_step": args.batch, "lr": args.lr,
                     "max_new_tokens": args.max_new_tokens, "reward": "numeric", "start": "SFT (LoRA, 1 epoch)"},
        "start_accuracy": round(float(results["start"].mean()), 4),
        "grpo_accuracy": round(float(results["grpo"].mean()), 4),
        "rloo_accuracy": round(float(results["rloo"].mean()), 4),
        "grpo_gain_ci95": gain_interval(results["grpo"], results["start"]),
        "rloo_gain_ci95": gain_interval(results["rloo"], results["start"]),
        "grpo_train_seconds": grpo_manifest["cost"]["train_seconds"],
        "rloo_train_seconds": read_manifest(work / "rloo")["cost"]["train_seconds"],
        "grpo_reward_per_step": grpo_manifest["training"]["reward_per_step"],
        "wall_seconds": timings,
        "kl_to_start": round(kl["policies"][0]["kl_to_reference"], 4),
        "forgetting_ppl_delta": round(after_ppl - before_ppl, 3),
        "target_met": bool(results["grpo"].mean() - results["start"].mean() >= 0.10
                           and gain_interval(results["grpo"], results["start"])[0] > 0),
    })


if __name__ == "__main__":
    main()
