"""RLHF: preference data, reward models (Bradley-Terry on the Lightning engine)."""

from adaptlab.rlhf.preferences import Pair, PreferenceSplit, read_preferences, split_preferences
from adaptlab.rlhf.reward import RewardModel, train_reward_model

__all__ = ["Pair", "PreferenceSplit", "RewardModel", "read_preferences", "split_preferences", "train_reward_model"]
