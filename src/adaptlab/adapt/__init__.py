"""The adaptation layer: how a model's weights are adapted, the same way in every family.

- ``options``: one ``param()`` dataclass per method (``LoraOptions``, ``LastKOptions``, the prompt-learning ones),
  inherited by every job that offers the method, so its options, help, checks and YAML names are declared once;
- ``defaults``: the one table of defaults per (task, method): learning rates, LoRA's rank, alpha, dropout and targets;
- ``apply(model, method, options, task)``: freezes, unfreezes or wraps the model (``peft_config`` for TRL);
- ``peft_factory``: the only module that builds the built-in methods' PEFT configs;
- ``registry``: ``register_peft_method`` adds a PEFT method to every family and both comparison ladders in one call.

Importing this package loads neither torch nor PEFT: the command line is built from the options alone.
"""

from adaptlab.adapt.apply import apply, modules_above_blocks, peft_config
from adaptlab.adapt.defaults import TASKS, default_lr, lr_help
from adaptlab.adapt.registry import PEFT_METHODS, PeftMethod, register_peft_method
from adaptlab.adapt.options import (METHOD_OPTIONS, LastKOptions, LoraOptions, PrefixTuningOptions, PromptLearningOptions,
                                    PromptTuningOptions, PTuningOptions, lora_options)

__all__ = ["METHOD_OPTIONS", "PEFT_METHODS", "PeftMethod", "register_peft_method", "TASKS", "LastKOptions", "LoraOptions", "PTuningOptions", "PrefixTuningOptions",
           "PromptLearningOptions", "PromptTuningOptions", "apply", "default_lr", "lora_options", "lr_help",
           "modules_above_blocks", "peft_config"]
