"""One rung of a comparison's ladder: a strategy with the parameters that make it that rung.

Both ladders are made of entries: classification's (``adaptlab.compare.plan``) and generation's
(``adaptlab.compare.generation``). The plan chooses between them, so the type they share lives here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    strategy: str
    params: dict
    description: str
    #: "decoder": needs a causal LM (prompting); "any": runs on any model
    needs: str = "any"
    #: False when the result cannot depend on the training seed (then it runs once and counts for every seed)
    seeded: bool = True
    #: whether the entry takes training epochs
    epochs: bool = True
    in_default_ladder: bool = True
    #: its good learning rate moves most between tasks: the presets that say so run ``--lr-search`` for it (unless
    #: ``--tune`` searches its settings)
    lr_sensitive: bool = False
