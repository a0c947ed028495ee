"""RLHF: preference data, reward models (Bradley-Terry on the Lightning engine), PPO against a reward.

The PPO loop (torch) loads on first use of its names, so the ``rlhf`` commands validate their options fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adaptlab.rlhf.ppo_config import PPOConfig
from adaptlab.rlhf.preferences import Pair, PreferenceSplit, read_preferences, split_preferences
from adaptlab.rlhf.reward import RewardModel, train_reward_model
from adaptlab.rlhf.rewards import checked_reward, load_reward

if TYPE_CHECKING:
    from adaptlab.rlhf.ppo import PPOTrainer, train_ppo

_LAZY = {"PPOTrainer", "train_ppo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("adaptlab.rlhf.ppo"), name)
    raise AttributeError(f"module 'adaptlab.rlhf' has no attribute '{name}'")


__all__ = ["PPOConfig", "PPOTrainer", "Pair", "PreferenceSplit", "RewardModel", "checked_reward", "load_reward", "read_preferences",
           "split_preferences", "train_ppo", "train_reward_model"]
