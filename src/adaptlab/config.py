"""Typed run configurations, from YAML files or keyword arguments; unknown keys are errors.

A training run in YAML::

    strategy: features
    data: {source: rotten_tomatoes, train_size: 2000, seed: 0}
    params: {model: minilm, classifier: logreg, pooling: mean}
    output: runs/rt-features

Command-line options override the file, key by key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptlab.errors import AdaptlabError


@dataclass
class DataConfig:
    source: str | None = "rotten_tomatoes"  # None: the user's own splits (train_data, test_data) name the data
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    seed: int = 0
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    train_data: str | None = None  # the user's own splits, kept as given (``adaptlab.data.given``)
    val_data: str | None = None
    test_data: str | None = None
    keep_splits: bool = False  # a Hub dataset's named splits instead of adaptlab's cut
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    train_per_class: int | None = None  # a learning curve's point (``compare --train-sizes``)

    def __post_init__(self) -> None:
        for name in ("seed", "train_size", "val_size", "test_size", "train_per_class"):
            value = getattr(self, name, None)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise AdaptlabError(f"data option '{name}' must be an integer, not {value!r}")
            if name != "seed" and value is not None and value < 1:
                raise AdaptlabError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise AdaptlabError(f"--{name.replace('_', '-')} must be a fraction between 0 and 1, not {value!r}")
        if self.test_fraction + self.val_fraction >= 1:
            raise AdaptlabError(f"--test-fraction {self.test_fraction} and --val-fraction {self.val_fraction} leave no "
                                "training rows; make their sum less than 1")
        own = self.train_data or self.val_data or self.test_data
        if own and self.source not in (None, type(self).source, self.train_data):
            raise AdaptlabError(f"give --data '{self.source}' or your own splits (--train-data, --test-data), not both")
        if own:
            self.source = self.train_data or self.source  # what the outputs are named after
        elif self.source is None:
            raise AdaptlabError("no data: give --data, or your own splits with --train-data and --test-data")

    def load(self):
        """The splits ``adaptlab.load_splits`` gives for these options: the public facade sits above every module,
        so none imports it."""
        from adaptlab.data import load_data, split_data
        from adaptlab.data.given import load_given

        columns = {"text_column": self.text_column, "label_column": self.label_column, "id_column": self.id_column}
        if self.train_data or self.val_data or self.test_data:
            data = load_given({"train": self.train_data, "val": self.val_data, "test": self.test_data}, **columns)
        else:
            data = load_data(self.source, keep_splits=self.keep_splits, **columns)
        return split_data(data, seed=self.seed, train_size=self.train_size, val_size=self.val_size, test_size=self.test_size,
                          test_fraction=self.test_fraction, val_fraction=self.val_fraction, train_per_class=self.train_per_class)


@dataclass
class TrainConfig:
    strategy: str
    data: DataConfig = field(default_factory=DataConfig)
    params: dict[str, Any] = field(default_factory=dict)
    output: str | None = None


def validated(schema: Any, values: Any, where: str) -> Any:
    """``values`` checked against ``schema`` with strict types (a list is not a column name, "5" is not a seed),
    through pydantic; a dataclass is then built from them. The first error is one line naming where the value
    came from, the field and what was expected."""
    from pydantic import TypeAdapter, ValidationError

    shape = _fields_of(schema) if dataclasses.is_dataclass(schema) else schema
    try:
        checked = TypeAdapter(shape).validate_python(values, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise AdaptlabError(f"{where}: {_field_path(values, error['loc']) or 'value'}: {error['msg'][0].lower()}"
                            f"{error['msg'][1:]}, not {error['input']!r}") from None
    return schema(**checked) if dataclasses.is_dataclass(schema) else checked


def _field_path(values: Any, location: tuple) -> str:
    """``models`` rather than pydantic's ``models.list[str]``: the part of an error's location found in the input
    (the rest names union members)."""
    parts = []
    for part in location:
        if not ((isinstance(values, dict) and part in values)
                or (isinstance(values, list) and isinstance(part, int) and part < len(values))):
            break
        parts.append(str(part))
        values = values[part]
    return ".".join(parts)


def _fields_of(dataclass_type: type) -> Any:
    """A dataclass's fields as a TypedDict (every key optional: the dataclass fills in its defaults)."""
    import typing

    from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12 on

    hints = typing.get_type_hints(dataclass_type)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(dataclass_type)}
    return TypedDict(f"{dataclass_type.__name__}Fields", fields, total=False)  # type: ignore[operator]


def check_keys(given: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise AdaptlabError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; learning rates are written that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"config file '{path}' does not exist; check the path")
    if not path.is_file():
        raise AdaptlabError(f"config file '{path}' is a directory; pass a YAML file")
    try:
        content = parse_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AdaptlabError(f"config file '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise AdaptlabError(f"config file '{path}' must be a mapping of keys to values")
    return content


def section(base: dict, name: str, where: str) -> dict:
    """A YAML section that must be a mapping (``data: [1, 2]`` is a one-line error, not a TypeError)."""
    value = base.get(name) or {}
    if not isinstance(value, dict):
        raise AdaptlabError(f"{where}: section '{name}' must be a mapping of keys to values, not {type(value).__name__}")
    return dict(value)


def check_file_values(base: dict, data_schema: type, where: str) -> None:
    """The file's own values are checked even where the command line overrides them: a wrong type in the YAML is a
    mistake in the file, whatever this run takes from it."""
    if base.get("data"):
        validated(data_schema, section(base, "data", where), f"{where}, section data")
    if base.get("output") is not None and not isinstance(base["output"], str):
        raise AdaptlabError(f"{where}: output must be a directory path (a string), not {base['output']!r}")


def train_config(strategy: str, yaml_path: str | Path | None, data: dict, params: dict, output: str | None) -> TrainConfig:
    """Merge a YAML file (if any) with command-line values (``None`` = not given) into a checked config."""
    from adaptlab.methods import get_strategy

    base = read_yaml(yaml_path) if yaml_path is not None else {}  # --config "" is refused, not ignored
    where = f"config file '{yaml_path}'" if yaml_path else "options"
    check_keys(base, {"strategy", "data", "params", "output"}, where)
    if base.get("strategy", strategy) != strategy:
        raise AdaptlabError(f"{where} is for strategy '{base['strategy']}', not '{strategy}'")
    data_values = section(base, "data", where)
    check_keys(data_values, {f.name for f in dataclasses.fields(DataConfig)}, f"{where}, section data")
    check_file_values(base, DataConfig, where)
    data_values.update({k: v for k, v in data.items() if v is not None})
    param_values = section(base, "params", where)
    get_strategy(strategy).check_params(param_values, f"{where}, section params")
    if param_values:  # the file's values alone (types and bounds), before the command line overrides any
        try:
            get_strategy(strategy)(**param_values)
        except AdaptlabError as exc:
            raise AdaptlabError(f"{where}, section params: {exc}") from None
    param_values.update({k: v for k, v in params.items() if v is not None})
    return TrainConfig(
        strategy=strategy,
        data=validated(DataConfig, data_values, f"{where}, section data"),
        params=param_values,
        output=base.get("output") if output is None else output,
    )


@dataclass
class GenerationDataConfig:
    """The ``data`` section of an SFT config (``adaptlab sft train --config``)."""

    source: str = "wiki-descriptions"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    text_column: str = "text"
    system: str | None = None
    seed: int = 0
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    train_data: str | None = None  # the user's own splits, as for classification
    val_data: str | None = None
    test_data: str | None = None
    test_fraction: float = 0.1
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        DataConfig.__post_init__(self)  # the same checks of seed, sizes, fractions and own splits

    def load(self):
        from adaptlab.data.generation import load_generation_splits

        values = dataclasses.asdict(self)
        return load_generation_splits(values.pop("source"), **values)


def sft_config(yaml_path: str | Path | None, data: dict, params: dict, output: str | None) -> TrainConfig:
    """An SFT run's YAML (sections ``data``, ``params``, ``output``) merged with command-line values (None = not given)."""
    from adaptlab.params import check_names, coerce_all
    from adaptlab.sft.job import SFTJob

    base = read_yaml(yaml_path) if yaml_path is not None else {}  # --config "" is refused, not ignored
    where = f"config file '{yaml_path}'" if yaml_path else "options"
    check_keys(base, {"data", "params", "output"}, where)
    data_values = section(base, "data", where)
    check_keys(data_values, {f.name for f in dataclasses.fields(GenerationDataConfig)}, f"{where}, section data")
    check_file_values(base, GenerationDataConfig, where)
    data_values.update({("source" if k == "data" else k): v for k, v in data.items() if v is not None})
    param_values = section(base, "params", where)
    check_names(SFTJob, param_values, f"{where}, section params", "SFT")
    param_values = coerce_all(SFTJob, param_values, f"{where}, section params")
    if param_values:  # the file's values alone (types and bounds), before the command line overrides any
        try:
            SFTJob(**param_values)
        except AdaptlabError as exc:
            raise AdaptlabError(f"{where}, section params: {exc}") from None
    param_values.update({k: v for k, v in params.items() if v is not None})
    param_values.setdefault("seed", data_values.get("seed", 0))
    return TrainConfig(strategy="sft", data=validated(GenerationDataConfig, data_values, f"{where}, section data"),
                       params=param_values,
                       output=base.get("output") if output is None else output)
