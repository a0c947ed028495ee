"""The LightningModules of every gradient-based job: the research code, nothing else.

``ClassificationModule`` wraps any ``nn.Module`` that maps a batch to class logits (an HF classification model,
a PEFT model, a head over features, or a reward model's (rejected, chosen) score pair, for which cross-entropy
is the Bradley-Terry loss), trains it with cross-entropy, and reports validation loss and accuracy.
``CausalLMModule`` wraps a causal LM (plain or PEFT) for supervised fine-tuning: next-token cross-entropy on
the tokens whose label is not ``-100`` (completions, assistant turns), validation loss weighted by tokens.
Both share the optimiser, schedule, per-batch seeding and checkpoints that hold only trainable weights
(frozen ones are reloaded from the base model).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from transformers import get_scheduler

from adaptlab.models.classifier import logits_of


class AdaptationModule(L.LightningModule):
    """What every job's module shares: AdamW without decay on biases and norms, a per-step schedule, seeding
    by (seed, epoch, batch), and checkpoints trimmed to the trainable weights."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        schedule: str,
        seed: int,
        head_lr: float | None = None,
        head_modules: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_ratio, self.schedule = lr, weight_decay, warmup_ratio, schedule
        self.seed = seed
        self.head_lr, self.head_modules = head_lr, set(head_modules)  # the new head's own rate (PEFT renames it:
        # classifier.modules_to_save.default.weight, so a name part equal to a head module marks it)
        self.strict_loading = False  # checkpoints carry trainable weights only

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Randomness (dropout) depends only on (seed, epoch, batch): a resumed run matches an uninterrupted one, whatever
        # else drew random numbers in between (data loader set-up draws one when it is created).
        torch.manual_seed(self.seed * 1_000_003 + self.current_epoch * 100_003 + batch_idx)

    def configure_optimizers(self):
        groups: dict[tuple[float, float], list] = {}
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                head = self.head_lr is not None and not self.head_modules.isdisjoint(name.split("."))
                decay = 0.0 if parameter.ndim < 2 or "norm" in name.lower() else self.weight_decay
                groups.setdefault((self.head_lr if head else self.lr, decay), []).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()], lr=self.lr,
        )
        total = self.trainer.estimated_stepping_batches
        warmup = math.ceil(self.warmup_ratio * total)  # rounded up, as transformers' Trainer does
        scheduler = get_scheduler(self.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def trainable_only(self, state_dict: dict) -> dict:
        """The entries of ``state_dict`` that training changes (frozen weights are reloaded from the base model)."""
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in state_dict.items() if k in trainable}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trainable_only(checkpoint["state_dict"])


class ClassificationModule(AdaptationModule):
    def forward(self, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
        return logits_of(self.model(**inputs)).float()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "weights" in batch:  # per-example weights (e.g. the pairs of one ranked prompt share one unit)
            losses = F.cross_entropy(self(batch), batch["labels"], reduction="none")
            loss = (losses * batch["weights"]).sum() / batch["weights"].sum()
        else:
            loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=len(batch["labels"]))  # a row per epoch
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        n = len(batch["labels"])
        self.log("val_loss", F.cross_entropy(logits, batch["labels"]), prog_bar=True, batch_size=n, sync_dist=True)
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val_acc", accuracy, prog_bar=True, batch_size=n, sync_dist=True)


class PairwiseRewardModule(ClassificationModule):
    """A reward model on (rejected, chosen) score pairs: the Bradley-Terry loss, plus TRL's
    ``center_rewards_coefficient`` term ``c * mean((r_chosen + r_rejected)^2)`` when ``center_rewards`` is set, which
    keeps rewards centred on zero (only their differences are learned otherwise, and PPO sees their offset)."""

    def __init__(self, model: nn.Module, *, center_rewards: float | None = None, **options) -> None:
        super().__init__(model, **options)
        self.center_rewards = center_rewards

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not self.center_rewards:
            return super().training_step(batch, batch_idx)
        scores = self(batch)
        losses = F.cross_entropy(scores, batch["labels"], reduction="none") + self.center_rewards * scores.sum(-1) ** 2
        weights = batch.get("weights", torch.ones_like(losses))
        loss = (losses * weights).sum() / weights.sum()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=len(batch["labels"]))
        return loss


class CausalLMModule(AdaptationModule):
    def token_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over the labelled tokens, and how many there were."""
        return causal_lm_loss(self.model, batch, reduction="mean")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, tokens = self.token_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=tokens)
        self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=tokens)  # token-weighted epoch mean
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, tokens = self.token_loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=tokens, sync_dist=True)


def causal_lm_loss(model: nn.Module, batch: dict, reduction: str = "mean") -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy on the tokens whose label is not -100 (``reduction`` mean or sum), and their
    count. The LM head runs only at those positions where the model allows it (``decoder_and_head``)."""
    from adaptlab.models.causal import decoder_and_head

    # no KV cache: it is not needed for a loss, and with one transformers ignores packed position ids
    inputs = {**{k: v for k, v in batch.items() if k != "labels"}, "use_cache": False}
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    parts = decoder_and_head(model)
    if parts is None:
        logits = model(**inputs).logits[:, -batch["labels"].shape[1]:][:, :-1][keep]  # prompt tuning prepends tokens
    else:
        decoder, head = parts
        logits = head(decoder(**inputs).last_hidden_state[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), targets[keep], reduction=reduction)
    return loss, int(keep.sum())
