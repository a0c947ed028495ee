"""The torch side of retriever adaptation (``adaptlab.rag.retriever``): the dual encoder whose in-batch similarity
matrix is a classification's logits, and the pair dataset and collator the shared engine batches."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from adaptlab.models.loading import pad_batch


class DualEncoder(nn.Module):
    """One transformer for questions and passages: mean-pooled, unit-length embeddings. ``forward`` returns the
    B x B logits ``scale * cos(question_i, passage_j)``; the label of row i is i. A column holding row i's own
    passage again (another question about the same paragraph) is masked out of row i."""

    def __init__(self, backbone: nn.Module, scale: float) -> None:
        super().__init__()
        self.backbone, self.scale = backbone, scale
        self.dimension = int(backbone.config.hidden_size)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, query_ids, query_mask, passage_ids, passage_mask, passage_keys) -> torch.Tensor:
        queries, passages = self.encode(query_ids, query_mask), self.encode(passage_ids, passage_mask)
        logits = self.scale * queries @ passages.T
        repeated = (passage_keys[:, None] == passage_keys[None, :]) & ~torch.eye(len(passage_keys), dtype=torch.bool,
                                                                                  device=logits.device)
        return logits.masked_fill(repeated, torch.finfo(logits.dtype).min)


class PairTrainingSet(Dataset):
    """(question, passage) pairs tokenized once; a passage's key (an integer) marks its repeats in a batch."""

    def __init__(self, pairs, tokenizer, query_length: int, passage_length: int) -> None:
        encode = lambda texts, limit: tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        self.queries = encode([p.question for p in pairs], query_length)
        self.passages = encode([p.passage for p in pairs], passage_length)
        numbers: dict[str, int] = {}
        self.keys = [numbers.setdefault(p.key, len(numbers)) for p in pairs]

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int) -> dict:
        return {"query": self.queries[i], "passage": self.passages[i], "key": self.keys[i]}

    def lengths(self) -> list[int]:
        return [len(q) + len(p) for q, p in zip(self.queries, self.passages)]


class PairBatchCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        query_ids, query_mask = pad_batch([it["query"] for it in items], self.pad_id)
        passage_ids, passage_mask = pad_batch([it["passage"] for it in items], self.pad_id)
        return {"query_ids": query_ids, "query_mask": query_mask, "passage_ids": passage_ids, "passage_mask": passage_mask,
                "passage_keys": torch.tensor([it["key"] for it in items]), "labels": torch.arange(len(items))}
