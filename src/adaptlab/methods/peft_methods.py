"""Strategies on Hugging Face PEFT: ``lora``, ``prefix-tuning``, ``p-tuning`` and ``prompt-tuning``.

Adapters are saved in PEFT's own format (``PeftModel.from_pretrained`` loads them) together with the new head:
the modules a classification model creates fresh (e.g. DistilBERT's ``pre_classifier`` *and* ``classifier``,
found from the loading report) are always trained and saved (``modules_to_save``). Configs come from the one
adapter factory, ``adaptlab.models.adapters``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError
from adaptlab.methods.gradient import TokenClassifierStrategy
from adaptlab.models.adapters import lora_config, prompt_learning_config
from adaptlab.models.classifier import load_classifier
from adaptlab.models.loading import max_positions
from adaptlab.params import param

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True, eq=False)
class PeftStrategy(TokenClassifierStrategy):
    def peft_config(self, model: nn.Module, new_modules: list[str]):
        raise NotImplementedError

    def configure(self, bundle) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(bundle.model, self.peft_config(bundle.model, list(bundle.new_modules)))

    def save_weights(self, directory: Path) -> None:
        self.model_.save_pretrained(directory / "adapter")

    def load_weights(self, directory: Path) -> nn.Module:
        from peft import PeftModel

        base = load_classifier(self.ref, self.label_names).model
        return PeftModel.from_pretrained(base, directory / "adapter")


@dataclass(kw_only=True, eq=False)
class PromptLearningStrategy(PeftStrategy):
    """Methods that prepend virtual tokens, which take positions away from the text."""

    num_virtual_tokens: int = param(20, "Virtual tokens (prefix length).", minimum=1, maximum=512)

    def reserved_positions(self) -> int:
        return self.num_virtual_tokens

    def _check_positions(self, model: nn.Module) -> None:
        limit = max_positions(model)
        if limit is not None and self.num_virtual_tokens + self.max_length_ > limit:
            raise AdaptlabError(
                f"--num-virtual-tokens {self.num_virtual_tokens} plus --max-length {self.max_length_} overflows the "
                f"{limit} positions of model '{self.model}'; lower one of them"
            )


@dataclass(kw_only=True, eq=False)
class Lora(PeftStrategy):
    name = "lora"
    description = "LoRA adapters (Hugging Face PEFT); `adaptlab merge` folds them into the base weights."
    shares_base = True
    mergeable = True

    r: int = param(8, "LoRA rank.", minimum=1, maximum=4096)
    alpha: int = param(16, "LoRA scaling alpha.", above=0, maximum=65536)
    dropout: float = param(0.1, "LoRA dropout.", minimum=0, below=1)
    target_modules: list[str] | None = param(None, "Comma-separated module names (default: PEFT's per-architecture choice, e.g. query,value).")
    use_dora: bool = param(False, "Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = param(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    lr: float = param(1e-3, "Peak learning rate.", above=0, maximum=10)

    def check(self) -> None:
        super().check()
        self.check_targets()

    def check_targets(self) -> None:
        """Target names the checkpoint's headers do not hold are refused before the model loads (the task's new head,
        ``classifier``/``score``, is not in the checkpoint and is allowed)."""
        from adaptlab.models.loading import checkpoint_matrix_names

        if not self.target_modules or "all-linear" in (self.target_modules, *self.target_modules):
            return
        try:
            known = checkpoint_matrix_names(self.model)
        except (AdaptlabError, OSError, ValueError):
            return  # a model that cannot be read is refused with its own message when it loads
        missing = [t for t in self.target_modules if known is not None and t not in known | {"classifier", "score"}]
        if missing:
            raise AdaptlabError(f"--target-modules {', '.join(missing)} not found in model '{self.model}'; its layers "
                                f"with weight matrices include: {', '.join(sorted(known)[:20])}")

    def peft_config(self, model: nn.Module, new_modules: list[str]):
        return lora_config("classifier", model, r=self.r, alpha=self.alpha, dropout=self.dropout,
                           target_modules=self.target_modules, use_dora=self.use_dora, use_rslora=self.use_rslora,
                           modules_to_save=new_modules, model_name=f"model '{self.model}'")

    def host_network(self):
        return self.model_

    def use_network(self, network) -> None:
        self.model_ = network

    def merged_model(self):
        return self.model_.merge_and_unload(), self.tokenizer_


@dataclass(kw_only=True, eq=False)
class PrefixTuning(PromptLearningStrategy):
    name = "prefix-tuning"
    description = "Prefix tuning (PEFT): trainable key/value prefixes in every layer."

    prefix_projection: bool = param(False, "Reparameterise the prefix through an MLP.")
    encoder_hidden_size: int = param(256, "Hidden size of that MLP.", minimum=1, maximum=65536)
    lr: float = param(2e-2, "Peak learning rate.", above=0, maximum=10)

    def peft_config(self, model: nn.Module, new_modules: list[str]):
        self._check_positions(model)
        backbone = getattr(model, model.base_model_prefix, model)
        if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)):
            raise AdaptlabError(
                f"model '{self.model}' ({model.config.model_type}) takes no key/value cache, which prefix tuning "
                "injects its prefixes into; use p-tuning or prompt-tuning with this model"
            )
        return prompt_learning_config("prefix", "classifier", model, num_virtual_tokens=self.num_virtual_tokens,
                                      prefix_projection=self.prefix_projection, encoder_hidden_size=self.encoder_hidden_size,
                                      modules_to_save=new_modules)


@dataclass(kw_only=True, eq=False)
class PTuning(PromptLearningStrategy):
    name = "p-tuning"
    description = "P-tuning (PEFT): virtual tokens produced by a small prompt encoder."

    encoder_hidden_size: int = param(128, "Prompt encoder hidden size.", minimum=1, maximum=65536)
    encoder_type: str = param("MLP", "Prompt encoder: MLP or LSTM.", choices=("MLP", "LSTM"))
    lr: float = param(1e-2, "Peak learning rate.", above=0, maximum=10)

    def peft_config(self, model: nn.Module, new_modules: list[str]):
        self._check_positions(model)
        return prompt_learning_config("p-tuning", "classifier", model, num_virtual_tokens=self.num_virtual_tokens,
                                      encoder_hidden_size=self.encoder_hidden_size, encoder_type=self.encoder_type,
                                      modules_to_save=new_modules)


@dataclass(kw_only=True, eq=False)
class PromptTuning(PromptLearningStrategy):
    name = "prompt-tuning"
    description = "Prompt tuning (PEFT): learned virtual-token embeddings."

    init_text: str | None = param(None, "Initialise the virtual tokens from this text (default: random).")
    lr: float = param(1e-1, "Peak learning rate.", above=0, maximum=10)

    def peft_config(self, model: nn.Module, new_modules: list[str]):
        self._check_positions(model)
        return prompt_learning_config("prompt", "classifier", model, num_virtual_tokens=self.num_virtual_tokens,
                                      init_text=self.init_text, tokenizer_path=self.ref.path, modules_to_save=new_modules)
