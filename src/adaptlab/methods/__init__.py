"""Adaptation strategies, one module per family, all following ``adaptlab.methods.base.Strategy``."""

from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.methods.features import FeatureClassifier
from adaptlab.methods.finetune import FullFineTune, LastKLayers
from adaptlab.methods.head import HeadOnly
from adaptlab.methods.icl import InContextClassifier
from adaptlab.methods.peft_methods import Lora, PrefixTuning, PromptTuning, PTuning
from adaptlab.methods.setfit import SetFitClassifier
from adaptlab.methods.soft_prompt import SoftPromptClassifier

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (InContextClassifier, SoftPromptClassifier, FeatureClassifier, HeadOnly, LastKLayers, FullFineTune,
                Lora, PrefixTuning, PTuning, PromptTuning, SetFitClassifier)
}


def all_strategies() -> dict[str, type[Strategy]]:
    """The built-in strategies and one per PEFT method registered for classifiers (``register_peft_method``)."""
    from adaptlab.adapt.registry import PEFT_METHODS
    from adaptlab.methods.peft_methods import registered_strategy

    return {**STRATEGIES, **{name: registered_strategy(m) for name, m in PEFT_METHODS.items() if "classifier" in m.lr}}


def get_strategy(name: str) -> type[Strategy]:
    strategies = all_strategies()
    if name not in strategies:
        raise AdaptlabError(f"unknown strategy '{name}' (available: {', '.join(strategies)})")
    return strategies[name]


__all__ = ["STRATEGIES", "FeatureClassifier", "Strategy", "all_strategies", "get_strategy"]
