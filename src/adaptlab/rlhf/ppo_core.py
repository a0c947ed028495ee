"""The arithmetic of PPO for language models, as pure functions of tensors (each unit-tested by hand).

Conventions: tensors are (batch, response_tokens); ``mask`` is 1 on real response tokens and 0 on padding
after the end of a response. A response's reward is the reward model's score on its last real token minus
``kl_coef * (log pi(token) - log pi_ref(token))`` on every token (Ziegler et al. 2019; Stiennon et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked entries."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    return ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to unit variance (and zero mean unless ``shift_mean`` is False) over the masked entries."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return (out if shift_mean else out + mean) * mask


class AdaptiveKLController:
    """KL coefficient steered so the measured KL to the reference tracks ``target`` (Ziegler et al.):
    ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (the KL penalty everywhere, the score added on each response's last token) and the
    per-token KL estimate ``log pi - log pi_ref``."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation backwards over the response; values after the end count as 0.
    Returns (advantages, returns = advantages + values)."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * (mask[:, t + 1] if t + 1 < rewards.shape[1] else 0)
        running = running * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float = 0.2) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate objective (negated, to minimise), with the clip fraction and approximate KL
    (``0.5 * mean(log ratio ^ 2)``) between the current and the rollout policy."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
             "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask).item(), "ratio": masked_mean(ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float = 0.2) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: the worse of the new prediction and one clipped to ``old +- cliprange_value``."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    return loss, {"value_clipfrac": masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask).item()}


def response_mask(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 on each generated token up to and including the first EOS, 0 after it (the padding ``generate`` adds)."""
    ended = (response == eos_token_id).int().cumsum(1)
    return ((ended == 0) | ((ended == 1) & (response == eos_token_id))).long()


def missing_eos(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """True for each response that never produced EOS (it was cut at the token limit)."""
    return ~(response == eos_token_id).any(1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) at each position: ``logits`` (B, T, V) predict ``tokens`` (B, T)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


@dataclass
class RunningMoments:
    """Mean and standard deviation of every value seen so far (Chan et al.'s parallel update)."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 1.0

    def update(self, values: torch.Tensor) -> None:
        n, batch_mean = float(values.numel()), float(values.float().mean())
        batch_m2 = float(((values.float() - batch_mean) ** 2).sum())
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta ** 2 * self.count * n / total
        self.count = total
