"""The options of each adaptation method, declared once with ``param()`` and flattened into every job that takes them.

As TRL's ``ModelConfig`` is one dataclass whose fields (``lora_r``, ``lora_alpha``...) join each script's options,
a job here *inherits* its methods' options classes: ``SFTJob`` is a ``LoraOptions``, a ``LastKOptions`` and a
``PromptLearningOptions``, so ``sft train --r 8 --layers 4`` exist without a second declaration, with the same help,
checks and YAML names in every command. Where a family's measured defaults differ (LoRA's rank for a classifier and
for a causal LM), ``lora_options(task)`` gives the class with that task's defaults from ``adaptlab.adapt.defaults``.

``full`` has no options: every weight trains.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from adaptlab.adapt.defaults import lora_defaults
from adaptlab.errors import AdaptlabError
from adaptlab.params import param, with_defaults

LORA_INITS = ("default", "gaussian")
MAX_VIRTUAL_TOKENS = 512  # positions an encoder has; the model's own limit is checked when it loads


@dataclass(kw_only=True, eq=False)
class LoraOptions:
    """LoRA (Hugging Face PEFT): low-rank updates ``B @ A`` added to the chosen weight matrices."""

    r: int = param(8, "LoRA rank.", minimum=1, maximum=4096)
    alpha: int | None = param(16, "LoRA scaling alpha: updates are scaled by alpha / r (unset: 2 x r).", above=0, maximum=65536)
    dropout: float = param(0.1, "LoRA dropout.", minimum=0, below=1)
    target_modules: list[str] | None = param(
        None, "Comma-separated module names, or all-linear (default: the attention query/value projections for "
              "classifiers and reward models, every linear layer for SFT, DPO and PPO).")
    use_dora: bool = param(False, "DoRA: weight-decomposed LoRA.")
    use_rslora: bool = param(False, "rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    lora_init: str = param("default", "How the LoRA matrices start: default (A Kaiming-uniform, B zero: PEFT's) or "
                           "gaussian (A Gaussian with std 1/r, B zero).", choices=LORA_INITS)

    def check_lora_targets(self, model: str) -> None:
        """Target names the checkpoint's headers do not hold are refused before the model loads (the task's new head,
        ``classifier``/``score``, is not in the checkpoint and is allowed)."""
        from adaptlab.models.loading import checkpoint_matrix_names

        if not self.target_modules or "all-linear" in self.target_modules:
            return
        try:
            known = checkpoint_matrix_names(model)
        except (AdaptlabError, OSError, ValueError):
            return  # a model that cannot be read is refused with its own message when it loads
        missing = [t for t in self.target_modules if known is not None and t not in known | {"classifier", "score"}]
        if missing:
            raise AdaptlabError(f"--target-modules {', '.join(missing)} not found in model '{model}'; its layers "
                                f"with weight matrices include: {', '.join(sorted(known)[:20])}")


@functools.cache
def lora_options(task: str) -> type[LoraOptions]:
    """``LoraOptions`` with ``task``'s measured defaults (r, alpha, dropout) from the defaults table."""
    defaults = lora_defaults(task)
    name = "".join(part.capitalize() for part in task.split("-")) + "LoraOptions"
    return with_defaults(LoraOptions, name, r=defaults.r, alpha=defaults.alpha, dropout=defaults.dropout)


@dataclass(kw_only=True, eq=False)
class LastKOptions:
    """The last k transformer blocks train, with the norm or pooler between them and the head (and the head)."""

    layers: int = param(2, "last-k: how many of the last transformer blocks to train.", minimum=1, maximum=1000)


@dataclass(kw_only=True, eq=False)
class PromptLearningOptions:
    """Methods that prepend trained virtual tokens (PEFT's prompt learning); they take positions from the text."""

    num_virtual_tokens: int = param(20, "Virtual tokens prepended (the prompt or prefix length).", minimum=1,
                                    maximum=MAX_VIRTUAL_TOKENS)


@dataclass(kw_only=True, eq=False)
class PrefixTuningOptions(PromptLearningOptions):
    """Prefix tuning: trained keys and values in every layer."""

    prefix_projection: bool = param(False, "Reparameterise the prefix through an MLP.")
    encoder_hidden_size: int = param(256, "Hidden size of that MLP.", minimum=1, maximum=65536)


@dataclass(kw_only=True, eq=False)
class PTuningOptions(PromptLearningOptions):
    """P-tuning: virtual tokens produced by a small prompt encoder."""

    encoder_hidden_size: int = param(128, "Prompt encoder hidden size.", minimum=1, maximum=65536)
    encoder_type: str = param("MLP", "Prompt encoder: MLP or LSTM.", choices=("MLP", "LSTM"))


@dataclass(kw_only=True, eq=False)
class PromptTuningOptions(PromptLearningOptions):
    """Prompt tuning: trained input embeddings."""

    init_text: str | None = param(None, "Start the virtual tokens from this text, e.g. 'Classify the sentiment of this "
                                  "review' (prompt tuning: its embeddings; prefix tuning: the keys and values the model "
                                  "computes for it); default: random.")


#: method -> the class of its options (None: the method has none)
METHOD_OPTIONS: dict[str, type | None] = {
    "full": None, "last-k": LastKOptions, "lora": LoraOptions, "prefix-tuning": PrefixTuningOptions,
    "p-tuning": PTuningOptions, "prompt-tuning": PromptTuningOptions,
}
