"""Score label words as continuations of prompts with a causal LM: classification without parsing text.

For each (prompt, label word) pair the score is the log-likelihood of the label's tokens given the prompt,
summed over tokens (multi-token labels are handled exactly by teacher forcing) or averaged per token
(``normalize_length``). Prompts that share a prefix (instruction + demonstrations) compute its key/value
cache once and every query continues from a copy of it; query x label pairs run in batches of similar length
(sorted, so little padding is computed); only the positions that predict label tokens go through the LM head.

Plain and PEFT models alike: a LoRA model is scored as above; a prompt-learning one (prompt tuning, prefix
tuning, p-tuning) through its full forward, which is where PEFT adds the virtual tokens, and without the shared
prefix cache (the virtual tokens must come before the prefix, not after it). Scores are computed in whatever
autocast context the caller runs them in (a job's ``Runtime.autocast()``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from adaptlab.errors import AdaptlabError
from adaptlab.models.loading import max_positions, pad_batch, pad_id
from adaptlab.progress import progress_bar


def encode_label_words(tokenizer, continuations: Sequence[str]) -> list[list[int]]:
    """Token ids of each label continuation; a word that tokenizes to nothing is refused."""
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    for word, tokens in zip(continuations, ids):
        if not tokens:
            raise AdaptlabError(f"label word {word.strip()!r} tokenizes to nothing; choose a visible word")
    return ids


def target_logprobs(hidden: torch.Tensor, lm_head, rows: list[int], positions: list[int], targets: list[int]) -> torch.Tensor:
    """log p(target) at each (row, position) of ``hidden``: only the positions that predict label tokens go
    through the LM head (shared by label-word scoring and the soft-prompt classifier)."""
    device = hidden.device
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]
    logprobs = torch.log_softmax(lm_head(picked).float(), dim=-1)
    return logprobs[torch.arange(len(targets), device=device), torch.tensor(targets, device=device)]


def _identity(logits: torch.Tensor) -> torch.Tensor:
    return logits


class LabelScorer:
    """Label-word log-likelihoods of a causal LM (see the module docstring): the one scorer behind in-context
    classification (the ``zero-shot`` and ``few-shot`` entries), reranking and the SFT forgetting probe."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, reuse_prefix: bool = True,
                 normalize_length: bool = False, progress: bool = False) -> None:
        from adaptlab.models.causal import decoder_and_head

        self.model, self.tokenizer = model, tokenizer
        # prompt learning: only the full forward adds the virtual tokens (and a cached prefix would precede them)
        self.full_forward = decoder_and_head(model) is None
        self.reuse_prefix = reuse_prefix and not self.full_forward
        self.batch_size, self.normalize_length = batch_size, normalize_length
        self.progress = progress
        self.pad_id = pad_id(tokenizer)
        self.context = max_positions(model)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def label_ids(self, continuations: Sequence[str]) -> list[list[int]]:
        return encode_label_words(self.tokenizer, continuations)

    def check_length(self, prefix: str, query: str, continuations: Sequence[str]) -> None:
        total = len(self.encode(prefix)) + len(self.encode(query)) + max(len(i) for i in self.label_ids(continuations))
        if self.context is not None and total > self.context:
            raise AdaptlabError(
                f"a prompt has {total} tokens but the model reads at most {self.context}; "
                "use fewer demonstrations (--k), shorter texts or a shorter template"
            )

    def score(self, items: Sequence[tuple[str, str]], continuations: Sequence[str]) -> np.ndarray:
        """Log-likelihoods, shape (len(items), len(continuations)); ``items`` are (prefix, query) pairs.

        When every label word is a single token (the usual case), one forward pass per query scores all
        labels from the same next-token distribution; otherwise each (query, label) pair is its own sequence.
        """
        prefixes: dict[str, list[int]] = {}
        encoded = []
        for prefix, query in items:
            if prefix not in prefixes:
                prefixes[prefix] = self.encode(prefix)
            encoded.append((prefixes[prefix], self.encode(query)))
        return self.score_ids(encoded, continuations)

    @torch.inference_mode()
    def score_ids(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], continuations: Sequence[str]) -> np.ndarray:
        """``score`` for prompts already tokenized: (prefix ids, query ids) pairs, e.g. chat prompts rendered by
        the tokenizer's template; items with the same prefix ids share its key/value cache."""
        labels = self.label_ids(continuations)
        single_token = all(len(label) == 1 for label in labels)
        out = np.zeros((len(items), len(labels)), dtype=np.float64)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (prefix, _) in enumerate(items):
            groups[tuple(prefix)].append(i)
        with progress_bar(f"scoring {len(items)} prompts", total=len(items), enabled=self.progress) as advance:
            for prefix, members in groups.items():
                prefix_ids = list(prefix)
                # the cache is reused when each query adds a token to it (an empty query is scored from the prefix)
                reuse = self.reuse_prefix and prefix_ids and all(len(items[i][1]) for i in members)
                cache = self._prefix_cache(prefix_ids) if reuse else None
                lead = [] if cache is not None else prefix_ids
                rows = []  # (item, token ids, [(position, target token, label index)])
                for i in members:
                    query = lead + list(items[i][1])
                    if not query:
                        raise AdaptlabError("a prompt to score is empty: the first label token needs a position to follow")
                    if single_token:
                        rows.append((i, query, [(len(query) - 1, label[0], k) for k, label in enumerate(labels)]))
                    else:
                        for k, label in enumerate(labels):
                            rows.append((i, query + label, [(len(query) - 1 + j, t, k) for j, t in enumerate(label)]))
                rows.sort(key=lambda row: len(row[1]))  # batches of similar length: little padding to compute
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start : start + self.batch_size]
                    self._score_batch(batch, cache, len(prefix_ids) if cache is not None else 0, out)
                    if single_token:  # one row per item (with several label tokens, an item's rows may be apart)
                        advance(len(batch))
                if not single_token:
                    advance(len(members))
        if self.normalize_length:
            out /= np.array([len(label) for label in labels])
        return out

    def _prefix_cache(self, prefix_ids: list[int]):
        ids = torch.tensor([prefix_ids], device=self.model.device)
        return self.model(input_ids=ids, use_cache=True).past_key_values

    def _score_batch(self, batch: list, cache, cached_length: int, out: np.ndarray) -> None:
        """Run one right-padded batch (after a copy of the prefix cache) and add each target's log-prob to ``out``."""
        device = self.model.device
        input_ids, mask = pad_batch([ids for _, ids, _ in batch], self.pad_id)
        mask = torch.cat([torch.ones((len(batch), cached_length), dtype=torch.long), mask], dim=1)  # the shared prefix
        kwargs = {}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(batch))
            kwargs["past_key_values"] = batch_cache
        if self.full_forward:  # prompt tuning prepends its virtual tokens' outputs: the last positions are the input's
            hidden = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits[:, -input_ids.shape[1]:]
            head = _identity
        else:
            hidden = self.model.get_decoder()(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                              use_cache=cache is not None, **kwargs).last_hidden_state
            head = self.model.get_output_embeddings()
        rows, positions, targets, cells = [], [], [], []
        for row, (item, _, wanted) in enumerate(batch):
            for position, token, k in wanted:
                rows.append(row)
                positions.append(position)  # the position whose output predicts this label token
                targets.append(token)
                cells.append((item, k))
        scores = target_logprobs(hidden, head, rows, positions, targets).cpu().numpy()
        for (item, k), value in zip(cells, scores):
            out[item, k] += value
