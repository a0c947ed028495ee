"""Strategy ``head``: the backbone stays frozen and a new linear head learns the task on pooled features.

The backbone runs once and the head trains on cached features; ``cache_features=False`` runs the naive loop
(backbone forward every step) and gives the same result, which is how the cache's speed-up is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.adapt import default_lr
from adaptlab.embeddings import POOLINGS, Embedder
from adaptlab.methods.gradient import GradientStrategy
from adaptlab.models.loading import count_checkpoint_parameters, model_kind, pad_id
from adaptlab.params import param


@dataclass(kw_only=True, eq=False)
class HeadOnly(GradientStrategy):
    name = "head"
    description = "Frozen backbone, new linear head trained on cached features."

    pooling: str | None = param(None, "mean, cls or last (default: mean for encoders, last for decoders).", choices=POOLINGS)
    dropout: float = param(0.1, "Dropout before the head.", minimum=0, below=1)
    cache_features: bool = param(True, "Run the backbone once and train on cached features (--no-cache-features: naive loop).")
    cache: bool = param(True, "Use the on-disk embedding cache.", runtime=True, cli=False)
    lr: float = param(default_lr("classifier", "head"), "Peak learning rate.", above=0, maximum=10)
    epochs: int = param(10, "Training epochs.", minimum=1, maximum=10_000)

    def _embedder(self) -> Embedder:
        # Features are computed in the precision training runs in, so cached and naive loops agree.
        self.pooling_ = self.pooling or ("last" if model_kind(self.ref) == "decoder" else "mean")
        return Embedder(self.model, self.pooling_, max_length=self.max_length, precision=self.runtime.resolved_precision(),
                        device=self.device, progress=self.progress, cache=self.cache)

    def fit(self, splits, workdir: Path) -> "HeadOnly":
        import torch

        from adaptlab.models.heads import FeatureHead, FrozenBackboneHead
        from adaptlab.training.data import FeatureDataset, PadCollator, TokenizedDataset

        self.label_names = splits.label_names
        self.embedder_ = self._embedder()
        torch.manual_seed(self.seed)  # the head's initial weights: identical for cached and naive runs
        self.head_ = FeatureHead(self._dim(), len(self.label_names), self.dropout)
        tokenizer = self.embedder_.tokenizer
        ids = lambda texts: tokenizer(texts, truncation=True, max_length=self.embedder_.max_length)["input_ids"]
        train_ids, val_ids = ids(splits.train.texts), ids(splits.val.texts)
        if self.cache_features or self.head_init == "probe":
            features = {name: self.embedder_.embed(getattr(splits, name).texts) for name in ("train", "val")}
        if self.head_init == "probe":
            self.start_from_probe(self.head_.linear, features["train"], features["val"], splits)
        if self.cache_features:
            lengths = lambda token_ids: [len(x) for x in token_ids]  # same batches as the naive loop
            train = FeatureDataset(features["train"], splits.train.labels, lengths(train_ids))
            val = FeatureDataset(features["val"], splits.val.labels, lengths(val_ids))
            module: torch.nn.Module = self.head_
            collate = PadCollator(0)
        else:
            train = TokenizedDataset(train_ids, splits.train.labels)
            val = TokenizedDataset(val_ids, splits.val.labels)
            module = FrozenBackboneHead(self.embedder_.model, self.pooling_, self.head_)
            collate = PadCollator(pad_id(tokenizer))
        self.train_module(module, train, val, collate, workdir)
        self.head_.eval()
        return self

    def _dim(self) -> int:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.ref.path).hidden_size)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        features = torch.as_tensor(self.embedder_.embed(list(texts)))
        with torch.inference_mode():
            return torch.softmax(self.head_.eval()(features).float(), dim=-1).numpy()

    def uncached(self):
        return self.embedder_.fresh()

    def cost(self) -> dict:
        head = sum(p.numel() for p in self.head_.parameters())
        backbone = count_checkpoint_parameters(self.ref.path) if self.ref.local else None
        return {"trainable_params": head, "total_params": None if backbone is None else backbone + head}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.head_.state_dict(), directory / "head.safetensors")

    def details(self) -> dict:
        return {"embedding": self.embedder_.settings()}

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "HeadOnly":
        from safetensors.torch import load_file

        from adaptlab.models.heads import FeatureHead

        strategy = cls.rebuild(manifest, runtime)
        strategy.embedder_ = strategy._embedder()
        strategy.head_ = FeatureHead(strategy._dim(), len(strategy.label_names), strategy.dropout)
        strategy.head_.load_state_dict(load_file(directory / "head.safetensors"))
        strategy.head_.eval()
        return strategy
