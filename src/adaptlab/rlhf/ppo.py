"""PPO for a causal LM against a reward, with a KL leash to the reference policy (Ziegler et al. 2019).

One step: sample responses for a batch of prompts (batched, KV cache), score them, compute per-token
rewards (score on the last token, ``-kl_coef * (log pi - log pi_ref)`` on every token), values and GAE
advantages (whitened), then several epochs of clipped policy and value updates over minibatches. With LoRA
(the default) the reference policy is the same network with the adapter disabled: no second copy.
The arithmetic lives in ``ppo_core`` and is unit-tested there; this module is the loop around it.

Precision: PPO runs in fp32 only, rollouts (generation), scoring passes and updates alike; it has no
``--precision`` option.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job, training_log_path
from adaptlab.results import JobResult
from adaptlab.params import recorded_params
from adaptlab.rlhf import ppo_core as core
from adaptlab.rlhf.ppo_config import PPOConfig
from adaptlab.rlhf.prompts import read_prompts, review_prompts  # noqa: F401  (also importable from here)
from adaptlab.rlhf.rewards import RewardFn, checked_reward
from adaptlab.runtime import Runtime
from adaptlab.training import tracking

TRAIN_PROMPTS = "train_prompts.json"  # in a policy artifact: the prompts PPO trained on
NEGATIVE_KL = -1.0  # a step's mean KL below this is warned about (as TRL does): sampled tokens the policy finds unlikely


class PolicyWithValue(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size if hasattr(lm, "config") else lm.get_base_model().config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                      logits_to_keep=logits_to_keep)
        return out.logits, self.value_head(out.hidden_states[-1].float()).squeeze(-1)


class PPOTrainer:
    def __init__(self, model: str, reward: RewardFn, config: PPOConfig, device: str | None = None) -> None:
        from adaptlab.models.causal import load_causal_lm

        config.check()
        self.config, self.reward = config, checked_reward(reward)  # user code: one finite number per response
        self.device = Runtime(device).torch_device
        torch.manual_seed(config.seed)
        lm, self.tokenizer, self.ref_info = load_causal_lm(model, str(self.device))
        self.tokenizer.padding_side = "left"
        from adaptlab.adapt import apply

        if config.method == "lora":
            lm = apply(lm, "lora", config, "ppo", model_name=f"model '{model}'")
            self.reference = None  # the same network with the adapter disabled
        else:
            import copy

            self.reference = copy.deepcopy(lm).eval().requires_grad_(False)
            lm = apply(lm, "full", config, "ppo")
        self.policy = PolicyWithValue(lm).to(self.device)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr)
        self.kl = (core.AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
                   if config.target_kl else core.FixedKLController(config.init_kl_coef))
        self.step_count = 0
        self.score_stats = core.RunningMoments()

    # -- pieces -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(sequences, attention mask, prompt length): left-padded prompts followed by sampled responses."""
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        lm = self.policy.lm
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": self.config.temperature,
                                                          "top_k": self.config.top_k or None, "top_p": 1.0}
        sequences = lm.generate(**batch, max_new_tokens=self.config.max_new_tokens, min_new_tokens=1, use_cache=True,
                                pad_token_id=self.tokenizer.pad_token_id, **sampling)
        prompt_length = batch["input_ids"].shape[1]
        response = sequences[:, prompt_length:]
        mask = torch.cat([batch["attention_mask"], core.response_mask(response, self.tokenizer.eos_token_id)], dim=1)
        return sequences, mask, prompt_length

    def _forward(self, sequences, mask, prompt_length, reference: bool = False):
        """Log-probabilities of the response tokens, values, and entropies; on the reference when asked.

        Only the positions that predict response tokens go through the vocabulary projection (``logits_to_keep``):
        the (batch, length, vocabulary) logits are the largest tensors here. The entropy is only logged, so it keeps
        no graph (which would hold two more such tensors through the backward pass)."""
        keep = sequences.shape[1] - prompt_length + 1
        if reference:
            context = self.policy.lm.disable_adapter() if self.reference is None else nullcontext()
            with context:
                lm = self.policy.lm if self.reference is None else self.reference
                logits = lm(input_ids=sequences, attention_mask=mask, logits_to_keep=keep).logits
            values = None
        else:
            logits, values = self.policy(sequences, mask, logits_to_keep=keep)
        logits = logits[:, :-1]
        tokens = sequences[:, prompt_length:]
        logprobs = core.logprobs_from_logits(logits, tokens)
        with torch.no_grad():
            entropy = core.entropy_from_logits(logits)
        return logprobs, (None if values is None else values[:, prompt_length - 1:-1]), entropy

    def decode(self, sequences, mask, prompt_length) -> list[str]:
        return [self.tokenizer.decode(seq[prompt_length:][m[prompt_length:].bool()], skip_special_tokens=True)
                for seq, m in zip(sequences, mask)]

    # -- one PPO step -------------------------------------------------------------------------------------
    def step(self, prompts: Sequence[str]) -> dict:
        config, started = self.config, time.perf_counter()
        self.policy.eval()
        sequences, mask, prompt_length = self.generate(prompts)
        generated = time.perf_counter()
        responses = self.decode(sequences, mask, prompt_length)
        scores = torch.tensor(self.reward(prompts, responses), dtype=torch.float32, device=self.device)
        raw_scores = scores.clone()
        unfinished = core.missing_eos(sequences[:, prompt_length:], self.tokenizer.eos_token_id)
        if config.missing_eos_penalty:
            scores = scores - config.missing_eos_penalty * unfinished.float()
        if config.score_norm:
            self.score_stats.update(scores)
            scores = (scores - self.score_stats.mean) / max(self.score_stats.std, 1e-6)
        if config.score_clip:
            scores = scores.clamp(-config.score_clip, config.score_clip)
        scored = time.perf_counter()
        response_mask = mask[:, prompt_length:].float()
        with torch.no_grad():
            old_logprobs, old_values, _ = self._forward(sequences, mask, prompt_length)
            ref_logprobs, _, _ = self._forward(sequences, mask, prompt_length, reference=True)
            rewards, kl = core.token_rewards(scores, old_logprobs, ref_logprobs, response_mask, self.kl.value)
            advantages, returns = core.gae(rewards, old_values, response_mask, config.gamma, config.lam)
            advantages = core.whiten(advantages, response_mask)
        self.policy.train()
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [], "entropy": []}
        skipped = 0
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.step_count)
        for _ in range(config.ppo_epochs):
            for index in torch.randperm(len(prompts), generator=generator).split(config.mini_batch_size):
                index = index.to(self.device)
                logprobs, values, entropy = self._forward(sequences[index], mask[index], prompt_length)
                m = response_mask[index]
                p_loss, p_stats = core.policy_loss(logprobs, old_logprobs[index], advantages[index], m, config.cliprange)
                v_loss, _ = core.value_loss(values, old_values[index], returns[index], m, config.cliprange_value)
                if config.ratio_threshold and p_stats["ratio"] > config.ratio_threshold:
                    skipped += 1  # a runaway minibatch: its update would be a loss spike, so none is made
                    continue
                loss = p_loss + config.vf_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], config.max_grad_norm)
                self.optimizer.step()
                for key, value in (("policy_loss", p_loss.item()), ("value_loss", v_loss.item()),
                                   ("clipfrac", p_stats["clipfrac"]), ("approx_kl", p_stats["approx_kl"]),
                                   ("entropy", core.masked_mean(entropy, m).item())):
                    stats[key].append(value)
        mean_kl = float(kl.sum(1).mean())
        if mean_kl < NEGATIVE_KL:
            from adaptlab.progress import stderr

            stderr.print(f"[yellow]PPO step {self.step_count + 1}: the KL to the reference is negative ({mean_kl:.2f}), often a "
                         "precursor of failed training: the sampling settings differ from the policy's distribution "
                         "(temperature, top-k) or the learning rate is too high[/]")
        kl_coef = self.kl.value
        self.kl.update(mean_kl, config.batch_size)
        self.step_count += 1
        optimised = time.perf_counter()
        return {"step": self.step_count, "reward_mean": float(raw_scores.mean()), "reward_std": float(raw_scores.std()),
                "score_mean": float(scores.mean()),  # what PPO optimises: after the EOS penalty, normalisation, clipping
                "kl": mean_kl, "kl_coef": kl_coef, **{k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()},
                "skipped_minibatches": skipped, "missing_eos": float(unfinished.float().mean()),
                "response_tokens": float(response_mask.sum(1).mean()),
                "seconds_generation": generated - started, "seconds_scoring": scored - generated,
                "seconds_optimisation": optimised - scored, "samples": responses[:2]}

    def train(self, prompts: Sequence[str], workdir: Path | None = None, progress: bool = True,
              checkpoint_every: int = 5) -> list[dict]:
        """Run the remaining steps; with ``workdir``, log every step (``training_log_path``) and checkpoint every
        ``checkpoint_every`` steps (``resume`` continues from there, with the same prompt batches)."""
        from adaptlab.progress import progress_bar

        history = []
        events = None
        if workdir is not None and self.config.logger == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            events = SummaryWriter(str(training_log_path(workdir).parent))  # beside the CSV; the artifact keeps both
        with progress_bar("PPO steps", self.config.steps - self.step_count, progress) as advance:
            while self.step_count < self.config.steps:
                rng = np.random.default_rng([self.config.seed, self.step_count])  # batch depends on the step only
                batch = [prompts[i] for i in rng.choice(len(prompts), self.config.batch_size, replace=len(prompts) < self.config.batch_size)]
                history.append(self.step(batch))
                if workdir is not None:
                    _append_csv(training_log_path(workdir), {k: v for k, v in history[-1].items() if k != "samples"})
                    if tracking.current() is not None:  # --logger mlflow|wandb: the job's tracking run
                        tracking.current().log_metrics({k: v for k, v in history[-1].items() if k != "step"}, self.step_count)
                    for key, value in history[-1].items() if events is not None else ():
                        if key not in ("step", "samples"):
                            events.add_scalar(f"ppo/{key}", value, self.step_count)
                    with (workdir / "samples.jsonl").open("a") as handle:  # what the policy writes, step by step
                        handle.write(json.dumps({"step": self.step_count, "prompts": batch[:2], "responses": history[-1]["samples"]}) + "\n")
                    if self.step_count % checkpoint_every == 0 or self.step_count == self.config.steps:
                        self.save_checkpoint(workdir / "checkpoint.pt")
                advance(1)
        if events is not None:
            events.close()
        return history

    # -- checkpoints and artifacts ------------------------------------------------------------------------
    def _trainable_state(self) -> dict:
        return {n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad}

    def save_checkpoint(self, path: Path) -> None:
        from adaptlab._io import atomic_file

        state = {"policy": self._trainable_state(), "optimizer": self.optimizer.state_dict(), "kl_coef": self.kl.value,
                 "step": self.step_count, "torch_rng": torch.get_rng_state(), "score_stats": dataclasses.asdict(self.score_stats)}
        with atomic_file(path, "wb") as handle:
            torch.save(state, handle)

    def resume(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written above
        self.policy.load_state_dict(state["policy"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl.value, self.step_count = state["kl_coef"], state["step"]
        self.score_stats = core.RunningMoments(**state["score_stats"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, directory: Path, base: dict) -> None:
        """The policy as every generator is saved (``save_generator``: a PEFT adapter or the model's safetensors,
        tokenizer inside); the value head beside it (only needed to continue training)."""
        from safetensors.torch import save_file

        from adaptlab.models.causal import save_generator

        save_generator(self.policy.lm, self.tokenizer, directory, base)
        save_file({k: v.contiguous() for k, v in self.policy.value_head.state_dict().items()}, directory / "value_head.safetensors")


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


class PPOJob:
    """PPO as a job for the shared runner (``adaptlab.jobs.run_job``): the data are the training prompts."""

    name = "ppo-policy"

    def __init__(self, model: str, reward: RewardFn, config: PPOConfig, reward_spec: str, device: str | None,
                 resume: bool, progress: bool) -> None:
        config.check()
        self.model, self.reward, self.config, self.reward_spec = model, reward, config, reward_spec
        self.runtime = Runtime(device, "fp32", training=True)  # fp32 only: PPO has no --precision (module docstring)
        self.resume, self.progress = resume, progress

    def fit(self, prompts: list[str], workdir: Path) -> None:
        self.trainer_ = PPOTrainer(self.model, self.reward, self.config, self.runtime.device)
        if self.resume and (workdir / "checkpoint.pt").exists():
            self.trainer_.resume(workdir / "checkpoint.pt")
        self.history_ = self.trainer_.train(prompts, workdir, self.progress)
        self.workdir_, self.prompts_ = workdir, prompts

    def evaluate(self, prompts: list[str]) -> dict:
        """What the training log says: the reward at the start and the end, the last KL (``rlhf eval`` compares
        the policy with its base on held-out prompts)."""
        log = training_log_path(self.workdir_)
        rows = list(csv.DictReader(log.open())) if log.exists() else []
        rewards = [float(row["reward_mean"]) for row in rows]
        return {"steps": self.trainer_.step_count, "reward_first_steps": float(np.mean(rewards[:3])) if rewards else None,
                "reward_last_steps": float(np.mean(rewards[-3:])) if rewards else None,
                "kl_last": float(rows[-1]["kl"]) if rows else None}

    def inference_rate(self, prompts: list[str]) -> None:
        return None

    def cost(self) -> dict:
        from adaptlab.models.classifier import count_parameters

        trainable, total = count_parameters(self.trainer_.policy)
        return {"trainable_params": trainable, "total_params": total}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.trainer_.ref_info)

    def get_params(self) -> dict:
        return {**recorded_params(self.config), "reward": self.reward_spec}

    def training_report(self) -> dict:
        return {"steps": self.trainer_.step_count}

    def details(self) -> dict:
        return {"samples": self.history_[-1]["samples"] if self.history_ else []}

    def save(self, directory: Path) -> None:
        import shutil

        self.trainer_.save(directory, self.base_model())
        if (self.workdir_ / "samples.jsonl").exists():
            shutil.copy(self.workdir_ / "samples.jsonl", directory / "samples.jsonl")
        # the prompts trained on, so `rlhf eval` can hold out different ones
        (directory / TRAIN_PROMPTS).write_text(json.dumps(self.prompts_, ensure_ascii=False), encoding="utf-8")


def train_ppo(prompts: Sequence[str], output: str | Path, *legacy: Any, reward: RewardFn | str | None = None,
              model: str = "smollm2-135m", config: PPOConfig | None = None, reward_label: str | None = None,
              reward_spec: str | None = None, resume: bool = False, device: str | None = None, progress: bool = True,
              overwrite: bool = False, **params: Any) -> JobResult:
    """PPO on ``prompts`` against ``reward``; writes the policy artifact (adapter or weights, value head, log, training
    prompts, manifest). ``reward``: a function ``(prompts, responses) -> scores``, or what ``--reward`` takes (a
    reward-model artifact, a classifier artifact with ``reward_label``, ``module:function``); ``params``: ``PPOConfig``'s
    fields (or a ready ``config``). The form of earlier releases, ``train_ppo(model, prompts, reward, config, output)``,
    still works for one release, with a deprecation warning."""
    if isinstance(prompts, str) and not isinstance(output, (str, Path)) and len(legacy) == 3:
        warnings.warn("train_ppo(model, prompts, reward, config, output) is deprecated: use train_ppo(prompts, output, "
                      "reward=..., model=..., config=...)", DeprecationWarning, stacklevel=2)
        model, prompts, (reward, config, output) = prompts, output, legacy
    elif legacy:
        raise AdaptlabError("train_ppo takes (prompts, output, reward=..., model=..., **params)")
    if config is None:
        config = PPOConfig(**params)
    elif params:
        raise AdaptlabError(f"train_ppo: give PPO settings as config= or as keywords, not both ({', '.join(params)})")
    if reward is None:
        raise AdaptlabError("train_ppo needs reward=: a function (prompts, responses) -> scores, or a reward artifact")
    if isinstance(reward, str):
        from adaptlab.rlhf.rewards import load_reward

        reward_spec, reward = reward, load_reward(reward, reward_label, device)
    prompts = list(prompts)
    job = PPOJob(model, reward, config, reward_spec or "function", device, resume, progress)
    described = {"prompts": len(prompts), "fingerprint": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]}
    return run_job(job, prompts, output, seed=config.seed, labels=[], data_description=described,
                   train_examples=config.steps * config.batch_size, resume=resume, overwrite=overwrite)
