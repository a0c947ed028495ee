"""Strategies on Hugging Face PEFT: ``lora``, ``prefix-tuning``, ``p-tuning`` and ``prompt-tuning``.

Adapters are saved in PEFT's own format (``PeftModel.from_pretrained`` loads them) together with the new head:
the modules a classification model creates fresh (e.g. DistilBERT's ``pre_classifier`` *and* ``classifier``,
found from the loading report) are always trained and saved (``modules_to_save``). The options are the adaptation
layer's (``adaptlab.adapt.options``) and ``adaptlab.adapt.apply`` wraps the model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.adapt import PrefixTuningOptions, PromptLearningOptions, PromptTuningOptions, PTuningOptions, apply, default_lr, lora_options
from adaptlab.errors import AdaptlabError
from adaptlab.methods.gradient import TokenClassifierStrategy
from adaptlab.models.classifier import load_classifier
from adaptlab.models.loading import max_positions
from adaptlab.params import param

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True, eq=False)
class PeftStrategy(TokenClassifierStrategy):
    method = ""  # the adaptation method (``adaptlab.adapt.apply``)

    def configure(self, bundle) -> nn.Module:
        return apply(bundle.model, self.method, self, "classifier", keep=bundle.new_modules,
                     model_name=f"model '{self.model}'", tokenizer_path=self.ref.path)

    def save_weights(self, directory: Path) -> None:
        self.model_.save_pretrained(directory / "adapter")

    def load_weights(self, directory: Path) -> nn.Module:
        from peft import PeftModel

        base = load_classifier(self.ref, self.label_names).model
        return PeftModel.from_pretrained(base, directory / "adapter")


@dataclass(kw_only=True, eq=False)
class PromptLearningStrategy(PromptLearningOptions, PeftStrategy):
    """Methods that prepend virtual tokens, which take positions away from the text."""

    def configure(self, bundle) -> nn.Module:
        self._check_positions(bundle.model)
        return super().configure(bundle)

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
class Lora(lora_options("classifier"), PeftStrategy):
    name = "lora"
    description = "LoRA adapters (Hugging Face PEFT); `adaptlab merge` folds them into the base weights."
    shares_base = True
    mergeable = True
    method = "lora"

    lr: float = param(default_lr("classifier", "lora"), "Peak learning rate.", above=0, maximum=10)

    def check(self) -> None:
        super().check()
        self.check_lora_targets(self.model)

    def host_network(self):
        return self.model_

    def use_network(self, network) -> None:
        self.model_ = network

    def merged_model(self):
        return self.model_.merge_and_unload(), self.tokenizer_


@dataclass(kw_only=True, eq=False)
class PrefixTuning(PrefixTuningOptions, PromptLearningStrategy):
    name = "prefix-tuning"
    description = "Prefix tuning (PEFT): trainable key/value prefixes in every layer."
    method = "prefix-tuning"

    lr: float = param(default_lr("classifier", "prefix-tuning"), "Peak learning rate.", above=0, maximum=10)

    def configure(self, bundle) -> nn.Module:
        model = bundle.model
        backbone = getattr(model, model.base_model_prefix, model)
        if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)):
            raise AdaptlabError(
                f"model '{self.model}' ({model.config.model_type}) takes no key/value cache, which prefix tuning "
                "injects its prefixes into; use p-tuning or prompt-tuning with this model"
            )
        return super().configure(bundle)


@dataclass(kw_only=True, eq=False)
class PTuning(PTuningOptions, PromptLearningStrategy):
    name = "p-tuning"
    description = "P-tuning (PEFT): virtual tokens produced by a small prompt encoder."
    method = "p-tuning"

    lr: float = param(default_lr("classifier", "p-tuning"), "Peak learning rate.", above=0, maximum=10)


@dataclass(kw_only=True, eq=False)
class PromptTuning(PromptTuningOptions, PromptLearningStrategy):
    name = "prompt-tuning"
    description = "Prompt tuning (PEFT): learned virtual-token embeddings."
    method = "prompt-tuning"

    lr: float = param(default_lr("classifier", "prompt-tuning"), "Peak learning rate.", above=0, maximum=10)


_REGISTERED: dict[str, type[PeftStrategy]] = {}


def registered_strategy(method) -> type[PeftStrategy]:
    """The classifier strategy of a PEFT method registered with ``adaptlab.adapt.register_peft_method``: its options
    class and ``PeftStrategy`` (the adapter saved in PEFT's format with the new head), made once per method."""
    if method.name not in _REGISTERED:
        namespace = {"__annotations__": {"lr": "float"}, "__module__": __name__, "name": method.name,
                     "description": method.description, "method": method.name,
                     "lr": param(method.lr["classifier"], "Peak learning rate.", above=0, maximum=10)}
        title = "".join(part.capitalize() for part in method.name.replace("_", "-").split("-"))
        _REGISTERED[method.name] = dataclass(kw_only=True, eq=False)(type(title, (method.options, PeftStrategy), namespace))
    return _REGISTERED[method.name]
