"""Strategy "soft-prompt": prompt tuning (PEFT) of a causal LM used as a classifier through label words.

The same template and label words as in-context learning, scored the same way (label log-likelihoods),
but with learned virtual-token embeddings in front of the prompt: hard prompt vs soft prompt vs few-shot is
then a like-for-like comparison on the same model. Only the virtual tokens train (the LM is frozen); they
start from a text's embeddings (``init_text``) or at random. Class logits are the label words' summed
(or per-token averaged) log-likelihoods, trained with cross-entropy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.adapt import PromptTuningOptions, apply, default_lr
from adaptlab.data import Splits
from adaptlab.errors import AdaptlabError
from adaptlab.methods.gradient import GradientStrategy
from adaptlab.methods.icl import parse_label_words
from adaptlab.models.causal import load_causal_lm
from adaptlab.models.loading import max_positions
from adaptlab.params import param
from adaptlab.prompting.template import PromptOptions, PromptTemplate, default_example

PREDICT_BATCH = 16


@dataclass(kw_only=True, eq=False)
class SoftPromptClassifier(PromptOptions, PromptTuningOptions, GradientStrategy):
    name = "soft-prompt"
    needs_decoder = True
    description = "Prompt tuning of a causal LM scored through label words (like icl, with learned virtual tokens)."

    model: str = param("smollm2-135m", "Causal LM: smollm2-135m, a Hub id or a local directory.")
    lr: float = param(default_lr("label-words", "prompt-tuning"), "Peak learning rate.", above=0, maximum=10)

    def check(self) -> None:
        super().check()
        self.check_template()  # the prompt's form, before any model loads
        parse_label_words(self.label_words, None)

    def _setup_prompt(self, tokenizer, label_names: list[str]) -> None:
        from adaptlab.prompting.scoring import encode_label_words

        self.words_ = parse_label_words(self.label_words, label_names)
        example = self.template or default_example(label_names)
        instruction = self.instruction if self.instruction is not None else f"Answer with one of: {', '.join(self.words_)}."
        self.prompt_ = PromptTemplate(instruction=instruction, example=example, chat=self.chat)
        self.label_ids_ = encode_label_words(tokenizer, self.prompt_.label_continuations(tokenizer, self.words_))

    def _encode(self, tokenizer, texts: Sequence[str]) -> list[list[int]]:
        encoded = []
        for text in texts:
            prefix, query, _ = self.prompt_.render(tokenizer, [], self.words_, text)
            ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] + tokenizer(query, add_special_tokens=False)["input_ids"]
            encoded.append(ids[-self.max_length_ :] if len(ids) > self.max_length_ else ids)
        return encoded

    def fit(self, splits: Splits, workdir: Path) -> "SoftPromptClassifier":
        from adaptlab.models.classifier import count_parameters
        from adaptlab.prompting.verbalizer import VerbalizerModel
        from adaptlab.training.data import PadCollator, TokenizedDataset

        self.label_names = splits.label_names
        lm, self.tokenizer_, _ = load_causal_lm(self.model)
        self._setup_prompt(self.tokenizer_, self.label_names)
        limit = max_positions(lm) or 2048
        room = limit - self.num_virtual_tokens - max(len(i) for i in self.label_ids_)
        if self.max_length is not None and self.max_length > room:
            raise AdaptlabError(
                f"--num-virtual-tokens {self.num_virtual_tokens} plus --max-length {self.max_length} overflows the "
                f"{limit} positions of model '{self.model}'; lower one of them"
            )
        self.max_length_ = min(self.max_length or 512, room)
        peft_model = apply(lm, "prompt-tuning", self, "label-words", tokenizer_path=self.ref.path)
        self.model_ = VerbalizerModel(peft_model, self.label_ids_, self.normalize_length)
        pad = self.tokenizer_.pad_token_id
        train = TokenizedDataset(self._encode(self.tokenizer_, splits.train.texts), splits.train.labels)
        val = TokenizedDataset(self._encode(self.tokenizer_, splits.val.texts), splits.val.labels)
        self.train_module(self.model_, train, val, PadCollator(pad, "right"), workdir)
        self.model_.eval()
        self.counts_ = count_parameters(self.model_)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from adaptlab.training.data import PadCollator

        model = self.model_.to(self.runtime.torch_device).eval()
        device = next(model.parameters()).device
        encoded = self._encode(self.tokenizer_, list(texts))
        collate = PadCollator(self.tokenizer_.pad_token_id, "right")
        out = []
        with torch.inference_mode():
            for start in range(0, len(encoded), PREDICT_BATCH):
                batch = collate([{"input_ids": ids, "labels": 0} for ids in encoded[start : start + PREDICT_BATCH]])
                scores = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                out.append(torch.softmax(scores.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def cost(self) -> dict:
        trainable, total = self.counts_
        return {"trainable_params": trainable, "total_params": total}

    def save(self, directory: Path) -> None:
        self.model_.peft.save_pretrained(directory / "adapter")
        self.tokenizer_.save_pretrained(directory / "tokenizer")
        payload = {"instruction": self.prompt_.instruction, "example": self.prompt_.example, "chat": self.prompt_.chat,
                   "label_words": self.words_, "max_length": self.max_length_}
        (directory / "prompt.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "SoftPromptClassifier":
        from peft import PeftModel
        from transformers import AutoTokenizer

        from adaptlab.prompting.verbalizer import VerbalizerModel

        strategy = cls.rebuild(manifest, runtime)
        lm, _, _ = load_causal_lm(strategy.model)
        strategy.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        payload = json.loads((directory / "prompt.json").read_text(encoding="utf-8"))
        strategy.label_words = dict(zip(strategy.label_names, payload["label_words"]))
        strategy._setup_prompt(strategy.tokenizer_, strategy.label_names)
        strategy.prompt_ = PromptTemplate(payload["instruction"], payload["example"], chat=payload["chat"])
        strategy.max_length_ = payload["max_length"]
        peft_model = PeftModel.from_pretrained(lm, directory / "adapter")
        strategy.model_ = VerbalizerModel(peft_model, strategy.label_ids_, strategy.normalize_length).eval()
        strategy.counts_ = (manifest["cost"]["trainable_params"], manifest["cost"]["total_params"])
        return strategy
