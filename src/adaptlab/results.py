"""Typed results: what every job writes (``Manifest`` with its ``Metrics`` and ``Cost``) and returns (``JobResult``).

Each has ``to_json``/``from_json`` (as PEFT's configs do): ``from_json`` reads every manifest format adaptlab has
written since format 2 (format 1 is upgraded by ``adaptlab.artifacts.read_manifest`` before it gets here), keeps keys
it does not know (a newer adaptlab's, a family's own) and ``to_json`` writes them back, so a manifest round-trips
unchanged. Reading a manifest by key (``manifest["metrics"]["test"]``), as every caller did before these types, still
works: ``Manifest`` and ``JobResult`` answer ``[key]`` with the JSON value.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the keys of every manifest's ``cost``, whatever the family (None where a figure does not apply)
COST_KEYS = ("trainable_params", "total_params", "train_seconds", "train_samples_per_second", "eval_seconds",
             "inference_texts_per_second", "peak_rss_mb", "peak_cuda_mb")


@dataclass
class Cost:
    trainable_params: int | None = None
    total_params: int | None = None
    train_seconds: float | None = None
    train_samples_per_second: float | None = None
    eval_seconds: float | None = None
    inference_texts_per_second: float | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Cost":
        return cls(**{key: data.get(key) for key in COST_KEYS})


@dataclass
class Metrics:
    """``test`` once after training, ``val`` for selection; a family's other results (``forgetting``,
    ``test_over_draws``...) under their own names in ``extra``."""

    test: dict | None = None  # None: the family has no test split (PPO reports its training rewards)
    val: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**({"test": self.test} if self.test is not None else {}),
                **({"val": self.val} if self.val is not None else {}), **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "Metrics":
        return cls(data.get("test"), data.get("val"), {k: v for k, v in data.items() if k not in ("test", "val")})


class _ByKey:
    """``obj["key"]``: the JSON value, for code written against the plain dicts these types replace."""

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()

    def __iter__(self):
        return iter(self.to_json())

    def keys(self):
        return self.to_json().keys()


@dataclass
class Manifest(_ByKey):
    strategy: str
    base_model: dict
    labels: list | None
    data: dict
    params: dict
    runtime: dict | None
    metrics: Metrics
    cost: Cost
    training: dict | None = None
    details: dict = field(default_factory=dict)
    #: written by the artifact writer: format, format_version, files, size_bytes, versions, created, manifest_sha256,
    #: and any key this version does not know
    extra: dict = field(default_factory=dict)

    FIELDS = ("strategy", "base_model", "labels", "data", "params", "runtime", "metrics", "cost", "training", "details")

    @property
    def size_bytes(self) -> int | None:
        return self.extra.get("size_bytes")

    def to_json(self) -> dict:
        plain = {name: getattr(self, name) for name in self.FIELDS}
        plain.update(metrics=self.metrics.to_json(), cost=self.cost.to_json())
        head = {k: self.extra[k] for k in ("format", "format_version") if k in self.extra}
        return {**head, **plain, **{k: v for k, v in self.extra.items() if k not in head}}

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        values = {name: data.get(name) for name in cls.FIELDS}
        values.update(metrics=Metrics.from_json(data.get("metrics") or {}), cost=Cost.from_json(data.get("cost") or {}),
                      details=data.get("details") or {})
        return cls(**values, extra={k: v for k, v in data.items() if k not in cls.FIELDS})


@dataclass(frozen=True)
class JobResult(_ByKey):
    """What every ``train_*`` returns: where the artifact is and its manifest."""

    artifact: Path
    manifest: Manifest | dict

    def __post_init__(self) -> None:
        if isinstance(self.manifest, dict):
            object.__setattr__(self, "manifest", Manifest.from_json(self.manifest) if self.manifest else None)

    @property
    def metrics(self) -> dict:
        return self.manifest.metrics.test

    def to_json(self) -> dict:
        """The manifest's JSON (``result["metrics"]``: the manifest's, as when ``train_*`` returned the manifest)."""
        if self.manifest is None:
            return {}
        warnings.warn("reading a JobResult by key is deprecated: use result.manifest (a Manifest) or its attributes",
                      DeprecationWarning, stacklevel=3)
        return self.manifest.to_json()
