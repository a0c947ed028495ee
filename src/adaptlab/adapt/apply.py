"""``apply(model, method, options, task)``: the one place a model is made ready to train by an adaptation method.

Classifiers (``train``), SFT, reward models, PPO and the retriever call it; DPO hands TRL the same ``peft_config``.
``options`` is any object carrying the method's option fields: the job itself (which inherits them, see
``adaptlab.adapt.options``) or an instance of the method's options class; fields it lacks take PEFT's defaults.

- ``full``: every weight trains.
- ``last-k``: the last k transformer blocks train, with what sits between them and the head (one rule for encoders
  and decoders: a ``pooler``, ``norm``, ``ln_f`` or ``final_layer_norm`` that is a child of the model or of its
  backbone, e.g. BERT's ``bert.pooler``, Llama's ``model.norm``, GPT-2's ``transformer.ln_f``) and the new modules
  ``keep`` names (a classifier's head); the rest is frozen.
- ``lora``, ``prefix-tuning``, ``p-tuning``, ``prompt-tuning``: PEFT wraps the model (``keep``: modules_to_save).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adaptlab.adapt.options import METHOD_OPTIONS
from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    from torch import nn

ABOVE_BLOCKS = {"pooler", "norm", "ln_f", "final_layer_norm"}
PROMPT_LEARNING = {"prefix-tuning": "prefix", "p-tuning": "p-tuning", "prompt-tuning": "prompt"}  # -> PEFT's kind


def apply(model: nn.Module, method: str, options: Any, task: str, *, keep: Sequence[str] = (),
          model_name: str = "the model", tokenizer_path: str | None = None) -> nn.Module:
    """``model`` ready to train by ``method`` on ``task`` (a key of ``adaptlab.adapt.defaults.TASKS``): frozen and
    unfrozen in place, or wrapped by PEFT. ``tokenizer_path``: where prompt tuning reads its ``init_text`` tokens."""
    if method == "full":
        return model.requires_grad_(True)
    if method == "last-k":
        return open_last_blocks(model, settings(method, options)["layers"], keep, model_name)
    from peft import get_peft_model

    return get_peft_model(model, peft_config(model, method, options, task, keep=keep, model_name=model_name,
                                             tokenizer_path=tokenizer_path))


def peft_config(model: nn.Module, method: str, options: Any, task: str, *, keep: Sequence[str] = (),
                model_name: str = "the model", tokenizer_path: str | None = None):
    """The PEFT config ``apply`` wraps ``model`` with (for trainers that wrap it themselves, as TRL's)."""
    from adaptlab.adapt.peft_factory import lora_config, prompt_learning_config

    modules = list(keep) or None
    if method == "lora":
        return lora_config(task, model, options, modules_to_save=modules, model_name=model_name)
    if method not in PROMPT_LEARNING:  # a method registered with adaptlab.adapt.register_peft_method
        from adaptlab.adapt.defaults import TASKS
        from adaptlab.adapt.peft_factory import peft_modules_to_save
        from adaptlab.adapt.registry import registered

        config = registered(method).config(model, options, TASKS[task].peft_task_type)
        extra = peft_modules_to_save(task, modules)
        if extra is not None:
            config.modules_to_save = extra
        return config
    values = settings(method, options)
    return prompt_learning_config(PROMPT_LEARNING[method], task, model, num_virtual_tokens=values["num_virtual_tokens"],
                                  prefix_projection=values.get("prefix_projection", False),
                                  encoder_hidden_size=values.get("encoder_hidden_size"),
                                  encoder_type=values.get("encoder_type", "MLP"), init_text=values.get("init_text"),
                                  tokenizer_path=tokenizer_path, modules_to_save=modules)


def settings(method: str, options: Any) -> dict:
    """The values of ``method``'s option fields that ``options`` carries (SFT's prefix tuning has no MLP options)."""
    cls = METHOD_OPTIONS[method]
    return {} if cls is None else {f.name: getattr(options, f.name) for f in dataclasses.fields(cls) if hasattr(options, f.name)}


def open_last_blocks(model: nn.Module, layers: int, keep: Sequence[str] = (), model_name: str = "the model") -> nn.Module:
    """Freeze ``model`` except its last ``layers`` transformer blocks, the modules above them and ``keep``."""
    from adaptlab.models.classifier import transformer_blocks

    blocks = transformer_blocks(model)
    if layers > len(blocks):
        raise AdaptlabError(f"--layers {layers} is more than the {len(blocks)} blocks {model_name} has")
    model.requires_grad_(False)
    for block in blocks[-layers:]:
        block.requires_grad_(True)
    for name in [*keep, *modules_above_blocks(model)]:
        model.get_submodule(name).requires_grad_(True)
    return model


def modules_above_blocks(model: nn.Module) -> list[str]:
    """The pooler or final layer norm: between the last block and the head, so last-k trains them."""
    return [name for name, _ in model.named_modules() if name.count(".") <= 1 and name.split(".")[-1] in ABOVE_BLOCKS]
