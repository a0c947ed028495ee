"""The registry of families: what each kind of training job offers, declared once, looked up everywhere else.

A *family* is a kind of job with its own artifact: the classifiers (one per strategy: features, head, LoRA...),
supervised fine-tuning, reward models, DPO, PPO, the retriever, and the ones to come. It registers, in one place:

- ``strategies``: the ``strategy`` names its artifacts' manifests carry (how an artifact finds its family);
- ``generator``: whether those artifacts hold a causal LM that generates (``generate``, ``serve --generator``,
  ``merge``, ``rlhf``, ``sft train --model`` take them);
- ``job`` and ``train``: its parameter dataclass and its Python API (``train(data, output, **params)``);
- ``command`` and ``cli``: where its command lives (``("rlhf", "dpo")``: ``adaptlab rlhf dpo``) and the function that
  adds it to that command group;
- ``load``: what ``adaptlab.load_artifact`` returns for its artifacts;
- ``entries`` and ``compare``: its rungs on each comparison task's ladder (``{"generation": (Entry, ...)}``) and the
  object that runs them (``adaptlab.compare.tasks.EntryRunner``).

The CLI, ``compare``, ``serve``, ``merge`` and ``load_artifact`` ask this registry instead of switching on names, so
a new family is one module plus one ``register_family(Family(...))``, as a PEFT method is one
``register_peft_method(...)``. References may be objects or ``"module:attribute"`` strings, imported only when
used: reading the registry imports no model library, so ``adaptlab --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from adaptlab.errors import AdaptlabError

Ref = Any  # an object, or "package.module:attribute[.attribute]" imported on first use


def resolve(ref: Ref) -> Any:
    """The object a reference names (a string ``module:attribute`` is imported; anything else is itself)."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    target = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class Entry:
    """One rung of a comparison's ladder: a family's job with the parameters that make it that rung (``few-shot``
    is the ``icl`` strategy with ``k=4``; ``features-rf`` is ``features`` with a random forest)."""

    name: str
    strategy: str  # the classifier strategy, or the family's run kind (``sft``, ``dpo``, ``prompting``...)
    params: dict
    description: str
    #: "decoder": needs a causal LM (prompting); "encoder": an encoder only (setfit); "any": runs on any model
    needs: str = "any"
    #: False when the result cannot depend on the training seed (then it runs once and counts for every seed)
    seeded: bool = True
    #: whether the entry takes training epochs
    epochs: bool = True
    in_default_ladder: bool = True
    #: its good learning rate moves most between tasks: the presets that say so run ``--lr-search`` for it (unless
    #: ``--tune`` searches its settings)
    lr_sensitive: bool = False
    #: another entry whose run this one starts from (``dpo`` from ``lora``): listed after it, refused without it
    starts_from: str | None = None
    #: the comparison option this entry needs (``--documents``); giving it adds the entry to the default ladder unless
    #: ``joins_when_given`` is False (the rarer preference trainers: listed with ``--strategies`` only)
    needs_option: str | None = None
    joins_when_given: bool = True


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    strategies: tuple[str, ...]
    generator: bool = False
    job: Ref = None
    train: Ref = None
    command: tuple[str, str] | None = None
    cli: Ref = None
    load: Ref = None
    entries: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    compare: Ref = None


#: command groups: name -> help (a family's ``command`` names its group; a new group takes its family's description)
GROUPS = {
    "train": "Train one adaptation strategy and save its artifact.",
    "sft": "Supervised fine-tuning of causal LMs on conversations, prompt/completion pairs or plain text.",
    "rlhf": "Learning from human preferences: reward models, PPO, DPO, policy evaluation.",
    "rag": "Retrieval-augmented generation: index documents, search them, answer with citations.",
}

FAMILIES: dict[str, Family] = {}
#: entries added to a family's ladder after it registered (a registered PEFT method's): (family, task) -> entries
ADDED_ENTRIES: dict[tuple[str, str], list[Entry]] = {}
#: modules that registered families or methods outside adaptlab: a comparison's worker processes import them too
PLUGIN_MODULES: list[str] = []
PLUGIN_ENV = "ADAPTLAB_PLUGINS"  # comma-separated modules a worker imports first (set by the comparison for its workers)


def note_plugin(depth: int = 2) -> None:
    """Remember the module that called a ``register_*`` function (``depth`` frames up), unless it is adaptlab's."""
    module = sys._getframe(depth).f_globals.get("__name__", "")
    if module and not module.startswith("adaptlab") and module not in PLUGIN_MODULES:
        PLUGIN_MODULES.append(module)


def load_plugins() -> None:
    """Import the modules named in ``$ADAPTLAB_PLUGINS`` (a comparison's worker: what its parent had registered) and
    the ``adaptlab.plugins`` entry points of installed packages, so their ``register_*`` calls run here too."""
    for module in filter(None, os.environ.get(PLUGIN_ENV, "").split(",")):
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for point in entry_points(group="adaptlab.plugins"):
        point.load()


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` (its strategies must not belong to another family); ``replace`` swaps one of the same name."""
    if family.name in FAMILIES and not replace:
        raise AdaptlabError(f"a family named '{family.name}' is already registered")
    taken = {s: f.name for f in FAMILIES.values() if f.name != family.name for s in f.strategies}
    clash = [s for s in family.strategies if s in taken]
    if clash:
        raise AdaptlabError(f"family '{family.name}': strategy {clash[0]!r} belongs to family '{taken[clash[0]]}'")
    if family.command is not None and family.command[0] not in GROUPS:
        GROUPS[family.command[0]] = family.description
    FAMILIES[family.name] = family
    note_plugin()
    return family


def unregister_family(name: str) -> None:
    FAMILIES.pop(name, None)


def add_strategy(family: str, strategy: str) -> None:
    """A new strategy of an existing family (a PEFT method registered into the classifiers)."""
    known = get_family(family)
    if strategy not in known.strategies:
        FAMILIES[family] = dataclasses.replace(known, strategies=(*known.strategies, strategy))


def remove_strategy(family: str, strategy: str) -> None:
    known = get_family(family)
    FAMILIES[family] = dataclasses.replace(known, strategies=tuple(s for s in known.strategies if s != strategy))


def add_entries(family: str, task: str, entries: tuple[Entry, ...]) -> None:
    """More rungs for ``family`` on ``task``'s ladder (a registered PEFT method's)."""
    added = ADDED_ENTRIES.setdefault((get_family(family).name, task), [])
    added += [e for e in entries if e.name not in {a.name for a in added}]


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise AdaptlabError(f"unknown family '{name}' (registered: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(strategy: str, where: str = "artifact") -> Family:
    """The family whose artifacts carry ``strategy`` in their manifest."""
    for family in FAMILIES.values():
        if strategy in family.strategies:
            return family
    raise AdaptlabError(f"{where}: strategy '{strategy}' belongs to no registered family (this adaptlab knows: "
                        f"{', '.join(s for f in FAMILIES.values() for s in f.strategies)})")


def generator_strategies() -> tuple[str, ...]:
    """Artifact strategies that hold a causal LM to generate with."""
    return tuple(s for f in FAMILIES.values() if f.generator for s in f.strategies)


def is_generator(strategy: str) -> bool:
    return strategy in generator_strategies()


def in_group(group: str) -> list[Family]:
    """The families whose command is in ``group``, in registration order."""
    return [f for f in FAMILIES.values() if f.command is not None and f.command[0] == group]


def ladder(task: str) -> dict[str, tuple[Entry, Family]]:
    """Every registered entry of ``task``'s ladder with the family that runs it, in registration order (cheapest
    family first, as the built-ins are registered)."""
    found: dict[str, tuple[Entry, Family]] = {}
    for family in FAMILIES.values():
        for entry in entries_of(family, task):
            if entry.name in found:
                raise AdaptlabError(f"{task} entry '{entry.name}' is registered by both '{found[entry.name][1].name}' "
                                    f"and '{family.name}'")
            found[entry.name] = (entry, family)
    return found


def entries_of(family: Family, task: str) -> tuple[Entry, ...]:
    """A family's entries on ``task`` (a reference is resolved: entries whose defaults come from a higher layer,
    such as the learning-rate table, are declared beside the code that runs them)."""
    entries = resolve(family.entries.get(task, ()))
    entries = tuple(entries.values()) if isinstance(entries, dict) else tuple(entries)
    return entries + tuple(ADDED_ENTRIES.get((family.name, task), ()))


def _register_builtins() -> None:
    """The families adaptlab ships, cheapest first (the order of the comparison ladders)."""
    register_family(Family(
        "prompting", "In-context prompting of a causal LM, no weights changed (generation ladder)", (),
        entries={"generation": (
            Entry("zero-shot", "prompting", {"shots": 0}, "the instruction prompt alone, no weights changed",
                  seeded=False, epochs=False),
            Entry("few-shot", "prompting", {"selection": "random"},
                  "k training conversations as earlier chat turns (draw kept on validation loss)", epochs=False),
            Entry("knn-shot", "prompting", {"selection": "nearest"},
                  "the k training examples nearest each prompt (minilm embeddings) as demonstrations", seeded=False,
                  epochs=False),
            Entry("rag", "rag", {"k": 3}, "the top-3 passages retrieved from --documents put before the prompt",
                  seeded=False, epochs=False, in_default_ladder=False, needs_option="documents"),
        )},
        compare="adaptlab.compare.generation:PROMPTING"))
    register_family(Family(
        "classifier", "Text classifiers: every adaptation strategy of an encoder or a causal LM",
        ("icl", "soft-prompt", "features", "head", "last-k", "full", "lora", "prefix-tuning", "p-tuning", "prompt-tuning",
         "setfit"),
        job="adaptlab.methods:get_strategy", train="adaptlab.runner:train", command=("train", "*"),
        cli="adaptlab.cli.train:add_commands", load="adaptlab.runner:Artifact",
        entries={"classification": "adaptlab.compare.classification:ENTRIES"},
        compare="adaptlab.compare.classification:CLASSIFIERS"))
    register_family(Family(
        "sft", "Supervised fine-tuning of a causal LM", ("sft",), generator=True, job="adaptlab.sft.job:SFTJob",
        train="adaptlab.sft:train_sft", command=("sft", "train"), cli="adaptlab.cli.sft:add_train",
        load="adaptlab.generation:Generator", entries={"generation": "adaptlab.compare.generation:SFT_ENTRIES"},
        compare="adaptlab.compare.generation:SFT"))
    register_family(Family(
        "reward", "Reward models on preference pairs (Bradley-Terry)", ("reward-model",),
        job="adaptlab.rlhf.reward:RewardModel", train="adaptlab.rlhf:train_reward_model", command=("rlhf", "reward"),
        cli="adaptlab.cli.rlhf:add_reward", load="adaptlab.rlhf.reward:RewardModel.load"))
    register_family(Family(
        "dpo", "Direct preference optimisation of a causal LM (TRL)", ("dpo-policy",), generator=True,
        job="adaptlab.rlhf.dpo:DPOPolicy", train="adaptlab.rlhf.dpo:train_dpo", command=("rlhf", "dpo"),
        cli="adaptlab.cli.rlhf:add_dpo", load="adaptlab.generation:Generator",
        entries={"generation": (Entry("dpo", "dpo", {"beta": 0.1}, "DPO on --preferences starting from the lora run "
                                      "(its cost included)", in_default_ladder=False, starts_from="lora",
                                      needs_option="preferences"),)},
        compare="adaptlab.compare.generation:DPO"))
    register_family(Family(
        "ppo", "PPO of a causal LM against a reward, with a KL penalty", ("ppo-policy",), generator=True,
        job="adaptlab.rlhf.ppo_config:PPOConfig", train="adaptlab.rlhf.ppo:train_ppo", command=("rlhf", "ppo"),
        cli="adaptlab.cli.rlhf:add_ppo", load="adaptlab.generation:Generator"))
    for name, job, title in (("orpo", "ORPOPolicy", "ORPO: odds-ratio preference optimisation, no reference model (TRL)"),
                             ("simpo", "SimPOPolicy", "SimPO: length-normalised preference optimisation, no reference model (TRL)"),
                             ("kto", "KTOPolicy", "KTO: thumbs up/down, unpaired feedback (TRL)")):
        register_family(Family(
            name, title, (f"{name}-policy",), generator=True, job=f"adaptlab.rlhf.{name}:{job}",
            train=f"adaptlab.rlhf.{name}:train_{name}", command=("rlhf", name), cli=f"adaptlab.cli.rlhf:add_{name}",
            load="adaptlab.generation:Generator",
            entries={"generation": (Entry(name, name, {}, f"{title.split(':')[0]} on --preferences starting from the lora "
                                          "run (its cost included)", in_default_ladder=False, starts_from="lora",
                                          needs_option="preferences", joins_when_given=False),)},
            compare=f"adaptlab.compare.generation:{name.upper()}"))
    register_family(Family(
        "grpo", "GRPO with reward functions (TRL)", ("grpo-policy",), generator=True, job="adaptlab.rlhf.grpo:GRPOPolicy",
        train="adaptlab.rlhf.grpo:train_grpo", command=("rlhf", "grpo"), cli="adaptlab.cli.rlhf:add_grpo",
        load="adaptlab.generation:Generator",
        entries={"generation": (Entry("grpo", "grpo", {}, "GRPO with --reward functions starting from the lora run (its "
                                      "cost included)", in_default_ladder=False, starts_from="lora", needs_option="reward"),)},
        compare="adaptlab.compare.generation:GRPO"))
    register_family(Family(
        "rloo", "RLOO with reward functions (TRL)", ("rloo-policy",), generator=True, job="adaptlab.rlhf.grpo:RLOOPolicy",
        train="adaptlab.rlhf.grpo:train_rloo", command=("rlhf", "rloo"), cli="adaptlab.cli.rlhf:add_rloo",
        load="adaptlab.generation:Generator"))
    register_family(Family(
        "retriever", "An embedding model tuned on (question, passage) pairs", ("retriever",),
        job="adaptlab.rag.retriever:RetrieverTuner", train="adaptlab.rag.retriever:train_retriever",
        command=("rag", "train-retriever"), cli="adaptlab.cli.rag:add_train_retriever",
        load="adaptlab.embeddings:Embedder"))



_register_builtins()
