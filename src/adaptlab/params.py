"""One source of truth for every job's parameters: dataclass fields with help text next to the default.

In the spirit of PEFT's and TRL's config classes, a strategy (or any job config) is a dataclass whose fields
are its parameters, declared with ``param(default, help, ...)``. From those fields come, without a second
list anywhere: the constructor (which only stores and checks values: scikit-learn's contract), ``get_params``,
the ``adaptlab train STRATEGY`` options with their defaults in ``--help``, YAML validation (unknown keys and
wrong types are errors) and ``compare --set ENTRY.PARAM=VALUE`` parsing.

Checks declared on a field (``minimum``, ``maximum``, ``above``, ``below``, ``choices``) run in ``check_fields`` with one-line
messages naming the option, so bad values fail before any data or model loads.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import MISSING, Field, field
from typing import Any

from adaptlab.errors import AdaptlabError


def param(default: Any = None, help: str = "", *, runtime: bool = False, cli: bool = True, minimum: float | None = None,
          maximum: float | None = None, above: float | None = None, below: float | None = None, choices: tuple | None = None,
          flag: str | None = None, default_factory: Any = MISSING, replaced_by: str | None = None) -> Any:
    """A parameter field. ``runtime``: changes how a job runs, not what it learns (kept out of manifests);
    ``cli``: offered as a command-line option; ``minimum``/``maximum``, ``above``/``below``: inclusive/exclusive bounds;
    ``flag``: the option's spelling when it is not derived from the name (e.g. ``--C``); ``replaced_by``: this is an
    old spelling of that field, accepted for one release (its value moves there, with a deprecation line; never recorded)."""
    if replaced_by is not None:
        help, runtime = help or f"Deprecated: use {option_name(replaced_by)}.", True
    metadata = {"help": help, "runtime": runtime, "cli": cli, "minimum": minimum, "maximum": maximum, "above": above, "below": below,
                "choices": choices, "flag": flag, "replaced_by": replaced_by}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def with_defaults(cls: type, name: str, **defaults: Any) -> type:
    """A subclass of the params dataclass ``cls`` whose fields ``defaults`` names start elsewhere; types, help and
    checks stay ``cls``'s. How one declaration (e.g. LoRA's options) serves families whose measured defaults differ."""
    unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": name, "__doc__": cls.__doc__, "__annotations__": {}}
    for spec in dataclasses.fields(cls):
        if spec.name in defaults:
            namespace["__annotations__"][spec.name] = spec.type
            namespace[spec.name] = field(default=defaults[spec.name], metadata=spec.metadata)
    return dataclasses.dataclass(kw_only=True, eq=False)(type(name, (cls,), namespace))


def params_of(cls: type) -> list[Field]:
    return list(dataclasses.fields(cls))


def recorded_params(obj: Any) -> dict:
    """A job's parameters and their values, runtime-only ones (device, progress, resume) left out: what its
    manifest records."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if not f.metadata.get("runtime")}


def base_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``list[str] | None`` -> list; ``Any`` stays ``Any``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(args[0]) if len(args) == 1 else str  # str | dict: written as a string on the CLI
    return origin or annotation


def allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(cls: type, name: str, value: Any, where: str = "") -> Any:
    """``value`` converted to field ``name``'s type, as YAML, ``--set`` or the Python API give it; a wrong type
    is a one-line error naming the option."""
    annotation = type_hints(cls)[name]
    label = where or option_name(name)
    if value is None:
        if allows_none(annotation):
            return None
        raise AdaptlabError(f"{label} needs a value")
    kind = base_type(annotation)
    if kind is Any or isinstance(value, kind if isinstance(kind, type) else object):
        if kind is int and isinstance(value, bool):
            raise AdaptlabError(f"{label} must be an integer, not {value!r}")
        if kind is float and isinstance(value, bool):
            raise AdaptlabError(f"{label} must be a number, not {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise AdaptlabError(f"{label} must be {'an integer' if kind is int else 'a number'}, not {value!r}") from None
        if kind is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
        if kind is list:
            return [part.strip() for part in text.split(",") if part.strip()]
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}
    raise AdaptlabError(f"{label} must be {names.get(kind, kind.__name__)}, not {value!r}")


def check_fields(obj: Any) -> None:
    """Coerce every field of a params dataclass to its type and apply the declared bounds and choices."""
    cls = type(obj)
    take_replaced_spellings(obj)
    for spec in params_of(cls):
        meta, value = spec.metadata, getattr(obj, spec.name)
        if not meta or (meta.get("runtime") and not meta.get("cli")):
            continue
        label = meta.get("flag") or option_name(spec.name)
        if value is None:
            if "None" not in str(spec.type):  # None is a value only where the field declares it ("default")
                raise AdaptlabError(f"{label} needs a value, not None (default: {spec.default!r})")
            continue
        value = coerce(cls, spec.name, value, label)
        object.__setattr__(obj, spec.name, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise AdaptlabError(f"{label} must be a finite number, not {value}")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise AdaptlabError(f"{label} must be one of {', '.join(map(str, meta['choices']))}, not {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("minimum") is not None and value < meta["minimum"]:
                raise AdaptlabError(f"{label} must be at least {_shown(meta['minimum'])}, not {_shown(value)}")
            if meta.get("maximum") is not None and value > meta["maximum"]:
                raise AdaptlabError(f"{label} must be at most {_shown(meta['maximum'])}, not {_shown(value)}")
            if meta.get("above") is not None and not value > meta["above"]:
                raise AdaptlabError(f"{label} must be greater than {_shown(meta['above'])}, not {_shown(value)}")
            if meta.get("below") is not None and not value < meta["below"]:
                raise AdaptlabError(f"{label} must be below {_shown(meta['below'])}, not {_shown(value)}")


def take_replaced_spellings(obj: Any) -> None:
    """Move the values given under an old spelling (``param(replaced_by=...)``) to the new field, one line on stderr
    each; the new spelling wins when both are given."""
    for spec in params_of(type(obj)):
        new = spec.metadata.get("replaced_by")
        if new is None or getattr(obj, spec.name) is None:
            continue
        print(f"adaptlab: '{option_name(spec.name)}' is deprecated; use '{option_name(new)}'", file=sys.stderr)
        default = next(f.default for f in params_of(type(obj)) if f.name == new)
        if getattr(obj, new) == default:
            object.__setattr__(obj, new, getattr(obj, spec.name))
        object.__setattr__(obj, spec.name, None)


def _shown(number: float) -> str:
    """A bound or value as a message shows it: an integer exactly (2147483648, not 2.14748e+09), a float short."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def check_names(cls: type, given: dict, where: str, subject: str) -> None:
    """Reject unknown parameter names before anything runs (YAML, ``--set``, the Python API)."""
    known = [f.name for f in params_of(cls)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise AdaptlabError(f"{where}: unknown parameter(s) {', '.join(unknown)} for {subject} (known: {', '.join(known)})")


def coerce_all(cls: type, given: dict, where: str) -> dict:
    """Every value of ``given`` converted to its field's type (errors name ``where`` and the key)."""
    return {name: coerce(cls, name, value, f"{where}: {name}") for name, value in given.items()}
