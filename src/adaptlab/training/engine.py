"""Engineering around the research modules: the Lightning Trainer, checkpoints, resume, best model.

One engine for every objective: ``classification`` (``ClassificationModule``, best model by validation
accuracy) and ``causal-lm`` (``CausalLMModule`` for supervised fine-tuning, best by validation loss).

Checkpoints live in the job's work directory (``<output>.work/``, see ``adaptlab.jobs``): ``last.ckpt`` after every epoch (what ``resume`` continues from;
an epoch cut short is redone, with the same batches and the same dropout) and ``best.ckpt``, selected on
validation only. After training the best weights are loaded back. The accelerator,
devices and precision come from the job's ``Runtime``; ``devices``, ``strategy`` and ``num_nodes`` go on to
Lightning, so the same run scales to DDP/FSDP/DeepSpeed.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar

from adaptlab.errors import AdaptlabError
from adaptlab.jobs import training_log_path
from adaptlab.params import param
from adaptlab.progress import stderr
from adaptlab.runtime import DEPRECATED_PRECISIONS, PRECISIONS, Runtime, normalize_precision
from adaptlab.training.data import BatchDataModule
from adaptlab.training.module import SCHEDULES, CausalLMModule, ClassificationModule

# Lightning's start-up chatter (GPU/TPU availability, tips) is not what a user needs to read.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)

LOGGERS = ("csv", "tensorboard", "none")
#: objective -> (module, the validation metric that picks the best epoch, and its direction)
OBJECTIVES = {"classification": (ClassificationModule, "val_acc", "max"), "causal-lm": (CausalLMModule, "val_loss", "min")}
ACCELERATOR_TO_DEVICE = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}


@dataclass(kw_only=True, eq=False)
class TrainingOptions:
    """What every gradient-based job exposes (names follow Lightning / HF Trainer). Strategies inherit these
    fields and override the defaults that differ (``lr``, ``epochs``)."""

    epochs: int = param(3, "Training epochs.", minimum=1)
    batch_size: int = param(32, "Examples per optimiser step (before accumulation).", minimum=1)
    lr: float = param(5e-5, "Peak learning rate.", above=0)
    weight_decay: float = param(0.01, "AdamW weight decay (not applied to biases and norms).", minimum=0)
    warmup_ratio: float = param(0.06, "Fraction of steps spent warming up the learning rate.", minimum=0, below=1)
    schedule: str = param("linear", "Learning-rate schedule.", choices=SCHEDULES)
    grad_accum: int = param(1, "Accumulate gradients over this many batches.", minimum=1)
    grad_clip: float | None = param(1.0, "Clip the gradient norm to this value.", above=0)
    precision: str = param("auto", "fp32, bf16 or fp16 (CUDA); auto: bf16 on CUDA GPUs that have it, else fp32.",
                           choices=PRECISIONS + tuple(DEPRECATED_PRECISIONS))
    patience: int | None = param(None, "Stop early after this many epochs without validation gain.", minimum=1)
    group_by_length: bool = param(True, "Batch texts of similar length together (less padding).")
    seed: int = param(0, "Seed for the split and for training.", minimum=0, below=2**32)
    logger: str = param("csv", "Training log: csv (kept in the artifact), tensorboard, none.", choices=LOGGERS)
    devices: str | None = param(None, "Lightning devices for multi-process training: a count or a list such as 0,1.", runtime=True)
    strategy: str = param("auto", "Lightning strategy: auto, ddp, fsdp, deepspeed_stage_2 ...", runtime=True)
    num_nodes: int = param(1, "Machines for multi-node training.", runtime=True, minimum=1)
    accelerator: str | None = param(None, "Deprecated: use --device.", runtime=True, choices=("auto", *ACCELERATOR_TO_DEVICE))
    resume: bool = param(False, "Continue from the last checkpoint of an interrupted run.", runtime=True)
    callbacks: list = param(runtime=True, cli=False, default_factory=list)

    def check_training(self) -> None:
        """Normalise deprecated spellings (with a line on stderr) and check what needs an optional package."""
        self.precision = normalize_precision(self.precision)
        if self.accelerator is not None:
            replacement = ACCELERATOR_TO_DEVICE.get(self.accelerator)
            print(f"adaptlab: --accelerator is deprecated; use --device {replacement or 'DEVICE'}", file=sys.stderr)
            if getattr(self, "device", None) is None and replacement is not None:
                self.device = replacement
            self.accelerator = None
        if self.logger == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise AdaptlabError("--logger tensorboard needs the tensorboard package: pip install tensorboard") from None

    def lightning_devices(self, runtime: Runtime) -> dict:
        """accelerator/devices/precision from the runtime; ``--devices`` (a count or ids) asks for several."""
        args = runtime.lightning()
        if self.devices is not None:
            text = str(self.devices)
            if text != "auto" and not text.replace(",", "").isdigit():
                raise AdaptlabError(f"--devices must be auto, a count or a list such as 0,1, not '{text}'")
            ids = [int(d) for d in text.split(",")] if text != "auto" else None
            args["devices"] = "auto" if ids is None else (ids[0] if len(ids) == 1 else ids)
        return args


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
               runtime: Runtime, objective: str = "classification") -> FitReport:
    """Train ``model`` in place in ``workdir`` (the job's); on return it holds the best weights by the
    objective's validation metric (accuracy for classifiers, loss for causal LMs)."""
    last = workdir / "checkpoints" / "last.ckpt"
    if options.resume and not last.exists():
        stderr.print(f"no checkpoint in {workdir} to resume from; starting from scratch")
    model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it is given
    module_class, monitor, mode = OBJECTIVES[objective]
    module = module_class(
        model, lr=options.lr, weight_decay=options.weight_decay, warmup_ratio=options.warmup_ratio,
        schedule=options.schedule, seed=options.seed,
    )
    best = ModelCheckpoint(
        dirpath=workdir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    timer = _EpochTimer()
    callbacks: list[Callback] = [best, timer, *options.callbacks]
    if options.patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=options.patience))
    if options.progress:
        callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))  # stdout stays clean for --json
    logger: Any = False
    if options.logger == "csv":
        log = training_log_path(workdir)  # the job runner copies it into the artifact
        logger = L.pytorch.loggers.CSVLogger(log.parent.parent, name=log.parent.name, version="")
    elif options.logger == "tensorboard":
        logger = L.pytorch.loggers.TensorBoardLogger(workdir, name="logs", version="")
    trainer = L.Trainer(
        max_epochs=options.epochs,
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
        best_val_acc=best_score if monitor == "val_acc" else None,
        best_epoch=best_epoch,
        best_val_loss=best_score if monitor == "val_loss" else None,
        seconds=seconds,
        samples_per_second=timer.samples / max(timer.seconds, 1e-9),
        resumed_from_epoch=resumed_from,
        tokens_per_second=round(timer.tokens / max(timer.seconds, 1e-9), 1) if timer.tokens else None,
    )
