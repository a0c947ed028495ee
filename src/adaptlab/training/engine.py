"""Engineering around the research modules: the Lightning Trainer, checkpoints, resume, best model.

One engine for every objective: ``classification`` (``ClassificationModule``, best model by validation
accuracy), ``reward`` (the same on preference pairs, optionally centred) and ``causal-lm`` (``CausalLMModule`` for supervised fine-tuning, best by validation loss).

Checkpoints live in the job's work directory (``<output>.work/``, see ``adaptlab.jobs``): ``last.ckpt`` after every epoch (what ``resume`` continues from;
an epoch cut short is redone, with the same batches and the same dropout; the CSV log keeps the rows of the
epochs before it) and ``best.ckpt``, selected on validation only. After training the best weights are loaded back. The accelerator,
devices and precision come from the job's ``Runtime``; ``devices``, ``strategy`` and ``num_nodes`` go on to
Lightning, so the same run scales to DDP/FSDP/DeepSpeed.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar, Timer

from adaptlab.jobs import training_log_path
from adaptlab.progress import stderr
from adaptlab.runtime import Runtime
from adaptlab.training.data import BatchDataModule
from adaptlab.training.module import CausalLMModule, ClassificationModule, PairwiseRewardModule
from adaptlab.training.options import TrainingOptions

# Lightning's start-up chatter (GPU/TPU availability, tips) is not what a user needs to read.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Short epochs log fewer steps than Lightning's interval; train loss is logged per epoch too, so nothing is lost.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval", module="lightning")
# On resume the work directory is expected to hold logs and checkpoints (the earlier log rows are kept, see below).
warnings.filterwarnings("ignore", message=".*(Experiment logs|Checkpoint) directory .* exists and is not empty")

START = "start.ckpt"  # in the checkpoints directory: the weights and validation score before the first step

#: objective -> (module, the validation metric that picks the best epoch, and its direction)
OBJECTIVES = {"classification": (ClassificationModule, "val_acc", "max"), "causal-lm": (CausalLMModule, "val_loss", "min"),
              "reward": (PairwiseRewardModule, "val_acc", "max")}


@dataclass
class FitReport:
    epochs_run: int
    steps: int
    best_val_acc: float | None
    best_epoch: int | None
    best_val_loss: float | None
    seconds: float
    samples_per_second: float
    resumed_from_epoch: int | None
    tokens_per_second: float | None  # trained (labelled) tokens per second; causal LMs only
    #: why training ended: "converged" (validation stopped improving for --patience epochs), "step_cap" (the
    #: epochs or --max-steps ran out first) or "time_cap" (--max-minutes)
    stopped: str
    budget: dict  # the caps this run had: max_epochs, max_steps, max_minutes, patience
    final_val_loss: float | None = None  # after the last epoch run (what a learning-rate trial is judged on)
    #: ``--lr-search``: each candidate rate's validation loss after one epoch, and the rate chosen
    lr_search: dict | None = None


class _EpochTimer(Callback):
    """Counts the samples (and, for causal LMs, the labelled tokens) actually trained on, for an honest
    throughput figure (also shown in the bar)."""

    def __init__(self) -> None:
        self.samples = self.tokens = 0
        self.seconds = 0.0
        self._start = 0.0
        self._epoch_samples = self._epoch_tokens = 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()
        self._epoch_samples = self._epoch_tokens = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        labels = batch["labels"]
        self.samples += len(labels)
        self._epoch_samples += len(labels)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        if labels.ndim == 2:
            tokens = int((labels[:, 1:] != -100).sum())
            self.tokens += tokens
            self._epoch_tokens += tokens
            module.log("tokens_per_s", self._epoch_tokens / elapsed, prog_bar=True, on_step=True, on_epoch=False)
        else:
            module.log("samples_per_s", self._epoch_samples / elapsed, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds += time.perf_counter() - self._start


def fit_module(model: torch.nn.Module, data: BatchDataModule, options: TrainingOptions, workdir: Path,
               runtime: Runtime, objective: str = "classification", epochs: int | None = None,
               module_options: dict | None = None, limit_train_batches: int | None = None) -> FitReport:
    """Train ``model`` in place in ``workdir`` (the job's) for ``epochs`` (default: ``options.epochs``); on return
    it holds the best weights by the objective's validation metric (accuracy for classifiers and reward models,
    loss for causal LMs). ``module_options`` go to the objective's module (a reward model's ``center_rewards``)."""
    searched = None
    if options.lr_search:
        from adaptlab.training.lr_search import search_lr

        lr, trials = search_lr(model, data, options, workdir, runtime, objective, module_options, fit_module)
        options, searched = dataclasses.replace(options, lr=lr, lr_search=False), {"chosen": lr, "trials": trials}
    epochs = options.epoch_budget(data.batches_per_epoch(), epochs)
    last = workdir / "checkpoints" / "last.ckpt"
    if options.resume and not last.exists():
        stderr.print(f"no checkpoint in {workdir} to resume from; starting from scratch")
    model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it is given
    if options.gradient_checkpointing:
        _checkpoint_activations(model)
    module_class, monitor, mode = OBJECTIVES[objective]
    module = module_class(
        model, lr=options.lr, weight_decay=options.weight_decay, warmup_ratio=options.warmup_ratio,
        schedule=options.schedule, seed=options.seed, **(module_options or {}),
    )
    best = ModelCheckpoint(
        dirpath=workdir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    timer = _EpochTimer()
    callbacks: list[Callback] = [best, timer, *options.callbacks]
    early = EarlyStopping(monitor=monitor, mode=mode, patience=options.patience) if options.patience else None
    if early is not None:
        callbacks.append(early)
    clock = Timer(duration=timedelta(minutes=options.max_minutes), interval="step") if options.max_minutes else None
    if clock is not None:
        callbacks.append(clock)
    if options.progress:
        callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))  # stdout stays clean for --json
    logger: Any = _loggers(options.logger, workdir)
    trainer = L.Trainer(
        max_epochs=epochs,
        **options.lightning_devices(runtime),
        strategy=options.strategy,
        num_nodes=options.num_nodes,
        accumulate_grad_batches=options.grad_accum,
        gradient_clip_val=options.grad_clip,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the batch sampler shards across ranks itself
        deterministic=False,
        default_root_dir=workdir,
        limit_train_batches=limit_train_batches,  # the learning-rate search's short trials
    )
    resumed_from = None
    ckpt_path = None
    if options.resume and last.exists():
        ckpt_path = str(last)
        resumed_from = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        stderr.print(f"resuming from {last} (epoch {resumed_from} of {epochs})")
    earlier_rows = _log_rows_before(training_log_path(workdir), resumed_from) if resumed_from and options.logger in CSV_LOGGERS else []
    start = time.perf_counter()
    start_score = _score_the_start(trainer, module, data, workdir / "checkpoints" / START, monitor)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    if earlier_rows:
        _prepend_log_rows(training_log_path(workdir), earlier_rows)
    seconds = time.perf_counter() - start
    best_epoch = None
    best_score = None if best.best_model_score is None else float(best.best_model_score)
    if best_score is None or _better(start_score, best_score, mode):  # training never beat where it started
        checkpoint = torch.load(workdir / "checkpoints" / START, map_location="cpu", weights_only=False)
        best_epoch, best_score = -1, start_score
    elif best.best_model_path:
        checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        best_epoch = int(checkpoint["epoch"])
    final_loss = trainer.callback_metrics.get("val_loss")
    if best_epoch is not None:
        module.load_state_dict(checkpoint["state_dict"], strict=False)
    return FitReport(
        epochs_run=trainer.current_epoch,
        steps=trainer.global_step,
        best_val_acc=best_score if monitor == "val_acc" else None,
        best_epoch=best_epoch,
        best_val_loss=best_score if monitor == "val_loss" else None,
        seconds=seconds,
        samples_per_second=timer.samples / max(timer.seconds, 1e-9),
        resumed_from_epoch=resumed_from,
        tokens_per_second=round(timer.tokens / max(timer.seconds, 1e-9), 1) if timer.tokens else None,
        stopped=_why_stopped(early, clock),
        budget={"max_epochs": epochs, "max_steps": options.max_steps, "max_minutes": options.max_minutes,
                "patience": options.patience},
        final_val_loss=None if final_loss is None else float(final_loss),
        lr_search=searched,
    )


CSV_LOGGERS = ("csv", "mlflow", "wandb")  # the loggers that keep the CSV log in the artifact


def _loggers(name: str, workdir: Path) -> Any:
    """Lightning's loggers for ``--logger``: the CSV log (copied into the artifact by the job runner) for csv, mlflow
    and wandb, plus, for mlflow and wandb, Lightning's logger attached to the job's tracking run
    (``adaptlab.training.tracking``); TensorBoard's event files; or none (False)."""
    from adaptlab.training import tracking

    if name == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(workdir, name="logs", version="")
    if name not in CSV_LOGGERS:
        return False
    log = training_log_path(workdir)  # the job runner copies it into the artifact
    loggers: list = [L.pytorch.loggers.CSVLogger(log.parent.parent, name=log.parent.name, version="")]
    run = tracking.current()
    if name == "mlflow":
        uri, experiment = tracking.mlflow_location()
        loggers.append(L.pytorch.loggers.MLFlowLogger(experiment_name=experiment, tracking_uri=uri,
                                                      run_id=None if run is None else run.run_id))
    elif name == "wandb":
        loggers.append(L.pytorch.loggers.WandbLogger(experiment=None if run is None else run.run,
                                                     project=tracking.DEFAULT_EXPERIMENT, save_dir=str(workdir)))
    return loggers[0] if len(loggers) == 1 else loggers


def _score_the_start(trainer: L.Trainer, module: L.LightningModule, data: BatchDataModule, path: Path, monitor: str) -> float:
    """Validate the model before any step and keep its trainable weights (``start.ckpt``): a run whose training
    never beats its start (a head that starts from the probe, a causal LM that a learning rate harms) ends where it
    started instead of worse. A resumed run reads the score its first attempt stored."""
    if path.exists():
        return float(torch.load(path, map_location="cpu", weights_only=False)["score"])
    loggers, trainer.loggers = trainer.loggers, []  # the training log starts with the first epoch, as before
    try:
        score = float(trainer.validate(module, datamodule=data, verbose=False)[0][monitor])
    finally:
        trainer.loggers = loggers
    state = {k: v.detach().clone() for k, v in module.trainable_only(module.state_dict()).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "score": score}, path)
    return score


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _why_stopped(early: EarlyStopping | None, clock: Timer | None) -> str:
    if early is not None and early.stopped_epoch > 0:
        return "converged"
    remaining = None if clock is None else clock.time_remaining("train")
    if remaining is not None and remaining <= 0:
        return "time_cap"
    return "step_cap"


def _checkpoint_activations(model: torch.nn.Module) -> None:
    """Turn on transformers' gradient checkpointing in the (first) pretrained model inside ``model``; the
    non-reentrant variant, which needs no input gradients, so frozen embeddings (LoRA) work as they are."""
    from adaptlab.errors import AdaptlabError

    for module in model.modules():
        if getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            module.config.use_cache = False
            return
    raise AdaptlabError("--gradient-checkpointing: this model has no transformer that supports it")


def _log_rows_before(log: Path, epoch: int) -> list[dict]:
    """The CSV log's rows for the epochs a resumed run does not redo (Lightning's logger starts a fresh file)."""
    if not log.is_file():
        return []
    with open(log, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row.get("epoch", "").isdigit() and int(row["epoch"]) < epoch]


def _prepend_log_rows(log: Path, rows: list[dict]) -> None:
    from adaptlab._io import atomic_file

    with open(log, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        later, columns = list(reader), list(reader.fieldnames or [])
    columns += [name for row in rows for name in row if name not in columns]
    with atomic_file(log) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(columns)), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + later)
