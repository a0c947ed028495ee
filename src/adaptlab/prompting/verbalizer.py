"""The network the ``soft-prompt`` strategy trains: a PEFT prompt-tuned causal LM read out through label words,
so each class's logit is the log-likelihood of its word after the prompt."""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.models.loading import pad_batch
from adaptlab.prompting.scoring import target_logprobs


class VerbalizerModel(nn.Module):
    """PEFT prompt-tuned LM -> per-label log-likelihood of each label word after the prompt (class logits)."""

    def __init__(self, peft_model, label_ids: list[list[int]], normalize_length: bool) -> None:
        super().__init__()
        self.peft = peft_model
        base = peft_model.get_base_model()
        self.decoder, self.lm_head, self.embed = base.get_decoder(), base.get_output_embeddings(), base.get_input_embeddings()
        self.label_ids, self.normalize_length = label_ids, normalize_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids``: right-padded prompts (B, T). Returns (B, K) label log-likelihoods."""
        if all(len(label) == 1 for label in self.label_ids):
            return self._single_tokens(input_ids, attention_mask)
        return self._per_label(input_ids, attention_mask)

    def _per_label(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One sequence per (prompt, label word): exact for label words of several tokens."""
        device, k = input_ids.device, len(self.label_ids)
        lengths = attention_mask.sum(1).tolist()
        rows, starts, labels = [], [], []
        for b in range(len(input_ids)):  # one sequence per (prompt, label word)
            for label in self.label_ids:
                rows.append(torch.cat([input_ids[b, : lengths[b]], torch.tensor(label, device=device)]))
                starts.append(lengths[b])
                labels.append(label)
        ids, mask = (t.to(device) for t in pad_batch([row.tolist() for row in rows], 0))
        prompts = self.peft.get_prompt(batch_size=len(rows))
        virtual = prompts.shape[1]
        embeds = torch.cat([prompts.to(self.embed.weight.dtype), self.embed(ids)], dim=1)
        full_mask = torch.cat([torch.ones((len(rows), virtual), dtype=mask.dtype, device=device), mask], dim=1)
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
        owners, positions, targets = [], [], []
        for i, (start, label) in enumerate(zip(starts, labels)):
            for j, token in enumerate(label):
                owners.append(i)
                positions.append(virtual + start - 1 + j)  # the output that predicts this label token
                targets.append(token)
        token_scores = target_logprobs(hidden, self.lm_head, owners, positions, targets)
        totals = torch.zeros(len(rows), device=device).index_add(0, torch.tensor(owners, device=device), token_scores)
        if self.normalize_length:
            totals = totals / torch.tensor([len(label) for label in labels], device=device)
        return totals.view(len(input_ids), k)

    def _single_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """When every label word is one token (the usual case), one pass per prompt scores all K labels from the same
        next-token distribution: K times less compute than a sequence per (prompt, label), same values."""
        batch, device = len(input_ids), input_ids.device
        prompts = self.peft.get_prompt(batch_size=batch)
        virtual = prompts.shape[1]
        embeds = torch.cat([prompts.to(self.embed.weight.dtype), self.embed(input_ids)], dim=1)
        mask = torch.cat([torch.ones((batch, virtual), dtype=attention_mask.dtype, device=device), attention_mask], dim=1)
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        last = virtual + attention_mask.sum(1) - 1  # right-padded: each prompt's last real position
        logprobs = torch.log_softmax(self.lm_head(hidden[torch.arange(batch, device=device), last]).float(), dim=-1)
        return logprobs[:, torch.tensor([label[0] for label in self.label_ids], device=device)]
