"""One job runner for every family: classifiers, reward models, PPO and DPO policies (and what comes next).

The engineering every training job needs, written once (Lightning's split: the job holds the research code):
seed everything, give the job a work directory for checkpoints and logs (``<output>.work``), time ``fit``
alone (``train_seconds`` never includes evaluation) and its peak memory, evaluate, then write one manifest
schema and one ``cost`` schema through the atomic artifact writer, keep the training log, and remove the
work directory. A job is any object with the methods of ``Job``. An existing ``output`` is never replaced
unless the caller says ``overwrite`` (``--overwrite``), and only if it is an artifact or a file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adaptlab._io import atomic_directory, write_json
from adaptlab.artifacts import FORMAT, FORMAT_VERSION, MANIFEST, file_sha256, library_versions, seal_manifest
from adaptlab.errors import AdaptlabError
from adaptlab.measure import measure
from adaptlab.model_card import finish_artifact_files
from adaptlab.params import option_name
from adaptlab.results import COST_KEYS, JobResult
from adaptlab.runtime import Runtime
from adaptlab.training.tracking import tracked_run

#: the keys every manifest has (``write_artifact`` adds format, files, sizes, versions and the date)
MANIFEST_KEYS = ("strategy", "base_model", "labels", "data", "params", "runtime", "metrics", "cost", "training", "details")
RUN_RECORD = "run.json"  # in a work directory: the data and settings its checkpoints belong to
TRAINING_LOG = "training_log.csv"  # name of the per-epoch / per-step log inside an artifact
TENSORBOARD = "tensorboard"  # with --logger tensorboard: the event files, for `tensorboard --logdir ARTIFACT/tensorboard`


def work_dir(output: str | Path) -> Path:
    """Where a job keeps checkpoints and logs while it runs: beside the artifact, removed once it is written."""
    return Path(str(output) + ".work")


def check_output(output: str | Path, overwrite: bool, inputs: Iterable[str | Path] = (), *, trains: bool = False) -> None:
    """The one output guard: refuse an ``output`` that would destroy something or cannot be written, before any
    model loads.

    Refused always: an empty ``output`` or the working directory; an ``output`` that is one of the ``inputs``, holds
    one or lies inside one; a place under a regular file or in a directory that cannot be written; a non-empty
    directory that is not an adaptlab artifact (it holds the user's files). Refused unless ``overwrite``: a finished
    artifact or a file. With ``trains``, the job's work directory (``<output>.work``, deleted when a run starts
    afresh) gets the same checks against the inputs, and one that adaptlab did not make is never deleted: it is
    refused. Inputs that are not paths (named datasets, Hub ids) are skipped."""
    if not str(output).strip():
        raise AdaptlabError("--output is empty; give a path to write to")
    output = Path(output).expanduser()
    target = output.resolve()
    if Path.cwd().resolve().is_relative_to(target):  # "." or "..": the working directory or one holding it
        raise AdaptlabError(f"--output '{output}' is the current directory (or holds it); give a new directory")
    _check_writable(output)
    places = [(output, "--output")] + ([(work_dir(output), "the work directory")] if trains else [])
    for place, what in places:
        _check_apart(place, what, inputs)
    if trains:
        _check_work_dir(work_dir(output))
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if output.is_dir() and not (output / MANIFEST).is_file():
        raise AdaptlabError(f"--output '{output}' is a non-empty directory that is not an adaptlab artifact; "
                            "choose a new directory (adaptlab replaces only its own artifacts)")
    if not overwrite:
        what = "an artifact" if output.is_dir() else "a file"
        raise AdaptlabError(f"--output '{output}' already holds {what}; pass --overwrite to replace it, or choose another --output")


def check_output_directory(output: str | Path, inputs: Iterable[str | Path | None] = (), *, name: str = "--output",
                           marker: tuple[str, ...] = ()) -> None:
    """The guard for an output directory that a rerun resumes (a comparison's): it may exist and hold earlier
    runs, but it must be a directory that can be written, apart from every input. ``name``: what the user called
    it (an option such as ``--store``, or an argument), for the messages. ``marker``: what this command writes
    there; an existing folder that holds files but none of these is the user's, and refused (never written into)."""
    if not str(output).strip():
        raise AdaptlabError(f"{name} is empty; give a directory")
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise AdaptlabError(f"{name} '{output}' is a file; give a directory")
    if Path.cwd().resolve().is_relative_to(output.resolve()):
        raise AdaptlabError(f"{name} '{output}' is the current directory (or holds it); give a new directory")
    _check_writable(output, name)
    _check_apart(output, name, [given for given in inputs if given is not None])
    if marker and output.is_dir() and any(output.iterdir()) and not any((output / mark).exists() for mark in marker):
        raise AdaptlabError(f"{name} '{output}' holds files adaptlab did not write (no {' or '.join(marker)}); give a "
                            "new or empty directory")


def _check_writable(output: Path, name: str = "--output") -> None:
    """The output is written beside itself (a temporary sibling renamed into place), so its nearest existing
    ancestor must be a directory this process may write in."""
    ancestor = output.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AdaptlabError(f"{name} '{output}' lies under '{ancestor}', which is a file; choose a path under a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AdaptlabError(f"{name} '{output}': the directory '{ancestor}' is not writable; choose a place you may write to")


def _check_apart(place: Path, what: str, inputs: Iterable[str | Path]) -> None:
    """``place`` may be neither an input, nor hold one, nor lie inside one."""
    target = place.expanduser().resolve()
    for given in inputs:
        source = Path(str(given)).expanduser()
        if not str(given).strip() or not source.exists():
            continue
        source = source.resolve()
        if target == source or source.is_relative_to(target) or (source.is_dir() and target.is_relative_to(source)):
            relation = "is" if target == source else ("contains" if source.is_relative_to(target) else "lies inside")
            name = f"{what} '{place}'"
            raise AdaptlabError(f"{name} {relation} the input '{given}'; write the output somewhere else")


def _check_work_dir(workdir: Path) -> None:
    """A work directory is adaptlab's only if it holds the run record adaptlab writes first (or nothing at all);
    anything else under that name is the user's and is never deleted."""
    if not workdir.exists() and not workdir.is_symlink():
        return
    if workdir.is_symlink() or not workdir.is_dir():
        raise AdaptlabError(f"'{workdir}' (where this run keeps its checkpoints) exists and is not a directory adaptlab "
                            "made; move it, or choose another --output")
    if any(workdir.iterdir()) and not _is_run_record(workdir / RUN_RECORD):
        raise AdaptlabError(f"'{workdir}' (where this run keeps its checkpoints) holds files adaptlab did not write; "
                            "move them, or choose another --output")


def _is_run_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"data", "params"} <= set(record)


def check_resumable(workdir: Path, settings: dict, resume: bool) -> None:
    """Record what a run trains on and with (``run.json`` in its work directory); with ``resume``, refuse a
    checkpoint made for other data or settings, naming what differs. More ``epochs`` is allowed: continuing a
    finished schedule for longer is what resuming is often for."""
    record = workdir / RUN_RECORD
    now = json.loads(json.dumps(settings, default=str))  # as stored, so the comparison is like for like
    if resume and record.exists():
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = [] if before["data"] == now["data"] else ["the data"]
        old, new = before["params"], now["params"]
        changed += [f"{option_name(key)} ({old.get(key)!r} -> {new.get(key)!r})" for key in sorted(set(old) | set(new))
                    if key != "epochs" and old.get(key) != new.get(key)]
        if changed:
            raise AdaptlabError(f"--resume: the checkpoint in '{workdir}' was made with other settings: {', '.join(changed)}; "
                                "restore them, or run without --resume to start over")
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(record, now)


def training_log_path(workdir: Path) -> Path:
    """Where a job writes its CSV log inside its work directory (Lightning's CSVLogger layout)."""
    return workdir / "logs" / "metrics.csv"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Job(Protocol):
    name: str

    @property
    def runtime(self) -> Runtime: ...
    def fit(self, data: Any, workdir: Path) -> Any: ...
    def evaluate(self, data: Any) -> dict: ...
    def inference_rate(self, data: Any) -> float | None: ...
    def cost(self) -> dict: ...
    def base_model(self) -> dict: ...
    def get_params(self) -> dict: ...
    def training_report(self) -> dict | None: ...
    def details(self) -> dict: ...
    def save(self, directory: Path) -> None: ...


def run_job(job: Job, data: Any, output: str | Path, *, seed: int, labels: list[str], data_description: dict,
            train_examples: int, resume: bool = False, overwrite: bool = False) -> JobResult:
    """Fit ``job`` on ``data``, evaluate it, and write its artifact to ``output``.

    ``train_examples``: what one epoch or run trains on (texts, pairs, rollouts), for samples/s.
    ``resume``: keep the work directory of an interrupted run so the job can continue from its checkpoint.
    ``overwrite``: replace an artifact (or file) already at ``output``; refused otherwise (``check_output``).
    """
    output = Path(output)
    check_output(output, overwrite, trains=True)
    workdir = work_dir(output)
    runtime = job.runtime.describe()  # a bad device fails here, before any work
    if not resume and workdir.exists():
        shutil.rmtree(workdir)
    made = [parent for parent in workdir.absolute().parents if not parent.exists()]  # folders this run creates, nearest first
    check_resumable(workdir, {"data": data_description, "params": job.get_params()}, resume)
    seed_everything(seed)
    try:
        # --logger mlflow|wandb: one tracking run around fit, evaluation and the artifact (adaptlab.training.tracking)
        with tracked_run(job.get_params(), output):
            return _fit_evaluate_write(job, data, output, workdir, runtime, labels, data_description, train_examples)
    except BaseException:  # interrupted or failed: keep checkpoints to resume from, but no empty work directory
        if workdir.is_dir() and [p.name for p in workdir.iterdir()] == [RUN_RECORD]:
            shutil.rmtree(workdir, ignore_errors=True)
            for parent in made:  # and the folders made for it (runs/), while they are empty
                try:
                    parent.rmdir()
                except OSError:
                    break
        raise


def _fit_evaluate_write(job: Job, data: Any, output: Path, workdir: Path, runtime: dict, labels: list[str],
                        data_description: dict, train_examples: int) -> JobResult:
    with measure() as fit_cost:
        job.fit(data, workdir)
    if _secondary_rank():  # multi-process training (DDP...): only rank 0 evaluates and writes the artifact
        return JobResult(output, {})
    with measure() as eval_cost:
        metrics = job.evaluate(data)
    rate = job.inference_rate(data)
    fit = fit_cost.as_dict()
    cost = {
        **{key: None for key in COST_KEYS},
        **{k: v for k, v in job.cost().items() if k in ("trainable_params", "total_params")},
        "train_seconds": round(fit_cost.seconds, 3),
        "train_samples_per_second": round(train_examples / max(fit_cost.seconds, 1e-9), 1),
        "eval_seconds": round(eval_cost.seconds, 3),
        "inference_texts_per_second": None if rate is None else round(rate, 1),
        "peak_rss_mb": fit["peak_rss_mb"],
        "peak_cuda_mb": fit["peak_cuda_mb"],
    }
    manifest = {
        "strategy": job.name, "base_model": job.base_model(), "labels": labels, "data": data_description,
        "params": job.get_params(), "runtime": runtime, "metrics": metrics, "cost": cost,
        "training": job.training_report(), "details": job.details(),
    }

    def write_files(directory: Path) -> None:
        job.save(directory)
        log = training_log_path(workdir)
        if log.exists():
            shutil.copy(log, directory / TRAINING_LOG)
        events = sorted((workdir / "logs").glob("events.out.tfevents.*"))  # --logger tensorboard
        events += sorted(workdir.glob("runs/*/events.out.tfevents.*"))  # TRL's (DPO)
        if events:
            (directory / TENSORBOARD).mkdir()
            for event in events:
                shutil.copy(event, directory / TENSORBOARD / event.name)

    manifest = write_artifact(output, manifest, write_files)
    shutil.rmtree(workdir, ignore_errors=True)  # checkpoints are only needed to resume
    return JobResult(output, manifest)


def write_artifact(directory: Path, manifest: dict, write_files: Callable[[Path], None]) -> dict:
    """Write the strategy's files (``write_files``), the model card and the manifest into ``directory``, replacing it
    only when complete. The card is written here, above the artifact format, because it describes the base model
    from the model registry."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_files(tmp)
        finish_artifact_files(tmp, manifest)  # model card, portable adapter configs
        files = {
            str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "files": files,
            "size_bytes": sum((tmp / name).stat().st_size for name in files),
            "versions": library_versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        manifest = seal_manifest(json.loads(json.dumps(manifest)))  # as it will be read back (tuples become lists)
        write_json(tmp / MANIFEST, manifest)
    return manifest


def _secondary_rank() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0
