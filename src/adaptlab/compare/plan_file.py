"""A comparison described in YAML (``adaptlab compare --config``) and ``--set`` overrides, parsed into a checked
``ComparePlan``: the file's keys and types are declared once (``PlanFile``) and checked strictly, so ``models: 5``
or ``params: [1, 2]`` is one line naming the key, never a TypeError minutes later."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12 on

from adaptlab.compare.plan import ComparePlan
from adaptlab.config import DataConfig, GenerationDataConfig, check_keys, parse_yaml, read_yaml, validated
from adaptlab.data.generation import infer_task
from adaptlab.errors import AdaptlabError


class PlanFile(TypedDict, total=False):
    """What a comparison YAML file may hold, with the types it must have (checked strictly by pydantic)."""

    data: dict[str, Any]
    task: str
    preset: str
    models: list[str] | str
    strategies: list[str] | str
    seeds: int
    epochs: int | None
    params: dict[str, dict[str, Any] | None]
    metric: str
    train_sizes: list[int | str] | str
    documents: list[str] | str
    preferences: str
    reward: list[str] | str
    output: str
    device: str
    tune: int | dict[str, Any] | None


PLAN_KEYS = set(PlanFile.__annotations__)


def compare_plan(yaml_path: str | Path | None, data: dict, options: dict) -> ComparePlan:
    """Merge a comparison YAML file (if any) with command-line values (``None`` = not given).

    ::

        data: {source: rotten_tomatoes, seed: 0}     # or wiki-descriptions / chat JSONL (task: generation)
        preset: standard
        models: [minilm, smollm2-135m]
        strategies: [zero-shot, features-logreg, head, lora, full]
        seeds: 3
        params: {all: {batch_size: 16}, lora: {r: 16}}
        tune: {trials: 6, params: {lora: {lr: [1e-4, 3e-3], r: [4, 16]}}}   # or tune: 6; classification only
        output: runs/compare-rt
    """
    base = read_yaml(yaml_path) if yaml_path is not None else {}  # --config "" is refused, not ignored
    where = f"config file '{yaml_path}'" if yaml_path else "options"
    check_keys(base, PLAN_KEYS, where)
    base = validated(PlanFile, base, where)
    if yaml_path:
        _check_file_alone(base, where)
    data_values = dict(base.pop("data", None) or {})
    data_values.update({k: v for k, v in data.items() if v is not None})
    values = {**base, **{k: v for k, v in options.items() if v is not None}}
    if values.get("task") == "":
        raise AdaptlabError("--task is empty; give classification or generation (or leave it out to infer it)")
    task = values.get("task") or infer_task(str(data_values.get("source") or data_values.get("train_data") or DataConfig.source))
    config = data_config_class(task)
    check_keys(data_values, {f.name for f in dataclasses.fields(config)}, f"{where}, section data ({task} data)")
    values["task"] = task
    for key in ("models", "strategies", "documents"):
        if isinstance(values.get(key), str):
            values[key] = [part.strip() for part in values[key].split(",") if part.strip()]
            if not values[key]:  # "--strategies ," must not mean "everything"
                raise AdaptlabError(f"--{key} lists nothing; give comma-separated names or leave the option out")
    overrides = {name: dict(p) if isinstance(p, dict) else p for name, p in (base.get("params") or {}).items()}
    for name, extra in (options.get("params") or {}).items():
        overrides.setdefault(name, {}).update(extra)
    values["params"] = overrides
    plan = ComparePlan(data=validated(config, data_values, f"{where}, section data"), **values)
    plan.check()
    return plan


def _check_file_alone(base: dict, where: str) -> None:
    """The file's own values checked as a plan of their own, even where the command line overrides them (a wrong
    size or an unknown strategy in the YAML is a mistake in the file, whatever this run takes from it)."""
    values = {k: v for k, v in base.items() if k != "data"}
    data = dict(base.get("data") or {})
    task = values.get("task") or infer_task(str(data.get("source") or data.get("train_data") or DataConfig.source))
    config = data_config_class(task)
    check_keys(data, {f.name for f in dataclasses.fields(config)}, f"{where}, section data ({task} data)")
    for key in ("models", "strategies", "documents"):
        if isinstance(values.get(key), str):
            values[key] = [part.strip() for part in values[key].split(",") if part.strip()]
    ComparePlan(data=validated(config, data, f"{where}, section data"), **{**values, "task": task}).check()


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``--set lora.r=16 --set all.batch_size=16`` -> ``{"lora": {"r": 16}, "all": {"batch_size": 16}}``
    (values parsed as YAML scalars, so numbers and booleans get their types)."""
    overrides: dict[str, dict] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        key, eq, raw = rest.partition("=")
        if not (dot and eq and name and key):
            raise AdaptlabError(f"--set '{item}' must look like ENTRY.PARAM=VALUE, e.g. lora.r=16 or all.batch_size=16")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            raise AdaptlabError(f"--set '{item}': the value is not valid YAML ({str(exc).splitlines()[0]}); "
                                "quote it, e.g. lora.target_modules='[query, value]'") from None
        overrides.setdefault(name, {})[key.replace("-", "_")] = value
    return overrides


def data_config_class(task: str) -> type:
    """The data options' dataclass of ``task`` (a task that does not exist is refused by name)."""
    from adaptlab.compare.tasks import get_task
    from adaptlab.families import resolve

    return resolve(get_task(task).data_config)
