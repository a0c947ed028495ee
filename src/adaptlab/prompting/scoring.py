"""Score label words as continuations of prompts with a causal LM: classification without parsing text.

For each (prompt, label word) pair the score is the log-likelihood of the label's tokens given the prompt,
summed over tokens (multi-token labels are handled exactly by teacher forcing) or averaged per token
(``normalize_length``). Prompts that share a prefix (instruction + demonstrations) compute its key/value
cache once and every query continues from a copy of it; query x label pairs run in batches; only the
positions that predict label tokens go through the LM head.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from adaptlab.errors import AdaptlabError
from adaptlab.progress import progress_bar


class LabelScorer:
    def __init__(self, model, tokenizer, *, batch_size: int = 16, reuse_prefix: bool = True,
                 normalize_length: bool = False, progress: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.reuse_prefix, self.normalize_length = batch_size, reuse_prefix, normalize_length
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.context = getattr(model.config, "max_position_embeddings", None)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def label_ids(self, continuations: Sequence[str]) -> list[list[int]]:
        ids = [self.encode(c) for c in continuations]
        for word, tokens in zip(continuations, ids):
            if not tokens:
                raise AdaptlabError(f"label word {word.strip()!r} tokenizes to nothing; choose a visible word")
        return ids

    def check_length(self, prefix: str, query: str, continuations: Sequence[str]) -> None:
        total = len(self.encode(prefix)) + len(self.encode(query)) + max(len(i) for i in self.label_ids(continuations))
        if self.context is not None and total > self.context:
            raise AdaptlabError(
                f"a prompt has {total} tokens but the model reads at most {self.context}; "
                "use fewer demonstrations (--k), shorter texts or a shorter template"
            )

    @torch.inference_mode()
    def score(self, items: Sequence[tuple[str, str]], continuations: Sequence[str]) -> np.ndarray:
        """Log-likelihoods, shape (len(items), len(continuations)); ``items`` are (prefix, query) pairs."""
        labels = self.label_ids(continuations)
        out = np.zeros((len(items), len(labels)), dtype=np.float64)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (prefix, _) in enumerate(items):
            groups[prefix].append(i)
        with progress_bar(f"scoring {len(items)} prompts", total=len(items), enabled=self.progress) as advance:
            for prefix, members in groups.items():
                prefix_ids = self.encode(prefix)
                cache = self._prefix_cache(prefix_ids) if self.reuse_prefix and prefix_ids else None
                pairs = [(i, k) for i in members for k in range(len(labels))]
                queries = {i: self.encode(items[i][1]) for i in members}
                for start in range(0, len(pairs), self.batch_size):
                    batch = pairs[start : start + self.batch_size]
                    lead = [] if cache is not None else prefix_ids
                    sequences = [(lead + queries[i], labels[k]) for i, k in batch]
                    scores = self._score_batch(sequences, cache, len(prefix_ids) if cache is not None else 0)
                    for (i, k), value in zip(batch, scores):
                        out[i, k] = value
                    advance(len({i for i, _ in batch}))
        return out

    def _prefix_cache(self, prefix_ids: list[int]):
        ids = torch.tensor([prefix_ids], device=self.model.device)
        return self.model(input_ids=ids, use_cache=True).past_key_values

    def _score_batch(self, sequences: list[tuple[list[int], list[int]]], cache, cached_length: int) -> list[float]:
        device = self.model.device
        lengths = [len(q) + len(l) for q, l in sequences]
        width = max(lengths)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), cached_length + width), dtype=torch.long)
        mask[:, :cached_length] = 1
        for row, ((query, label), length) in enumerate(zip(sequences, lengths)):
            ids[row, :length] = torch.tensor(query + label)
            mask[row, cached_length : cached_length + length] = 1
        kwargs = {}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(sequences))
            kwargs["past_key_values"] = batch_cache
        hidden = self.model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=cache is not None, **kwargs).last_hidden_state
        rows, positions, targets, owners = [], [], [], []
        for row, (query, label) in enumerate(sequences):
            for j, token in enumerate(label):
                rows.append(row)
                positions.append(len(query) - 1 + j)  # the position whose output predicts this label token
                targets.append(token)
                owners.append(row)
        picked = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]
        logprobs = torch.log_softmax(self.model.get_output_embeddings()(picked).float(), dim=-1)
        token_scores = logprobs[torch.arange(len(targets), device=device), torch.tensor(targets, device=device)].cpu().numpy()
        totals = np.zeros(len(sequences))
        np.add.at(totals, owners, token_scores)
        if self.normalize_length:
            totals /= np.array([len(label) for _, label in sequences])
        return totals.tolist()
