"""Rewards PPO and ``rlhf eval`` optimise and score against: a reward-model artifact, a classifier artifact's
log-odds for one label, or the user's own ``module:function``. User code is checked on every call: it must be
callable and return one finite number per response, or the run stops with one line saying what came back."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path

import numpy as np

from adaptlab.errors import AdaptlabError

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


class CheckedReward:
    """A reward function whose every answer is checked: one finite number per response, else one line naming it."""

    def __init__(self, reward: RewardFn, name: str) -> None:
        self.reward, self.name = reward, name

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        scores = self.reward(prompts, responses)
        values = scores.tolist() if isinstance(scores, np.ndarray) else scores
        is_list = isinstance(values, Sequence) and not isinstance(values, (str, bytes))
        if not is_list or len(values) != len(responses):
            got = f"{len(values)} values" if is_list else type(scores).__name__
            raise AdaptlabError(f"{self.name} returned {got} for {len(responses)} responses; it must return one number per response")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v)]
        if bad:
            raise AdaptlabError(f"{self.name} returned {bad[0]!r} among its scores; every score must be a finite number")
        return [float(v) for v in values]


def checked_reward(reward: RewardFn, name: str = "the reward function") -> RewardFn:
    """``reward``, refusing (one line) a non-callable and, per call, anything but one finite number per response.
    A reward already checked is returned as it is, so each call is checked once however many layers wrap it."""
    if isinstance(reward, CheckedReward):
        return reward
    if not callable(reward):
        raise AdaptlabError(f"{name} is not callable (got {type(reward).__name__}); give a function (prompts, responses) -> scores")
    return CheckedReward(reward, name)


def check_reward(spec: str, label: str | None = None) -> None:
    """Refuse a --reward that cannot load, reading only its manifest (no model, no torch): what the commands check
    before anything heavy starts. A ``module:function`` is imported only by ``load_reward``."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        return
    if not (path / "manifest.json").exists():
        raise AdaptlabError(f"--reward '{spec}' is neither an artifact directory nor module:function")
    from adaptlab.artifacts import read_manifest

    manifest = read_manifest(path)
    if manifest["strategy"] == "reward-model":
        return
    labels = manifest.get("labels")
    if not isinstance(labels, list):
        raise AdaptlabError(f"--reward '{spec}' is a '{manifest['strategy']}' artifact, not a reward model or a classifier")
    if label not in labels:
        raise AdaptlabError(f"--reward-label must be one of {', '.join(map(str, labels))} for classifier '{spec}'")


def load_reward(spec: str, label: str | None = None, device: str | None = None) -> RewardFn:
    """``module:function``, a reward-model artifact, or a classifier artifact with ``label`` (its log-odds)."""
    check_reward(spec, label)
    path = Path(spec)
    if not path.exists() and ":" in spec:
        module, _, name = spec.partition(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise AdaptlabError(f"--reward '{spec}': cannot import ({exc})") from None
        return checked_reward(function, f"--reward '{spec}'")
    from adaptlab.artifacts import read_manifest

    if read_manifest(path)["strategy"] == "reward-model":
        from adaptlab.rlhf.reward import RewardModel

        model = RewardModel.load(path, device=device)
        return lambda prompts, responses: model.score(list(prompts), list(responses)).tolist()
    from adaptlab.runner import load_artifact

    classifier = load_artifact(path, device=device, progress=False)
    if label not in classifier.label_names:
        raise AdaptlabError(f"--reward-label must be one of {', '.join(classifier.label_names)} for classifier '{spec}'")
    column = classifier.label_names.index(label)

    def log_odds(prompts, responses):  # judged on prompt + response, as the text a reader sees
        proba = np.clip(classifier.predict_proba([p + r for p, r in zip(prompts, responses)]), 1e-6, 1 - 1e-6)
        return (np.log(proba[:, column]) - np.log1p(-proba[:, column])).tolist()

    return log_odds
