"""Run tracking for every trainer: ``--logger mlflow`` and ``--logger wandb`` (MLflow and Weights & Biases).

One tracking run per job, opened by the job runner (``adaptlab.jobs.run_job``) before ``fit`` and closed after the
artifact is written, so every family logs the same things to the same run:

- params: the manifest's ``params``, when the run opens;
- metrics per step: the Lightning trainers through Lightning's ``MLFlowLogger`` / ``WandbLogger`` attached to this
  run (``adaptlab.training.engine``), DPO through TRL's ``report_to`` (its callback finds the active run and logs
  into it), PPO through ``log_metrics`` below, one row per PPO step;
- at the end: the evaluation metrics of the manifest (``test/accuracy`` ...) and the artifact directory (MLflow:
  ``log_artifacts`` under ``artifact/``; W&B: an Artifact of type ``model``). A run whose job fails ends FAILED.

Where the runs go. MLflow: ``MLFLOW_TRACKING_URI`` if set (a server such as ``http://127.0.0.1:5000``, or a
store URI), else MLflow's default local store, which needs no server and no network: ``mlflow.db`` (SQLite) in the
working directory with artifacts under ``./mlruns`` (``mlflow ui`` started in that directory shows them). The
experiment is ``MLFLOW_EXPERIMENT_NAME`` if set, else ``adaptlab``. W&B: project ``WANDB_PROJECT`` (default
``adaptlab``); ``WANDB_MODE=offline`` works without network or account (``wandb sync`` uploads later).

The CSV log is kept in the artifact with either (``training_log.csv``), as with ``--logger csv``. In multi-process
training only rank 0 opens a run. Nothing here imports torch or Lightning, so the command line can check the
packages (``check_logger``) before any model loads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import AdaptlabError

#: --logger choices for every trainer
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb", "none")
#: the loggers that send a run to a tracking service (the job runner opens the run)
TRACKERS = ("mlflow", "wandb")
DEFAULT_EXPERIMENT = "adaptlab"
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # logger -> module (= pip name)
_PARAM_CHARACTERS = 500  # MLflow's limit on a param's value is longer; a list of target modules stays readable


def check_logger(logger: str) -> None:
    """Refuse a logger whose package is not installed, in one line with the pip command (before any model loads)."""
    package = _PACKAGES.get(logger)
    if package is not None and importlib.util.find_spec(package) is None:
        raise AdaptlabError(f"--logger {logger} needs the {package} package: pip install {package}")


def mlflow_location() -> tuple[str, str]:
    """(tracking URI, experiment name) as described in the module docstring."""
    import mlflow

    return mlflow.get_tracking_uri(), os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


@dataclass
class Tracker:
    """The open tracking run of the job that is running (``current()``)."""

    kind: str  # mlflow or wandb
    run_id: str
    run: Any = None  # the wandb Run (MLflow's run is the active run of the ``mlflow`` module)

    def log_metrics(self, metrics: dict, step: int | None) -> None:
        """Numbers only (NaN and infinities left out); a trainer calls this once per step. ``step`` None: final
        values (W&B keeps them in the run's summary)."""
        numbers = {key: float(value) for key, value in metrics.items() if _is_number(value)}
        if not numbers:
            return
        if self.kind == "mlflow":
            import mlflow

            mlflow.log_metrics(numbers, step=step or 0, run_id=self.run_id)
        elif step is None:
            self.run.summary.update(numbers)
        else:
            self.run.log(numbers, step=step)

    def log_params(self, params: dict) -> None:
        if self.kind == "mlflow":
            import mlflow

            mlflow.log_params({key: _param_value(value) for key, value in params.items()}, run_id=self.run_id)
        else:
            self.run.config.update(json.loads(json.dumps(params, default=str)), allow_val_change=True)

    def log_artifact(self, directory: Path) -> None:
        if self.kind == "mlflow":
            import mlflow

            mlflow.log_artifacts(str(directory), artifact_path="artifact", run_id=self.run_id)
        else:
            import wandb

            artifact = wandb.Artifact(_artifact_name(directory.name), type="model")
            artifact.add_dir(str(directory))
            self.run.log_artifact(artifact)

    def end(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        if self.kind == "mlflow":
            import mlflow

            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:  # a trainer ended the fluent run already: still record how the job ended
                mlflow.MlflowClient().set_terminated(self.run_id, status)
        else:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)


_current: Tracker | None = None


def current() -> Tracker | None:
    """The tracking run of the job now running (None unless its --logger is mlflow or wandb)."""
    return _current


@contextmanager
def tracked_run(params: dict, output: Path) -> Iterator[Tracker | None]:
    """The job runner's hook: with ``params["logger"]`` mlflow or wandb, open a run named after ``output`` and log
    ``params``; on leaving, log the manifest's metrics and the artifact directory, and end the run (FAILED if the
    job raised). Any other logger: nothing."""
    global _current
    logger = params.get("logger")
    if logger not in TRACKERS or not _rank_zero():
        yield None
        return
    check_logger(logger)
    tracker = _start(logger, output.name)
    _current = tracker
    try:
        tracker.log_params(params)
        yield tracker
    except BaseException as error:
        _current = None
        tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    _current = None
    try:
        manifest = output / "manifest.json"
        if manifest.is_file():
            tracker.log_metrics(_flatten(json.loads(manifest.read_text(encoding="utf-8")).get("metrics") or {}), step=None)
            tracker.log_artifact(output)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")


def _start(logger: str, name: str) -> Tracker:
    if logger == "mlflow":
        import mlflow

        mlflow.set_experiment(mlflow_location()[1])  # the URI: MLFLOW_TRACKING_URI or MLflow's default, read by mlflow
        run = mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None)
        return Tracker("mlflow", run.info.run_id)
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_EXPERIMENT, name=name)
    return Tracker("wandb", run.id, run)


def _flatten(metrics: dict, prefix: str = "") -> dict:
    """``{"test": {"accuracy": 0.9}}`` -> ``{"test/accuracy": 0.9}``; numbers only."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif _is_number(value):
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_CHARACTERS]


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, dashes, underscores and dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return cleaned or "artifact"


def _rank_zero() -> bool:
    """Rank 0 of a multi-process run (Lightning, torchrun and SLURM set these), or a single process."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
