"""A 3-point learning-rate line search before training (``--lr-search``), for the methods whose good rate moves
most between tasks (prompt, prefix and P-tuning, soft prompts, SFT prefix tuning).

Each candidate (``lr / 3``, ``lr``, ``3 * lr``) trains from the same starting weights for one epoch or
``TRIAL_STEPS`` optimiser steps, whichever is shorter (a range test needs a few steps, not a pass over a large
training set: on CLINC150 an epoch was 47 steps, three trials longer than the run they chose for); the one with the
lowest validation loss after it is kept, the weights go back to the start, and the real run trains with
it. Validation only decides (never the test split); the trials' time is part of the run's training time and each
trial is recorded in the run's report. A resumed run reads the rate its first attempt chose, so it continues the
same schedule. ``--tune N`` in ``compare`` remains the full search over every hyper-parameter.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from adaptlab.runtime import Runtime
    from adaptlab.training.data import BatchDataModule
    from adaptlab.training.options import TrainingOptions

FACTORS = (1 / 3, 1.0, 3.0)
TRIAL_STEPS = 16
CHOSEN = "chosen.json"


def search_lr(model: torch.nn.Module, data: BatchDataModule, options: TrainingOptions, workdir: Path, runtime: Runtime,
              objective: str, module_options: dict | None, fit: Callable) -> tuple[float, list[dict]]:
    """The learning rate to train with and the trials that chose it (``[{"lr", "val_loss", "seconds"}]``).

    ``fit`` trains one trial: the engine's ``fit_module``, which calls this search and so passes itself in."""
    folder = workdir / "lr-search"
    if options.resume and (folder / CHOSEN).is_file():
        record = json.loads((folder / CHOSEN).read_text(encoding="utf-8"))
        return float(record["lr"]), record["trials"]
    shutil.rmtree(folder, ignore_errors=True)
    start = _trainable_state(model)
    trials = []
    for number, factor in enumerate(FACTORS):
        trial = dataclasses.replace(options, lr=options.lr * factor, lr_search=False, patience=None, max_steps=None,
                                    max_minutes=None, resume=False, logger="none", progress=False, callbacks=[])
        report = fit(model, data, trial, folder / f"trial-{number}", runtime, objective, epochs=1,
                            module_options=module_options, limit_train_batches=TRIAL_STEPS * options.grad_accum)
        trials.append({"lr": trial.lr, "val_loss": report.final_val_loss, "steps": report.steps,
                       "seconds": round(report.seconds, 2)})
        _restore(model, start)
    usable = [t for t in trials if t["val_loss"] is not None and t["val_loss"] == t["val_loss"]]  # not NaN
    chosen = min(usable, key=lambda t: t["val_loss"])["lr"] if usable else options.lr
    for number in range(len(FACTORS)):  # the trials' checkpoints are not needed once the rate is chosen
        shutil.rmtree(folder / f"trial-{number}", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHOSEN).write_text(json.dumps({"lr": chosen, "trials": trials}), encoding="utf-8")
    return chosen, trials


def _trainable_state(model: torch.nn.Module) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _restore(model: torch.nn.Module, state: dict) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])
