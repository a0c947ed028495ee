"""Compare a tuned policy with its base on held-out prompts: reward, win rate, KL to the base, samples; or several
policies (SFT-only, DPO, PPO, any generator) with one reference.

Every policy samples (same seed, same settings) one response per prompt; the reward scores them all; the KL is
estimated on each policy's own samples as the mean over prompts of sum_t log pi(y_t) - log pi_ref(y_t).
Sampling and the log-probabilities run in fp32 whatever precision a policy was trained in (``rlhf eval`` has no
``--precision``): the comparison is between policies, not between precisions.
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
    """The first ``n`` of ``candidates`` the policy was not trained on (every ``rlhf`` policy records its prompts)."""
    from adaptlab.rlhf.ppo import TRAIN_PROMPTS

    recorded = Path(policy) / TRAIN_PROMPTS
    seen = set(json.loads(recorded.read_text(encoding="utf-8"))) if recorded.exists() else set()
    kept = [p for p in candidates if p not in seen][:n]
    if not kept:
        raise AdaptlabError(f"every evaluation prompt was a training prompt of '{policy}'; give other --prompts")
    return kept


def _load_policy(path: Path, device):
    from adaptlab.models.causal import load_causal_lm

    from adaptlab.families import generator_strategies, is_generator

    manifest = read_manifest(path)
    if not is_generator(manifest["strategy"]) or manifest["strategy"] == "sft":
        raise AdaptlabError(f"'{path}' is a '{manifest['strategy']}' artifact, not a policy from `adaptlab rlhf` "
                            f"({', '.join(s for s in generator_strategies() if s != 'sft')}); compare an sft model with "
                            "--reference")
    base, tokenizer, _ = load_causal_lm(manifest["base_model"]["name"], str(device))
    if (path / "adapter").exists():
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(base, path / "adapter").eval()
        return tuned, None, tokenizer, manifest  # the base is the same network with the adapter disabled
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path / "model").to(device).eval(), base.eval(), tokenizer, manifest


def _sample(model, tokenizer, batch, length: int, seed: int, max_new_tokens: int):
    """One sampled response per prompt of ``batch`` (left-padded): (sequences, response, mask, texts)."""
    torch.manual_seed(seed)
    sequences = model.generate(**batch, do_sample=True, top_k=None, max_new_tokens=max_new_tokens, min_new_tokens=1,
                               pad_token_id=tokenizer.pad_token_id)
    response = sequences[:, length:]
    mask = core.response_mask(response, tokenizer.eos_token_id).float()
    return sequences, response, mask, [tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]


def _response_logprob(model, sequences, batch, response, mask, length: int) -> torch.Tensor:
    full_mask = torch.cat([batch["attention_mask"], mask.long()], dim=1)
    return (core.logprobs_from_logits(model(input_ids=sequences, attention_mask=full_mask).logits[:, length - 1:-1], response)
            * mask).sum(1)


def default_reference(policies: Sequence[str | Path]) -> str:
    """The listed artifact the others started from (``rlhf eval runs/ppo runs/dpo runs/sft``: the SFT model, which
    PPO and DPO record as ``started_from``), else the first policy's base model (or the name itself)."""
    from adaptlab.models.loading import ModelRef

    paths = [Path(p) for p in policies]
    manifests = {p: read_manifest(p, verify=False) for p in paths if (p / "manifest.json").exists()}
    fingerprints = {p: ModelRef(str(p), str(p.resolve()), local=True).fingerprint() for p in manifests}
    for manifest in manifests.values():
        started = manifest["base_model"].get("started_from", {}).get("fingerprint")
        match = next((str(p) for p, fingerprint in fingerprints.items() if started and fingerprint == started), None)
        if match:
            return match
    return manifests[paths[0]]["base_model"]["name"] if paths[0] in manifests else str(policies[0])


@torch.inference_mode()
def compare_policies(policies: Sequence[str | Path], prompts: Sequence[str], reward, *, reference: str | None = None,
                     max_new_tokens: int = 24, batch_size: int = 8, seed: int = 0, device: str | None = None) -> dict:
    """Each policy (a model name, or an sft / dpo-policy / ppo-policy artifact) against one ``reference`` (default:
    see ``default_reference``, e.g. the SFT model PPO and DPO started from): mean reward, win rate over the
    reference, KL to the reference on the policy's own samples; the same prompts and sampling seed for all."""
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.rlhf.rewards import checked_reward
    from adaptlab.runtime import Runtime

    reward = checked_reward(reward)  # before the models load
    device = Runtime(device).torch_device
    reference = reference or default_reference(policies)
    reference_model, tokenizer, _ = load_causal_lm(reference, str(device))
    tokenizer.padding_side = "left"
    batches = [tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(device)
               for start in range(0, len(prompts), batch_size)]
    texts = {"reference": [text for i, batch in enumerate(batches) for text in
                           _sample(reference_model, tokenizer, batch, batch["input_ids"].shape[1], seed + i, max_new_tokens)[3]]}
    kls: dict[str, list[float]] = {}
    for policy in map(str, policies):
        model, own_tokenizer, _ = load_causal_lm(policy, str(device))
        if len(own_tokenizer) != len(tokenizer):
            raise AdaptlabError(f"policy '{policy}' has a vocabulary of {len(own_tokenizer)} tokens, the reference "
                                f"'{reference}' {len(tokenizer)}: the KL between them is undefined; give --reference")
        texts[policy], kls[policy] = [], []
        for i, batch in enumerate(batches):
            length = batch["input_ids"].shape[1]
            sequences, response, mask, sampled = _sample(model, tokenizer, batch, length, seed + i, max_new_tokens)
            texts[policy] += sampled
            kls[policy] += (_response_logprob(model, sequences, batch, response, mask, length)
                            - _response_logprob(reference_model, sequences, batch, response, mask, length)).tolist()
        del model
    scores = {name: np.asarray(reward(list(prompts), sampled), dtype=float) for name, sampled in texts.items()}
    rows = [{"policy": policy, "reward": float(scores[policy].mean()),
             "reward_gain": float(scores[policy].mean() - scores["reference"].mean()),
             "win_rate": float((scores[policy] > scores["reference"]).mean() + 0.5 * (scores[policy] == scores["reference"]).mean()),
             "kl_to_reference": float(np.mean(kls[policy]))} for policy in kls]
    samples = [{"prompt": prompt, **{name: {"text": texts[name][i], "reward": round(float(scores[name][i]), 3)} for name in texts}}
               for i, prompt in enumerate(prompts[:10])]
    return {"reference": reference, "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "reward_reference": float(scores["reference"].mean()), "policies": rows, "samples": samples,
            "rewards_per_prompt": {name: [round(float(x), 4) for x in values] for name, values in scores.items()}}


def write_comparison(result: dict, directory: Path) -> None:
    write_json(directory / "results.json", result)
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")
    names = ["reference", *(row["policy"] for row in result["policies"])]
    lines = [f"# Policies on {result['prompts']} held-out prompts (reference: {cell(result['reference'])})", "",
             "| policy | mean reward | gain over the reference | win rate over it | KL to it (nats/response) |", "|---|---|---|---|---|",
             f"| reference | {result['reward_reference']:.3f} | | | |"]
    lines += [f"| {cell(r['policy'])} | {r['reward']:.3f} | {r['reward_gain']:+.3f} | {r['win_rate']:.3f} | {r['kl_to_reference']:.2f} |"
              for r in result["policies"]]
    lines += ["", "| prompt | " + " | ".join(cell(n) for n in names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += ["| " + " | ".join([cell(s["prompt"]), *(f"{cell(s[n]['text'])} ({s[n]['reward']})" for n in names)]) + " |"
              for s in result["samples"]]
    with atomic_file(directory / "results.md") as handle:
        handle.write("\n".join(lines) + "\n")


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
            with base_context() if name == "base" else nullcontext():
                model = base_model if name == "base" else tuned
                sequences, response, mask, texts = _sample(model, tokenizer, batch, length, seed + start, max_new_tokens)
            results[name] += texts
            if name == "tuned":
                logp = _response_logprob(tuned, sequences, batch, response, mask, length)
                with base_context():
                    kls += (logp - _response_logprob(base_model, sequences, batch, response, mask, length)).tolist()
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
