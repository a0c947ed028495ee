"""Engineering around ``ClassificationModule``: the Lightning Trainer, checkpoints, resume, best model.

Checkpoints live in ``<output>.work/``: ``last.ckpt`` after every epoch (what ``resume`` continues from;
an epoch cut short is redone, with the same batches and the same dropout) and ``best.ckpt``, selected on
validation accuracy only. After training the best weights are loaded back. ``devices``, ``strategy``,
``num_nodes`` and ``accelerator`` go straight to Lightning, so the same run scales to DDP/FSDP/DeepSpeed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar

from adaptlab.errors import AdaptlabError
from adaptlab.progress import stderr
from adaptlab.training.data import ClassificationDataModule
from adaptlab.training.module import SCHEDULES, ClassificationModule

# Lightning's start-up chatter (GPU/TPU availability, tips) is not what a user needs to read.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PRECISIONS = ("32", "bf16-mixed", "16-mixed", "bf16-true")
LOGGERS = ("csv", "tensorboard", "none")


@dataclass
class TrainingOptions:
    """What every gradient-based strategy exposes (names follow Lightning / HF Trainer)."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    schedule: str = "linear"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: str = "32"
    patience: int | None = None
    group_by_length: bool = True
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    logger: str = "csv"
    resume: bool = False
    progress: bool = True
    callbacks: list = field(default_factory=list)

    def check(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum, "num_nodes": self.num_nodes}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise AdaptlabError(f"--{name.replace('_', '-')} must be a positive integer, not {value!r}")
        if not self.lr > 0:
            raise AdaptlabError(f"--lr must be positive, not {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise AdaptlabError(f"--warmup-ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise AdaptlabError(f"--weight-decay must be >= 0, not {self.weight_decay}")
        if self.patience is not None and self.patience < 1:
            raise AdaptlabError(f"--patience must be at least 1, not {self.patience}")
        for name, value, allowed in (
            ("precision", str(self.precision), PRECISIONS),
            ("schedule", self.schedule, SCHEDULES),
            ("logger", self.logger, LOGGERS),
        ):
            if value not in allowed:
                raise AdaptlabError(f"--{name} must be one of {', '.join(allowed)}, not '{value}'")
        if self.logger == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise AdaptlabError("--logger tensorboard needs the tensorboard package: pip install tensorboard") from None


@dataclass
class FitReport:
    epochs_run: int
    steps: int
    best_val_acc: float | None
    best_epoch: int | None
    seconds: float
    samples_per_second: float
    resumed_from_epoch: int | None


class _EpochTimer(Callback):
    """Counts the samples actually trained on, for an honest throughput figure (also shown in the bar)."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._start = 0.0
        self._epoch_samples = 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()
        self._epoch_samples = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch["labels"])
        self._epoch_samples += len(batch["labels"])
        elapsed = time.perf_counter() - self._start
        module.log("samples_per_s", self._epoch_samples / max(elapsed, 1e-9), prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds += time.perf_counter() - self._start


def work_dir(output: Path) -> Path:
    return Path(str(output) + ".work")


def fit_module(model: torch.nn.Module, data: ClassificationDataModule, options: TrainingOptions, output: Path) -> FitReport:
    """Train ``model`` in place; on return it holds the best weights by validation accuracy."""
    workdir = work_dir(output)
    last = workdir / "checkpoints" / "last.ckpt"
    if options.resume and not last.exists():
        stderr.print(f"no checkpoint in {workdir} to resume from; starting from scratch")
    if not options.resume and workdir.exists():
        shutil.rmtree(workdir)
    model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it is given
    module = ClassificationModule(
        model, lr=options.lr, weight_decay=options.weight_decay, warmup_ratio=options.warmup_ratio,
        schedule=options.schedule, seed=options.seed,
    )
    best = ModelCheckpoint(
        dirpath=workdir / "checkpoints", filename="best", monitor="val_acc", mode="max", save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    timer = _EpochTimer()
    callbacks: list[Callback] = [best, timer, *options.callbacks]
    if options.patience:
        callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=options.patience))
    if options.progress:
        callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))  # stdout stays clean for --json
    logger: Any = False
    if options.logger == "csv":
        logger = L.pytorch.loggers.CSVLogger(workdir, name="logs", version="")
    elif options.logger == "tensorboard":
        logger = L.pytorch.loggers.TensorBoardLogger(workdir, name="logs", version="")
    trainer = L.Trainer(
        max_epochs=options.epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        strategy=options.strategy,
        num_nodes=options.num_nodes,
        precision=options.precision,
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
    )
    resumed_from = None
    ckpt_path = None
    if options.resume and last.exists():
        ckpt_path = str(last)
        resumed_from = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        stderr.print(f"resuming from {last} (epoch {resumed_from} of {options.epochs})")
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    best_epoch = None
    if best.best_model_path:
        checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(checkpoint["state_dict"], strict=False)
        best_epoch = int(checkpoint["epoch"])
    best_score = None if best.best_model_score is None else float(best.best_model_score)
    return FitReport(
        epochs_run=trainer.current_epoch,
        steps=trainer.global_step,
        best_val_acc=best_score,
        best_epoch=best_epoch,
        seconds=seconds,
        samples_per_second=timer.samples / max(timer.seconds, 1e-9),
        resumed_from_epoch=resumed_from,
    )
