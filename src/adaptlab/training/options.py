"""The options every gradient-based job exposes, declared apart from the engine so that building the command
line (and validating a YAML file) needs neither Lightning nor torch."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError
from adaptlab.params import param
from adaptlab.runtime import DEPRECATED_PRECISIONS, PRECISIONS, normalize_precision
from adaptlab.training.tracking import LOGGERS, check_logger

if TYPE_CHECKING:
    from adaptlab.runtime import Runtime

SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
ACCELERATOR_TO_DEVICE = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}


#: Lightning's registered strategy names, kept here so that a wrong --strategy is refused without importing Lightning
#: (seconds); tests/test_training.py checks the list against the installed Lightning's registry
LIGHTNING_STRATEGIES = (
    "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true", "ddp_notebook",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1",
    "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_tpu", "single_xla", "xla",
    "xla_debug",
)


@dataclass(kw_only=True, eq=False)
class TrainingOptions:
    """What every gradient-based job exposes (names follow Lightning / HF Trainer). Strategies inherit these
    fields and override the defaults that differ (``lr``, ``epochs``)."""

    epochs: int = param(3, "Training epochs.", minimum=1, maximum=10_000)
    batch_size: int = param(32, "Examples per optimiser step (before accumulation).", minimum=1, below=2**31)
    lr: float = param(5e-5, "Peak learning rate.", above=0, maximum=10)
    weight_decay: float = param(0.01, "AdamW weight decay (not applied to biases and norms).", minimum=0, maximum=1)
    warmup_ratio: float = param(0.06, "Fraction of steps spent warming up the learning rate.", minimum=0, below=1)
    schedule: str = param("linear", "Learning-rate schedule.", choices=SCHEDULES)
    grad_accum: int = param(1, "Accumulate gradients over this many batches.", minimum=1, below=2**31)
    grad_clip: float | None = param(1.0, "Clip the gradient norm to this value.", above=0)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass instead of keeping them: "
                                                "about half the training memory for about a third more compute.")
    precision: str = param("auto", "fp32, bf16 or fp16 (CUDA); auto: bf16 on CUDA GPUs that have it, else fp32.",
                           choices=PRECISIONS + tuple(DEPRECATED_PRECISIONS))
    patience: int | None = param(None, "Stop early after this many epochs without validation gain (the best epoch is kept).",
                                 minimum=1)
    max_steps: int | None = param(None, "Budget: stop after this many optimiser steps even if --epochs are left; the "
                                  "learning-rate schedule spans the budget (default: --epochs decide).", minimum=1)
    lr_search: bool = param(False, "Before training, try --lr / 3, --lr and 3 x --lr for one epoch each from the same start "
                                   "and train with the one of lowest validation loss (counted in the training time).")
    max_minutes: float | None = param(None, "Time cap: stop training after this many minutes (the best epoch so far is "
                                      "kept; the manifest says the run hit the cap).", above=0, maximum=525_600)
    group_by_length: bool = param(True, "Batch texts of similar length together (less padding).")
    seed: int = param(0, "Seed for the split and for training.", minimum=0, below=2**32)
    logger: str = param("csv", "Training log: csv (kept in the artifact), tensorboard, mlflow or wandb (a tracking run with "
                               "the params, per-step metrics and the artifact; the csv is kept too), none.", choices=LOGGERS)
    devices: str | None = param(None, "Lightning devices for multi-process training: a count or a list such as 0,1.", runtime=True)
    strategy: str = param("auto", "Lightning strategy: auto, ddp, fsdp, deepspeed_stage_2 ...", runtime=True)
    num_nodes: int = param(1, "Machines for multi-node training.", runtime=True, minimum=1, maximum=100_000)
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
        if self.devices is not None:
            text = str(self.devices).strip()
            parts = [part.strip() for part in text.split(",")]
            if text != "auto" and not (all(p.isdigit() for p in parts) and (len(parts) > 1 or int(parts[0]) >= 1)):
                raise AdaptlabError(f"--devices must be auto, a count of at least 1, or device ids such as 0,1, not '{text}'")
        if self.strategy != "auto" and self.strategy not in LIGHTNING_STRATEGIES:
            raise AdaptlabError(f"--strategy must be auto or one of Lightning's: {', '.join(LIGHTNING_STRATEGIES)}; "
                                f"not '{self.strategy}'")
        check_logger(self.logger)  # tensorboard, mlflow, wandb: one line with the pip command if missing

    def epoch_budget(self, batches_per_epoch: int, epochs: int | None = None) -> int:
        """``epochs`` (default ``self.epochs``), or fewer when ``max_steps`` optimiser steps run out first. The budget
        is rounded up to whole epochs, so every run ends on a validated epoch (a cut epoch would train steps no
        checkpoint can choose)."""
        epochs = epochs or self.epochs
        if self.max_steps is None:
            return epochs
        per_epoch = max(1, -(-batches_per_epoch // self.grad_accum))
        return max(1, min(epochs, -(-self.max_steps // per_epoch)))

    def lightning_devices(self, runtime: Runtime) -> dict:
        """accelerator/devices/precision from the runtime; ``--devices`` (a count or ids) asks for several."""
        args = runtime.lightning()
        if self.devices is not None:  # checked in check_training: auto, a count, or a list of ids
            text = str(self.devices).strip()
            ids = [int(d) for d in text.split(",")] if text != "auto" else None
            args["devices"] = "auto" if ids is None else (ids[0] if len(ids) == 1 else ids)
        return args
