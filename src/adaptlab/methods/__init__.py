"""Adaptation strategies, one module per family, all following ``adaptlab.methods.base.Strategy``."""

from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.methods.features import FeatureClassifier
from adaptlab.methods.finetune import FullFineTune, LastKLayers
from adaptlab.methods.head import HeadOnly
from adaptlab.methods.icl import InContextClassifier
from adaptlab.methods.peft_methods import Lora, PrefixTuning, PromptTuning, PTuning
from adaptlab.methods.soft_prompt import SoftPromptClassifier

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (InContextClassifier, SoftPromptClassifier, FeatureClassifier, HeadOnly, LastKLayers, FullFineTune,
                Lora, PrefixTuning, PTuning, PromptTuning)
}


def get_strategy(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise AdaptlabError(f"unknown strategy '{name}' (available: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "FeatureClassifier", "Strategy", "get_strategy"]
