"""The one Lightning engine behind every gradient-based strategy (head, last-k, full, PEFT)."""

from adaptlab.training.engine import TrainingOptions, fit_module

__all__ = ["TrainingOptions", "fit_module"]
