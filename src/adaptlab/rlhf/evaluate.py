"""Compare a tuned policy with its base on held-out prompts: reward, win rate, KL to the base, samples.

Both policies sample (same seed, same settings) one response per prompt; the reward scores both; the KL is
estimated on the tuned policy's own samples as the mean over prompts of sum_t log pi(y_t) - log pi_base(y_t).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from adaptlab._io import atomic_file, write_json
from adaptlab.artifacts import read_manifest
from adaptlab.errors import AdaptlabError
from adaptlab.rlhf import ppo_core as core


def held_out(policy: str | Path, candidates: Sequence[str], n: int | None) -> list[str]:
    """The first ``n`` of ``candidates`` the policy was not trained on (PPO policies record their prompts)."""
    from adaptlab.rlhf.ppo import TRAIN_PROMPTS

    recorded = Path(policy) / TRAIN_PROMPTS
    seen = set(json.loads(recorded.read_text(encoding="utf-8"))) if recorded.exists() else set()
    kept = [p for p in candidates if p not in seen][:n]
    if not kept:
        raise AdaptlabError(f"every evaluation prompt was a training prompt of '{policy}'; give other --prompts")
    return kept


def _load_policy(path: Path, device):
    from adaptlab.models.causal import load_causal_lm

    manifest = read_manifest(path)
    if manifest["strategy"] != "ppo-policy":
        raise AdaptlabError(f"'{path}' is a '{manifest['strategy']}' artifact, not a policy from `adaptlab rlhf ppo`")
    base, tokenizer, _ = load_causal_lm(manifest["base_model"]["name"], str(device))
    if (path / "adapter").exists():
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(base, path / "adapter").eval()
        return tuned, None, tokenizer, manifest  # the base is the same network with the adapter disabled
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path / "model").to(device).eval(), base.eval(), tokenizer, manifest


@torch.inference_mode()
def evaluate_policy(policy: str | Path, prompts: Sequence[str], reward, *, max_new_tokens: int = 24,
                    batch_size: int = 8, seed: int = 0, device: str | None = None) -> dict:
    from adaptlab.rlhf.rewards import checked_reward
    from adaptlab.runtime import Runtime

    reward = checked_reward(reward)  # before the models load
    device = Runtime(device).torch_device
    tuned, separate_base, tokenizer, manifest = _load_policy(Path(policy), device)
    tokenizer.padding_side = "left"
    base_context = (lambda: tuned.disable_adapter()) if separate_base is None else nullcontext
    base_model = tuned if separate_base is None else separate_base
    results = {"base": [], "tuned": []}
    kls = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        batch = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
        length = batch["input_ids"].shape[1]
        for name in ("base", "tuned"):
            torch.manual_seed(seed + start)
            with base_context() if name == "base" else nullcontext():
                model = base_model if name == "base" else tuned
                sequences = model.generate(**batch, do_sample=True, top_k=None, max_new_tokens=max_new_tokens, min_new_tokens=1,
                                           pad_token_id=tokenizer.pad_token_id)
            response = sequences[:, length:]
            mask = core.response_mask(response, tokenizer.eos_token_id).float()
            texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]
            results[name] += texts
            if name == "tuned":
                full_mask = torch.cat([batch["attention_mask"], mask.long()], dim=1)
                logp = core.logprobs_from_logits(tuned(input_ids=sequences, attention_mask=full_mask).logits[:, length - 1:-1], response)
                with base_context():
                    logp_base = core.logprobs_from_logits(
                        base_model(input_ids=sequences, attention_mask=full_mask).logits[:, length - 1:-1], response)
                kls += ((logp - logp_base) * mask).sum(1).tolist()
    base_scores = np.asarray(reward(prompts, results["base"]), dtype=float)
    tuned_scores = np.asarray(reward(prompts, results["tuned"]), dtype=float)
    wins = (tuned_scores > base_scores).mean() + 0.5 * (tuned_scores == base_scores).mean()
    return {
        "policy": str(policy), "base_model": manifest["base_model"]["name"], "prompts": len(prompts),
        "max_new_tokens": max_new_tokens, "reward_base": float(base_scores.mean()), "reward_tuned": float(tuned_scores.mean()),
        "reward_gain": float(tuned_scores.mean() - base_scores.mean()), "win_rate": float(wins),
        "kl_to_base": float(np.mean(kls)),
        "samples": [{"prompt": p, "base": b, "base_reward": round(float(bs), 3), "tuned": t, "tuned_reward": round(float(ts), 3)}
                    for p, b, bs, t, ts in list(zip(prompts, results["base"], base_scores, results["tuned"], tuned_scores))[:10]],
    }


def write_report(result: dict, directory: Path) -> None:
    write_json(directory / "results.json", result)
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")
    lines = [f"# Policy evaluation: {result['prompts']} held-out prompts", "",
             "| reward (base) | reward (tuned) | gain | win rate | KL to base (nats/response) |", "|---|---|---|---|---|",
             f"| {result['reward_base']:.3f} | {result['reward_tuned']:.3f} | {result['reward_gain']:+.3f} | "
             f"{result['win_rate']:.3f} | {result['kl_to_base']:.2f} |", "",
             "| prompt | base | reward | tuned | reward |", "|---|---|---|---|---|"]
    lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {s['base_reward']} | {cell(s['tuned'])} | {s['tuned_reward']} |"
              for s in result["samples"]]
    with atomic_file(directory / "results.md") as handle:
        handle.write("\n".join(lines) + "\n")
