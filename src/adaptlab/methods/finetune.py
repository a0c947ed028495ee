"""Strategies ``full`` (every weight trained) and ``last-k`` (the last k transformer blocks, what sits above
them and the head are trained; the rest stays frozen), both applied by ``adaptlab.adapt.apply``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.adapt import LastKOptions, apply, default_lr
from adaptlab.errors import AdaptlabError
from adaptlab.methods.gradient import TokenClassifierStrategy
from adaptlab.models.classifier import load_classifier
from adaptlab.params import param

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True, eq=False)
class FullFineTune(TokenClassifierStrategy):
    name = "full"
    description = "Fine-tune every parameter."

    lr: float = param(default_lr("classifier", "full"), "Peak learning rate.", above=0, maximum=10)

    def configure(self, bundle) -> nn.Module:
        return apply(bundle.model, "full", self, "classifier")

    def save_weights(self, directory: Path) -> None:
        # a complete model directory, tokenizer inside: pipeline("text-classification", model=...) loads it (a
        # mean-pooled encoder's is a sentence-transformers directory: SentenceTransformer(...).encode gives logits)
        from adaptlab.models.pooled import save_classifier

        save_classifier(self.model_, self.tokenizer_, directory / "model", self.max_length_)

    def load_weights(self, directory: Path) -> nn.Module:
        from adaptlab.models.pooled import load_saved_classifier

        return load_saved_classifier(directory / "model")


@dataclass(kw_only=True, eq=False)
class LastKLayers(LastKOptions, TokenClassifierStrategy):
    name = "last-k"
    description = "Train the last k transformer blocks and the head; the rest stays frozen."

    lr: float = param(default_lr("classifier", "last-k"), "Peak learning rate.", above=0, maximum=10)

    def configure(self, bundle) -> nn.Module:
        return apply(bundle.model, "last-k", self, "classifier", keep=bundle.new_modules, model_name=f"model '{self.model}'")

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        trainable = {n: p.detach().contiguous() for n, p in self.model_.named_parameters() if p.requires_grad}
        save_file(trainable, directory / "trainable.safetensors")

    def load_weights(self, directory: Path) -> nn.Module:
        from safetensors.torch import load_file

        model = load_classifier(self.ref, self.label_names).model
        state = load_file(directory / "trainable.safetensors")
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise AdaptlabError(f"artifact '{directory}' does not fit base model '{self.model}' ({len(missing)} unknown weights)")
        model.load_state_dict(state, strict=False)
        return model

