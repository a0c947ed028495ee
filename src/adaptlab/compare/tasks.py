"""The comparison tasks: one pipeline, two kinds of task. ``task == "generation"`` is decided here and nowhere else.

A ``Task`` owns what differs between classification and generation: its data options, presets and default models,
the checks only it makes, and its summary and report. Its ladder is not listed here: every registered family
contributes entries to the tasks it serves (``adaptlab.families``), each with the ``EntryRunner`` that plans and runs
it. ``plan_runs`` is the one planning loop for every task: entries in ladder order, each on the models its runner
targets, with the preset's parameters, the user's overrides, checks, and any tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adaptlab.compare.runs import EntryRunner, ModelInfo, Run
from adaptlab.errors import AdaptlabError
from adaptlab.families import Entry, Family, Ref, ladder, resolve


@dataclass(frozen=True)
class Task:
    name: str
    data_config: Ref  # the data options' dataclass (DataConfig or GenerationDataConfig)
    presets: dict
    default_models: tuple[str, ...]
    check: Callable[[Any], None]  # what only this task refuses in a plan
    summarise: Ref  # (plan, data, runs, output, wall_seconds) -> results.json's content
    write_report: Ref  # (results, path) -> None
    leaderboard: Ref  # (results) -> the rich table the command line prints
    check_models: Callable[[list[str], dict[str, ModelInfo]], None] = lambda models, info: None
    #: the data was read as the other task's: convert (``DataConfig`` -> ``GenerationDataConfig``) or refuse
    adopt_data: Callable[[Any], Any] = lambda data: data

    def entries(self) -> dict[str, tuple[Entry, Family]]:
        """Every registered entry of this task, in ladder order, with its family."""
        return ladder(self.name)

    def runner(self, name: str) -> EntryRunner:
        return resolve(self.entries()[name][1].compare)


def _generation_data(data):
    from adaptlab.config import DataConfig, GenerationDataConfig

    if isinstance(data, DataConfig):
        keys = ("source", "seed", "train_size", "val_size", "test_size", "train_data", "val_data", "test_data", "val_fraction")
        return GenerationDataConfig(**{k: getattr(data, k) for k in keys})
    return data


def _classification_data(data):
    from adaptlab.config import GenerationDataConfig

    if isinstance(data, GenerationDataConfig):
        raise AdaptlabError(f"data '{data.source}' was given as generation data; use --task generation")
    return data


def _tasks() -> dict[str, Task]:
    from adaptlab.compare import classification, generation

    return {
        "classification": Task("classification", "adaptlab.config:DataConfig", classification.PRESETS,
                               classification.DEFAULT_MODELS, classification.check_plan,
                               "adaptlab.compare.summary:summarise", "adaptlab.compare.report:write_report",
                               "adaptlab.compare.report:leaderboard_table", adopt_data=_classification_data),
        "generation": Task("generation", "adaptlab.config:GenerationDataConfig", generation.GENERATION_PRESETS,
                           generation.DEFAULT_GENERATION_MODELS, generation.check_plan,
                           "adaptlab.compare.generation_summary:summarise", "adaptlab.compare.generation_report:write_report",
                           "adaptlab.compare.generation_report:leaderboard_table", check_models=generation.check_models, adopt_data=_generation_data),
    }


TASKS = _tasks()


def get_task(name: str | None) -> Task:
    if name not in TASKS:
        raise AdaptlabError(f"--task must be {' or '.join(TASKS)}, not '{name}'")
    return TASKS[name]


def runner_for(strategy: str) -> EntryRunner:
    """The runner of a stored run's spec (its ``strategy``: a classifier strategy or a family's run kind)."""
    for task in TASKS.values():
        for entry, family in task.entries().values():
            if entry.strategy == strategy:
                return resolve(family.compare)
    raise AdaptlabError(f"no registered family runs comparison entries of strategy '{strategy}'")


def check_entries(task: Task, plan) -> None:
    """Entry names in ``--strategies`` and ``params`` exist; entries that need an input have it; an entry that starts
    from another's run is listed with it."""
    entries = task.entries()
    for name in plan.strategies or []:
        if name not in entries:
            raise AdaptlabError(f"--strategies: unknown entry '{name}' for {task.name} (available: {', '.join(entries)})")
    for name, overrides in plan.params.items():
        if name != "all" and name not in entries:
            raise AdaptlabError(f"parameter overrides for unknown entry '{name}' (available: all, {', '.join(entries)})")
        if not isinstance(overrides, dict):
            raise AdaptlabError(f"parameter overrides for '{name}' must be a mapping, not {overrides!r}")
    chosen = plan.strategies or []
    for name in chosen:
        entry = entries[name][0]
        if entry.needs_option and not getattr(plan, entry.needs_option):
            raise AdaptlabError(f"the {name} entry needs --{entry.needs_option}")
        if entry.starts_from and entry.starts_from not in chosen:
            raise AdaptlabError(f"the {name} entry starts from the {entry.starts_from} run: list {entry.starts_from} "
                                "in --strategies too")


def plan_runs(task: Task, plan, models: dict[str, ModelInfo]) -> list[Run]:
    """Every run of ``plan``, in ladder order: the default ladder (plus the entries whose input option was given)
    unless ``--strategies`` names entries; overrides under ``all`` reach the entries that take them."""
    task.check_models(plan.models, models)
    entries, preset = task.entries(), task.presets[plan.preset]
    names = plan.strategies or [n for n, (e, _) in entries.items()
                                if e.in_default_ladder or (e.needs_option and e.joins_when_given and getattr(plan, e.needs_option))]
    runs, takers = [], set()
    for name in sorted(names, key=list(entries).index):
        entry, family = entries[name]
        runner: EntryRunner = resolve(family.compare)
        takes = runner.param_names(entry)
        takers |= takes
        for model in runner.targets(entry, plan.models, models):
            params = runner.params(entry, model, plan, preset, models[model])
            if entry.needs_option:
                params[entry.needs_option] = getattr(plan, entry.needs_option)
            if plan.device:
                params["device"] = plan.device
            params.update({k: v for k, v in plan.params.get("all", {}).items() if k in takes})
            params.update(plan.params.get(name, {}))
            runner.check(entry, params)
            params, tune = runner.finish(entry, params, plan, preset)
            for seed in range(plan.seeds) if entry.seeded else [0]:
                runs.append(Run(name, entry.strategy, model, seed, params, tune))
    for key in plan.params.get("all", {}):
        if key not in takers:
            raise AdaptlabError(f"--set all.{key}: no selected entry takes a parameter '{key}'")
    if not runs:
        raise AdaptlabError(f"no run matches: entries {', '.join(names)} need a model kind missing from --models "
                            f"{','.join(plan.models)}")
    return runs
