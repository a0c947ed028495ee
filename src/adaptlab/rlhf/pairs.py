"""How preference pairs reach a reward model: (prompt, response) encoded with the backbone's special tokens,
chosen and rejected responses batched together, and the (rejected, chosen) score pair whose cross-entropy is
the Bradley-Terry loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from adaptlab.models.classifier import logits_of
from adaptlab.rlhf.preferences import Pair
from adaptlab.training.data import PadCollator


def special_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens the tokenizer puts before, between and after a text pair (e.g. BERT's [CLS] a [SEP]
    b [SEP]; BOS a b for Llama), read off a tokenised probe pair."""
    x = tokenizer("x", add_special_tokens=False)["input_ids"]
    y = tokenizer("y", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", "y")["input_ids"]
    find = lambda part, start: next((i for i in range(start, len(full) - len(part) + 1) if full[i:i + len(part)] == part), None)
    i = find(x, 0)
    j = None if i is None else find(y, i + len(x))
    if j is None:
        return [], [], []
    return full[:i], full[i + len(x):j], full[j + len(y):]


def chat_template_pieces(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The token ids a chat template puts before the prompt (as a user turn), between it and the response (the
    assistant turn's header) and after the response, read off a conversation of two sentinel strings."""
    prompt_mark, response_mark = "\u241fPROMPT\u241f", "\u241fRESPONSE\u241f"
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt_mark}, {"role": "assistant", "content": response_mark}],
                                         tokenize=False)
    before, rest = text.split(prompt_mark)
    between, after = rest.split(response_mark)
    ids = lambda piece: tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids(before), ids(between), ids(after)


def uses_chat(tokenizer, chat: bool | None) -> bool:
    """``chat`` as given, or (None) whether the tokenizer has a chat template."""
    return bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat


def pair_template(tokenizer, chat: bool | None) -> tuple[list[int], list[int], list[int]]:
    """How (prompt, response) is framed: the chat template (see ``uses_chat``), else the tokenizer's text-pair
    special tokens."""
    return chat_template_pieces(tokenizer) if uses_chat(tokenizer, chat) else special_template(tokenizer)


def encode(tokenizer, prompt: str, response: str, max_length: int, template=None) -> list[int]:
    """Prompt tail + response head as one sequence with the model's special tokens."""
    before, between, after = template or special_template(tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    budget = max(2, max_length - len(before) - len(between) - len(after))
    response_ids = response_ids[: max(budget // 2, budget - len(prompt_ids))]
    keep = budget - len(response_ids)
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - keep):] if keep > 0 else []
    return before + prompt_ids + between + response_ids + after


class PairDataset(Dataset):
    def __init__(self, pairs: list[Pair], tokenizer, max_length: int, template=None) -> None:
        template = template or special_template(tokenizer)
        self.chosen = [encode(tokenizer, p.prompt, p.chosen, max_length, template) for p in pairs]
        self.rejected = [encode(tokenizer, p.prompt, p.rejected, max_length, template) for p in pairs]
        self.weights = [p.weight for p in pairs]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict:
        return {"chosen": self.chosen[i], "rejected": self.rejected[i], "weight": self.weights[i]}

    def lengths(self) -> list[int]:
        return [max(len(a), len(b)) for a, b in zip(self.chosen, self.rejected)]


class PairCollator:
    """Chosen sequences in rows 0..B-1, rejected in B..2B-1, padded together by the classifiers' ``PadCollator``;
    labels all 1 (chosen wins)."""

    def __init__(self, pad_id: int, side: str) -> None:
        self.pad = PadCollator(pad_id, side)

    def __call__(self, items: list[dict]) -> dict:
        sequences = [it["chosen"] for it in items] + [it["rejected"] for it in items]
        padded = self.pad([{"input_ids": seq, "labels": 0} for seq in sequences])
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                "labels": torch.ones(len(items), dtype=torch.long),
                "weights": torch.as_tensor([it["weight"] for it in items], dtype=torch.float32)}


class PairwiseScores(nn.Module):
    """(2B sequences) -> (B, 2) logits ``(r_rejected, r_chosen)`` from a scalar-head model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rewards = logits_of(self.model(input_ids=input_ids, attention_mask=attention_mask)).squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        return torch.stack([rejected, chosen], dim=-1)
