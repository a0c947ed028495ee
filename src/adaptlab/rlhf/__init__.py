"""RLHF: preference data, reward models (Bradley-Terry on the Lightning engine), PPO against a reward."""

from adaptlab.rlhf.ppo import PPOConfig, PPOTrainer, load_reward, train_ppo
from adaptlab.rlhf.preferences import Pair, PreferenceSplit, read_preferences, split_preferences
from adaptlab.rlhf.reward import RewardModel, train_reward_model

__all__ = ["PPOConfig", "PPOTrainer", "Pair", "PreferenceSplit", "RewardModel", "load_reward", "read_preferences",
           "split_preferences", "train_ppo", "train_reward_model"]
