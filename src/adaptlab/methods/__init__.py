"""Adaptation strategies, one module each, all following ``adaptlab.methods.base.Strategy``."""

from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.methods.features import FeatureClassifier
from adaptlab.methods.finetune import GRADIENT_STRATEGIES
from adaptlab.methods.icl import InContextClassifier
from adaptlab.methods.soft_prompt import SoftPromptClassifier

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (InContextClassifier, SoftPromptClassifier, FeatureClassifier, *GRADIENT_STRATEGIES)
}


def get_strategy(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise AdaptlabError(f"unknown strategy '{name}' (available: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "FeatureClassifier", "Strategy", "get_strategy"]
