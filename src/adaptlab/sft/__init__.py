"""Generative adaptation: supervised fine-tuning (SFT) of causal LMs on conversations or plain text."""

from adaptlab.sft.job import METHODS, SFTJob, train_sft

__all__ = ["METHODS", "SFTJob", "train_sft"]
