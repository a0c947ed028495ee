"""``compare --tune N``: each gradient entry gets its learning rate (and LoRA rank) chosen on validation.

A ladder's defaults were chosen on binary sentiment; on another task an untuned entry can look useless when it
is only untrained (LoRA at 50% on an 11-class task, where a tuned LoRA is near the best). So, per (model, entry),
an Optuna study (TPE sampler, median pruner) runs ``N`` trials before the entry's runs:

- trial 0 is the entry's own settings, so tuning never picks something worse on validation than the default;
- trials 1 and 2 are a line search on the learning rate, the knob that matters most: halfway (on the log scale)
  from the entry's rate to each bound (3.16x and 0.316x for the default tenth-to-tenfold range), the other
  settings the entry's own. Three random draws in a 100x range can all land near the default (seeded
  alike, every entry drew 1.25x and 0.76x in the first measured run, and 6 of 7 entries kept their defaults);
  the line search covers the range in three trials. Further trials are TPE's;
- each trial trains on the training split and is scored on the validation split (macro-F1): the trials get the
  training and validation sets only, the test set is never passed to them;
- after every epoch past the first half of the entry's planned epochs, a trial reports its validation accuracy,
  and one below the median of earlier trials at the same epoch is stopped (pruned). Earlier pruning stopped slow
  starters (a lower rate is behind after one epoch by construction) before they could catch up;
- the best settings are then trained once per seed by the ordinary run, and tested once.

The study lives in ``runs/<model>/<entry>/tuning/`` (an Optuna journal file), shared by the entry's seeds: an
interrupted comparison resumes it, re-running an interrupted trial with the same settings from its checkpoint.
The trials' wall time is the entry's tuning cost, reported separately and added to its training time.

Search space per parameter, ``[low, high]``: ``lr`` on a log scale (default: a tenth to ten times the entry's
rate), integers (LoRA ``r``: 4 to 16) on a log scale too; ``epochs`` (an explicit ``--epochs`` to three times it)
only for entries without a step budget, since the budget's early stopping decides when training has converged;
YAML ``tune: {trials: 6, params: {lora: {lr: [1e-4, 3e-3], r: [4, 16]}}}`` overrides them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

from adaptlab.errors import AdaptlabError

#: entries whose strategy trains by gradient descent (the others have nothing to tune or tune themselves:
#: features-logreg picks C on validation, prompting picks demonstrations on validation)
TUNED_STRATEGIES = ("head", "last-k", "full", "lora", "prefix-tuning", "p-tuning", "prompt-tuning", "soft-prompt")
OBJECTIVE = "validation macro-F1"
LR_CEILING = 1.0
#: each trial is a training run: past this a search costs days on the CPUs it is meant for
MAX_TRIALS = 100


def entry_defaults(strategy: str, params: dict) -> dict:
    """The entry's own value of every parameter: its setting, else the strategy's default."""
    from adaptlab.methods import get_strategy

    return {f.name: params.get(f.name, f.default) for f in dataclasses.fields(get_strategy(strategy))}


def default_space(strategy: str, params: dict) -> dict[str, list]:
    """lr around the entry's own rate, LoRA's rank, and, for an entry that trains a fixed number of epochs (an
    explicit ``--epochs``), epochs from that count up to three times it; an entry with a step budget stops when
    validation stops improving, so its epochs are not searched."""
    own = entry_defaults(strategy, params)
    lr, epochs = own["lr"], own["epochs"]
    space = {"lr": [lr / 10, min(lr * 10, LR_CEILING)]}
    if own["max_steps"] is None:
        space["epochs"] = [epochs, 3 * epochs]
    if strategy == "lora":
        space["r"] = [4, 16]
    return space


def check_space(entry: str, strategy: str, space: dict) -> dict[str, list]:
    """Every tuned parameter is one the strategy takes, as ``[low, high]`` with 0 < low < high (whole numbers
    for integer parameters); one line naming the entry and the parameter otherwise."""
    from adaptlab.methods import get_strategy

    fields = {f.name: f for f in dataclasses.fields(get_strategy(strategy))}
    checked = {}
    for name, bounds in space.items():
        where = f"tune.params.{entry}.{name}"
        if name not in fields or name in ("seed", "model", "device", "progress", "resume", "callbacks"):
            raise AdaptlabError(f"{where}: '{strategy}' has no tunable parameter '{name}'")
        integer = fields[name].type in (int, "int")
        ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
              and all(math.isfinite(b) for b in bounds) and 0 < bounds[0] < bounds[1]
              and (not integer or all(float(b).is_integer() for b in bounds)))
        if not ok:
            kind = "whole numbers" if integer else "numbers"
            raise AdaptlabError(f"{where} must be [low, high], finite {kind} with 0 < low < high, not {bounds!r}")
        checked[name] = [int(b) for b in bounds] if integer else [float(b) for b in bounds]
        for bound in checked[name]:  # both ends must be values the strategy itself accepts, or every trial dies
            try:
                get_strategy(strategy)(**{name: bound})
            except AdaptlabError as exc:
                raise AdaptlabError(f"{where}: the bound {bound!r} is not a valid value: {exc}") from None
    return checked


def tuning_settings(tune: int | dict | None, preset_trials: int, entries) -> tuple[int, dict]:
    """(trials, {entry: {param: [low, high]}}) from a plan's ``tune``: an int, a mapping, or None (the preset's);
    the ranges come back checked (see ``check_space``)."""
    from adaptlab.config import check_keys

    tune = preset_trials if tune is None else tune
    if isinstance(tune, dict):
        check_keys(tune, {"trials", "params"}, "tune")
        trials, spaces = tune.get("trials", preset_trials or 3), tune.get("params") or {}
    else:
        trials, spaces = tune, {}
    if isinstance(trials, bool) or not isinstance(trials, int) or not 0 <= trials <= MAX_TRIALS:
        raise AdaptlabError(f"--tune must be a whole number of trials from 0 (no tuning) to {MAX_TRIALS}, not {trials!r}")
    if not isinstance(spaces, dict) or not all(isinstance(v, dict) for v in spaces.values()):
        raise AdaptlabError("tune.params must map entry names to {parameter: [low, high]}")
    checked = {}
    for name, space in spaces.items():  # checked before any model loads, so a typo costs no waiting
        if name not in entries:
            raise AdaptlabError(f"tune.params: unknown entry '{name}' (available: {', '.join(entries)})")
        if trials and entries[name].strategy not in TUNED_STRATEGIES:
            raise AdaptlabError(f"tune.params.{name}: the {name} entry is not tuned (tuned: {', '.join(TUNED_STRATEGIES)})")
        checked[name] = check_space(name, entries[name].strategy, space)
    return trials, checked


def entry_tuning(trials: int, spaces: dict, entry: str, strategy: str, params: dict) -> dict | None:
    """What a run of this entry tunes (``{"trials", "space"}``), or None: no trials, or nothing to tune.
    ``spaces`` are the checked ranges ``tuning_settings`` returns."""
    if trials == 0 or strategy not in TUNED_STRATEGIES:
        return None
    return {"trials": trials, "space": {**default_space(strategy, params), **spaces.get(entry, {})}}


def tune(strategy: str, params: dict, space: dict[str, list], trials: int, train, val, directory: Path) -> dict:
    """Run (or resume) the study in ``directory`` on ``train`` and ``val`` only; returns what the report shows:
    every trial (settings, state, validation scores, seconds), the best settings and the total seconds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directory.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(directory / "study.log")))
    own = entry_defaults(strategy, params)
    own["epochs"] = _planned_epochs(strategy, params, train)
    start = start_trials(own, space)
    study = optuna.create_study(study_name="tune", storage=storage, direction="maximize", load_if_exists=True,
                                # after the enqueued start: half the rest spread at random (seeded), then TPE
                                sampler=optuna.samplers.TPESampler(
                                    seed=0, n_startup_trials=min(10, len(start) + max(0, trials - len(start)) // 2)),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=own["epochs"] // 2))
    if not study.trials:
        for settings in start[:max(1, trials)]:
            study.enqueue_trial(settings)
    _requeue_interrupted(study)
    remaining = trials - _finished(study)
    if remaining > 0:
        study.optimize(lambda trial: _objective(trial, strategy, params, space, train, val, directory), n_trials=remaining,
                       catch=(AdaptlabError,))
    return summarise_study(study)


def start_trials(own: dict, space: dict[str, list]) -> list[dict]:
    """The entry's own settings (those inside the space; epochs as the run would plan them), then the learning
    rate's line search: halfway on the log scale from the centre (the entry's rate, else the space's geometric
    middle) to the upper bound, then to the lower one, everything else unchanged."""
    inside = {name: own[name] for name, (low, high) in space.items() if low <= own[name] <= high}
    if "lr" not in space:
        return [inside]
    low, high = space["lr"]
    centre = inside.get("lr", (low * high) ** 0.5)
    return [inside, {**inside, "lr": (centre * high) ** 0.5}, {**inside, "lr": (centre * low) ** 0.5}]


def tuned_params(params: dict, chosen: dict) -> dict:
    """An entry's settings with a trial's (or the best trial's) values: a tuned epoch count is taken as it is,
    with no step budget cutting it short."""
    return {**params, **chosen, **({"max_steps": None} if "epochs" in chosen else {})}


def _planned_epochs(strategy: str, params: dict, train) -> int:
    from adaptlab.methods import get_strategy

    options = get_strategy(strategy)(**params)
    return options.epoch_budget(-(-len(train) // options.batch_size))


def _objective(trial, strategy: str, params: dict, space: dict, train, val, directory: Path) -> float:
    import optuna

    from adaptlab.data.splits import Splits
    from adaptlab.progress import stderr
    from adaptlab.runner import train as train_strategy

    chosen = {}
    for name, (low, high) in space.items():
        integer = isinstance(low, int) and isinstance(high, int)
        chosen[name] = (trial.suggest_int(name, low, high, log=True) if integer
                        else trial.suggest_float(name, low, high, log=True))
    out = directory / f"trial-{hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:10]}"
    resume = (out.parent / f"{out.name}.work" / "checkpoints" / "last.ckpt").exists()
    stderr.print(f"  tuning trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in chosen.items())
                 + (" (resumed)" if resume else ""))
    started, settled = time.perf_counter(), False  # settled: the trial will not be resumed (done, pruned, refused)
    try:
        # the validation split stands in for the test split: the trial never receives the real one
        result = train_strategy(strategy, Splits(train, val, val, seed=0), out, overwrite=True,
                                **{**tuned_params(params, chosen), "progress": False, "callbacks": [_pruning_callback(trial)]},
                                **({"resume": True} if resume else {}))
        settled = True
    except (optuna.TrialPruned, AdaptlabError):
        settled = True
        raise
    finally:  # interrupted or not, the attempt's time counts
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr("settled", settled)
        if settled:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out.parent / f"{out.name}.work", ignore_errors=True)
    scores = result.manifest["metrics"]["val"]
    trial.set_user_attr("val_accuracy", scores["accuracy"])
    return float(scores["macro_f1"])


def _pruning_callback(trial):
    """A Lightning callback: report each epoch's validation accuracy; stop a trial the median pruner gives up on."""
    import optuna
    from lightning.pytorch.callbacks import Callback

    class Pruning(Callback):
        def on_validation_end(self, trainer, module) -> None:
            value = trainer.callback_metrics.get("val_acc")
            if value is None or trainer.sanity_checking:
                return
            trial.report(float(value), trainer.current_epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {float(value):.3f} after epoch {trainer.current_epoch + 1}")

    return Pruning()


def _finished(study) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _requeue_interrupted(study) -> None:
    """A trial cut short (Ctrl-C: failed; kill -9: left running) is queued again with the same settings, so it
    continues from its checkpoint, unless those settings already finished or wait in the queue. A trial whose
    settings were refused is settled: it is not run again."""
    from optuna.trial import TrialState

    settled = [t.params for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)]
    for trial in study.trials:
        if (trial.state in (TrialState.RUNNING, TrialState.FAIL) and not trial.user_attrs.get("settled")
                and trial.params and trial.params not in settled):
            study.enqueue_trial(trial.params)
            settled.append(trial.params)


def summarise_study(study) -> dict:
    from optuna.trial import TrialState

    # a pruned trial has no final score: its last reported value is an epoch's validation accuracy
    last_reported = lambda t: t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
    rows = [{"number": t.number, "params": t.params, "state": t.state.name.lower(),
             "val_macro_f1": t.value if t.state == TrialState.COMPLETE else None,
             "val_accuracy": t.user_attrs.get("val_accuracy", last_reported(t)),
             "epochs_run": len(t.intermediate_values), "seconds": t.user_attrs.get("seconds", 0.0)}
            for t in study.trials if t.state != TrialState.WAITING]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise AdaptlabError("tuning: no trial finished (every one failed or was pruned); see the trials in the report")
    best = max(complete, key=lambda t: (t.value, -t.number))
    return {"objective": OBJECTIVE, "trials": rows, "best": best.params, "best_trial": best.number,
            "seconds": round(sum(row["seconds"] for row in rows), 2)}


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
