"""The LightningModule shared by every gradient-based strategy: the research code, nothing else.

It wraps any ``nn.Module`` that maps a batch to class logits (an HF classification model, a PEFT model,
a head over features, or a reward model's (rejected, chosen) score pair, for which cross-entropy is the
Bradley-Terry loss), trains it with cross-entropy, and reports validation loss and accuracy.
Checkpoints hold only trainable weights: frozen ones are reloaded from the base model.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from transformers import get_scheduler

from adaptlab.models.classifier import logits_of

SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


class ClassificationModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        schedule: str,
        seed: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_ratio, self.schedule = lr, weight_decay, warmup_ratio, schedule
        self.seed = seed
        self.strict_loading = False  # checkpoints carry trainable weights only

    def forward(self, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
        return logits_of(self.model(**inputs)).float()

    def on_train_epoch_start(self) -> None:
        # Randomness (dropout) depends only on (seed, epoch): a resumed run matches an uninterrupted one.
        torch.manual_seed(self.seed * 100_003 + self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "weights" in batch:  # per-example weights (e.g. the pairs of one ranked prompt share one unit)
            losses = F.cross_entropy(self(batch), batch["labels"], reduction="none")
            loss = (losses * batch["weights"]).sum() / batch["weights"].sum()
        else:
            loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        n = len(batch["labels"])
        self.log("val_loss", F.cross_entropy(logits, batch["labels"]), prog_bar=True, batch_size=n, sync_dist=True)
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val_acc", accuracy, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        total = self.trainer.estimated_stepping_batches
        scheduler = get_scheduler(
            self.schedule, optimizer, num_warmup_steps=int(self.warmup_ratio * total), num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
