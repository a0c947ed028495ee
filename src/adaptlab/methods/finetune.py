"""Strategies ``full`` (every weight trained) and ``last-k`` (the last k transformer blocks, what sits above
them and the head are trained; the rest stays frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError
from adaptlab.methods.gradient import TokenClassifierStrategy
from adaptlab.models.classifier import load_classifier, transformer_blocks
from adaptlab.params import param

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True, eq=False)
class FullFineTune(TokenClassifierStrategy):
    name = "full"
    description = "Fine-tune every parameter."

    def configure(self, bundle) -> nn.Module:
        return bundle.model.requires_grad_(True)

    def save_weights(self, directory: Path) -> None:
        # a complete model directory, tokenizer inside: pipeline("text-classification", model=...) loads it (a
        # mean-pooled encoder's is a sentence-transformers directory: SentenceTransformer(...).encode gives logits)
        from adaptlab.models.pooled import save_classifier

        save_classifier(self.model_, self.tokenizer_, directory / "model", self.max_length_)

    def load_weights(self, directory: Path) -> nn.Module:
        from adaptlab.models.pooled import load_saved_classifier

        return load_saved_classifier(directory / "model")


@dataclass(kw_only=True, eq=False)
class LastKLayers(TokenClassifierStrategy):
    name = "last-k"
    description = "Train the last k transformer blocks and the head; the rest stays frozen."

    layers: int = param(2, "How many of the last blocks to train.", minimum=1, maximum=1000)
    lr: float = param(1e-4, "Peak learning rate.", above=0, maximum=10)

    def configure(self, bundle) -> nn.Module:
        model = bundle.model.requires_grad_(False)
        blocks = transformer_blocks(model)
        if self.layers > len(blocks):
            raise AdaptlabError(f"--layers {self.layers} is more than the {len(blocks)} blocks model '{self.model}' has")
        for block in blocks[-self.layers :]:
            block.requires_grad_(True)
        for name in bundle.new_modules + _modules_above_blocks(model):
            model.get_submodule(name).requires_grad_(True)
        return model

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


def _modules_above_blocks(model: nn.Module) -> list[str]:
    """Pooler / final layer norm: they sit between the last block and the head, so last-k trains them."""
    names = []
    for name, _ in model.named_modules():
        leaf = name.split(".")[-1]
        if name.count(".") <= 1 and leaf in {"pooler", "norm", "ln_f", "final_layer_norm"}:
            names.append(name)
    return names
