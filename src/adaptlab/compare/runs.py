"""A comparison's unit of work: one entry on one model with one training seed, and how it is named on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelInfo:
    kind: str  # "encoder" or "decoder"
    positions: int | None  # the longest input the model reads, in tokens


@dataclass(frozen=True)
class Run:
    """One entry on one model with one training seed; ``key`` names its directory in the comparison."""

    entry: str
    strategy: str
    model: str
    seed: int
    params: dict
    #: hyper-parameter search before training (``{"trials": N, "space": {param: [low, high]}}``), or None
    tune: dict | None = None

    @property
    def key(self) -> str:
        return f"{slug(self.model)}/{self.entry}/seed-{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.entry} · {short_model(self.model)}"

    def spec(self, data) -> dict:
        """Everything that determines the run's result: a stored result is reused only if this is unchanged."""
        spec = {"entry": self.entry, "strategy": self.strategy, "model": self.model, "seed": self.seed,
                "params": self.params, "data": dataclasses.asdict(data)}
        return {**spec, "tune": self.tune} if self.tune else spec


def short_model(model: str) -> str:
    """``/home/me/models/tiny-bert`` -> ``tiny-bert``; ``org/name`` -> ``name``: table cells stay narrow."""
    return model.rstrip("/").split("/")[-1] or model


def slug(model: str) -> str:
    """A readable, collision-free directory name: ``org1/bert`` and ``org2/bert`` must not share runs."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in short_model(model))
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


class EntryRunner:
    """How a family's comparison entries are planned (in the comparing process, before any model loads) and run (in
    each run's worker process). A family registers one (``adaptlab.families.Family.compare``); the task's pipeline
    (``adaptlab.compare.tasks``) calls these in this order for every entry on every model:
    ``targets`` -> ``params`` -> the user's ``--set`` overrides for names in ``param_names`` -> ``check`` -> ``finish``.
    """

    def targets(self, entry, models: list[str], info: dict[str, ModelInfo]) -> list[str]:
        """The models this entry runs on (default: every one)."""
        return list(models)

    def params(self, entry, model: str, plan, preset, info: ModelInfo) -> dict:
        """The entry's parameters under the plan's preset, before the user's overrides."""
        return {**entry.params, "model": model}

    def param_names(self, entry) -> set[str]:
        """Every parameter the entry takes (what ``--set ENTRY.NAME=...`` may name)."""
        raise NotImplementedError

    def check(self, entry, params: dict) -> None:
        """Refuse unknown names and bad values now, not in a worker minutes later."""

    def finish(self, entry, params: dict, plan, preset) -> tuple[dict, dict | None]:
        """Last changes once the overrides are in (a learning-rate search), and the run's tuning study or None."""
        return params, None

    def run(self, spec: dict, run_dir: Path) -> dict:
        """Train or evaluate one run in the worker; the result is ``result(...)`` plus the task's own keys."""
        raise NotImplementedError

    @staticmethod
    def result(spec: dict, manifest: dict, started: float) -> dict:
        """The keys every run's result has, whatever its family, from the artifact's manifest."""
        training = manifest.get("training") or {}
        return {"status": "done", "spec": spec, "data": manifest["data"], "base_model": manifest["base_model"],
                "params": manifest["params"], "metrics": manifest["metrics"], "cost": manifest["cost"],
                "artifact_bytes": manifest["size_bytes"], "resumed_from_epoch": training.get("resumed_from_epoch"),
                "stopped": training.get("stopped"),  # converged / step_cap / time_cap; None: not trained
                "steps": training.get("steps"), "lr_chosen": (training.get("lr_search") or {}).get("chosen"),
                "wall_seconds": round(time.perf_counter() - started, 2)}
