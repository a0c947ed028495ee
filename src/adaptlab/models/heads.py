"""The networks the ``head`` strategy trains: a linear head over pooled features, and the naive loop that runs
the frozen backbone every step (what the feature cache replaces, kept to measure the cache's speed-up)."""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.models.loading import pool


class FrozenBackboneHead(nn.Module):
    """Backbone (frozen, always in eval mode) -> pooling -> head: the naive loop the cache replaces."""

    def __init__(self, backbone: nn.Module, pooling: str, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.pooling, self.head = backbone.requires_grad_(False), pooling, head

    def train(self, mode: bool = True) -> "FrozenBackboneHead":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            features = pool(hidden.float(), attention_mask, self.pooling)
        return self.head(features)


class FeatureHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout, self.linear = nn.Dropout(dropout), nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))
