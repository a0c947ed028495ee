"""``register_peft_method``: a PEFT method added to adaptlab with one call, as PEFT's own ``register_peft_method``.

One registration makes the method a classifier strategy (``adaptlab train NAME``, ``load_artifact``, ``serve``), an
SFT method (``sft train --method NAME``) and an entry on both comparison ladders (not in the default ladders:
``compare --strategies NAME``), with its options generated from its ``param()`` dataclass and its learning rate in
the defaults table. What the method is, is the PEFT config its ``config`` function builds; adaptlab wraps the model
with it (``adaptlab.adapt.apply``), trains, saves the adapter in PEFT's format, and loads it with plain ``peft``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adaptlab.adapt.defaults import TASKS
from adaptlab.adapt.options import METHOD_OPTIONS
from adaptlab.errors import AdaptlabError
from adaptlab.families import ADDED_ENTRIES, Entry, add_entries, add_strategy, note_plugin, remove_strategy

BUILT_IN = ("full", "last-k", "lora", "prefix-tuning", "p-tuning", "prompt-tuning")


@dataclass(frozen=True)
class PeftMethod:
    name: str
    #: a ``param()`` dataclass of the method's options (its fields become CLI options and YAML keys)
    options: type
    #: ``(model, options, peft_task_type) -> peft.PeftConfig``; ``options`` carries the option fields
    config: Callable[[Any, Any, str], Any]
    description: str
    #: the tasks it serves and its learning rate on each: ``{"classifier": 1e-3, "sft": 1e-3}``
    lr: dict[str, float]


PEFT_METHODS: dict[str, PeftMethod] = {}


def register_peft_method(method: PeftMethod) -> PeftMethod:
    """Make ``method`` available to classifiers, SFT and both comparison ladders (see the module docstring)."""
    if method.name in BUILT_IN or method.name in ("soft-prompt", "features", "head", "icl"):
        raise AdaptlabError(f"'{method.name}' is a built-in method; register the new one under another name")
    unknown = sorted(set(method.lr) - {"classifier", "sft"})
    if unknown or not method.lr:
        raise AdaptlabError(f"register_peft_method('{method.name}'): lr must map classifier and/or sft to a rate, not {method.lr}")
    PEFT_METHODS[method.name] = method
    METHOD_OPTIONS[method.name] = method.options
    for task, rate in method.lr.items():
        TASKS[task].lr[method.name] = rate
    if "classifier" in method.lr:
        add_strategy("classifier", method.name)
        add_entries("classifier", "classification", (Entry(method.name, method.name, {}, method.description,
                                                            in_default_ladder=False),))
    if "sft" in method.lr:
        add_entries("sft", "generation", (Entry(method.name, "sft", {"method": method.name, "lr": method.lr["sft"]},
                                                method.description, in_default_ladder=False),))
    note_plugin()
    return method


def unregister_peft_method(name: str) -> None:
    """Undo ``register_peft_method`` (a plugin reloaded, a test cleaning up)."""
    method = PEFT_METHODS.pop(name, None)
    if method is None:
        return
    METHOD_OPTIONS.pop(name, None)
    for task in method.lr:
        TASKS[task].lr.pop(name, None)
    remove_strategy("classifier", name)
    for key in (("classifier", "classification"), ("sft", "generation")):
        ADDED_ENTRIES[key] = [e for e in ADDED_ENTRIES.get(key, []) if e.name != name]


def registered(name: str) -> PeftMethod:
    if name not in PEFT_METHODS:
        raise AdaptlabError(f"method '{name}' does not wrap the model with PEFT")
    return PEFT_METHODS[name]
