"""Datasets, batching and the LightningDataModule for every gradient-based job (classifiers and causal LMs).

Batches are grouped by length (as ``group_by_length`` in HF Trainer): shuffled indices are cut into
mega-batches, each sorted by length and split into batches whose order is shuffled again. Padding then
costs little, which is most of the speed on a CPU. The order depends only on (seed, epoch), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from adaptlab.models.loading import pad_batch

MEGABATCH = 50  # batches per length-sorted group


class TokenizedDataset(Dataset):
    def __init__(self, input_ids: list[list[int]], labels: Sequence[int]) -> None:
        self.input_ids, self.labels = input_ids, list(labels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class FeatureDataset(Dataset):
    """Pre-computed backbone features: what makes head-only training nearly free per epoch."""

    def __init__(self, features: np.ndarray, labels: Sequence[int], lengths: Sequence[int] | None = None) -> None:
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        # token lengths of the texts, so batches are grouped exactly as they would be for the texts themselves
        self._lengths = list(lengths) if lengths is not None else [1] * len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "labels": self.labels[i]}

    def lengths(self) -> list[int]:
        return self._lengths


class PadCollator:
    """Pads token ids to the longest sequence of the batch, on the side the model needs."""

    def __init__(self, pad_id: int, side: str = "right") -> None:
        self.pad_id, self.side = pad_id, side

    def __call__(self, items: list[dict]) -> dict:
        if "features" in items[0]:
            return {
                "features": torch.stack([it["features"] for it in items]),
                "labels": torch.stack([it["labels"] for it in items]),
            }
        ids, mask = pad_batch([it["input_ids"] for it in items], self.pad_id, self.side)
        labels = torch.as_tensor([it["labels"] for it in items], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class CausalDataset(Dataset):
    """Token ids with per-token labels (``-100`` outside the loss); packed rows also carry position ids that
    restart at every example, so attention never crosses from one example into another."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def lengths(self) -> list[int]:
        return [len(row["input_ids"]) for row in self.rows]


def causal_rows(examples: list[tuple[list[int], list[int]]], block_size: int | None = None) -> list[dict]:
    """One row per example, or (``block_size`` given) examples packed greedily, longest first, into rows of at
    most ``block_size`` tokens with position ids reset per example. A packed example's first label is dropped:
    it would be predicted from the previous example's last token (unpacked, nothing predicts it either)."""
    if block_size is None:
        return [{"input_ids": ids, "labels": labels} for ids, labels in examples]
    rows: list[dict] = []
    current = {"input_ids": [], "labels": [], "position_ids": []}
    for ids, labels in sorted(examples, key=lambda e: -len(e[0])):
        if current["input_ids"] and len(current["input_ids"]) + len(ids) > block_size:
            rows.append(current)
            current = {"input_ids": [], "labels": [], "position_ids": []}
        current["input_ids"] += ids
        current["labels"] += [-100] + labels[1:]
        current["position_ids"] += list(range(len(ids)))
    if current["input_ids"]:
        rows.append(current)
    return rows


class CausalCollator:
    """Right-pads ids (labels with ``-100``). Packed batches carry position ids and no attention mask:
    transformers then builds a block-diagonal causal mask from the position ids (the padding forms a block
    of its own)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        ids, mask = pad_batch([it["input_ids"] for it in items], self.pad_id)
        labels, _ = pad_batch([it["labels"] for it in items], -100)
        if "position_ids" not in items[0]:
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        width = ids.shape[1]
        positions = torch.tensor([it["position_ids"] + list(range(width - len(it["position_ids"]))) for it in items])
        return {"input_ids": ids, "position_ids": positions, "labels": labels}


class LengthGroupedBatchSampler:
    """Length-grouped, shuffled batches; deterministic in (seed, epoch); shards batches across DDP ranks."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        span = self.batch_size * MEGABATCH
        batches = []
        for start in range(0, len(order), span):
            group = order[start : start + span]
            group = group[np.argsort(-self.lengths[group], kind="stable")]
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if dist.is_available() and dist.is_initialized():
            # every rank must run the same number of steps, or DDP's collectives mismatch: wrap around to pad
            world = dist.get_world_size()
            batches += batches[: (-len(batches)) % world]
            batches = batches[dist.get_rank() :: world]
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        if dist.is_available() and dist.is_initialized():
            n = -(-n // dist.get_world_size())
        return n


class BatchDataModule(L.LightningDataModule):
    def __init__(self, train: Dataset, val: Dataset, collate: PadCollator, batch_size: int, seed: int,
                 group_by_length: bool = True) -> None:
        super().__init__()
        self.train_set, self.val_set, self.collate = train, val, collate
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length

    def train_dataloader(self) -> DataLoader:
        sampler = LengthGroupedBatchSampler(self.train_set.lengths(), self.batch_size, self.seed, self.group_by_length)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.collate)

    def batches_per_epoch(self) -> int:
        return len(LengthGroupedBatchSampler(self.train_set.lengths(), self.batch_size, self.seed, self.group_by_length))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size * 2, shuffle=False, collate_fn=self.collate)
