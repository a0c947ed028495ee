"""Where and in which precision every job runs: one vocabulary for training, inference, TRL and serving.

``Runtime(device, precision)`` is resolved once per job, before any data or model loads, so a bad value
(``--device cuda`` on a machine without CUDA, ``--precision fp16`` on a CPU) is one line and exit 2 instead
of a traceback after training. Precisions:

- ``fp32``: full precision everywhere.
- ``bf16``: matrix products in bfloat16 autocast (weights stay fp32): Lightning's ``bf16-mixed``.
- ``fp16``: float16 autocast with loss scaling (CUDA only): Lightning's ``16-mixed``.
- ``auto`` (default): bf16 where the hardware computes it natively (recent GPUs, CPUs with AVX512-BF16/AMX),
  else fp32, for inference (embedding, scoring, serving). Training resolves ``auto`` to bf16 only on CUDA.
  On a CPU bf16 training is opt-in (``--precision bf16``): measured on a 2-core EPYC without native bf16,
  minilm + LoRA, 1,000 RT sentences, 2 epochs, took 789 s in bf16 autocast vs 32 s in fp32 (same accuracy,
  0.714), and CPUs with native bf16 have not been measured for training.

Lightning's own names (``32``, ``bf16-mixed``, ``16-mixed``, ``bf16-true``) are accepted for one release as
aliases, with a deprecation line on stderr.

What a job's precision covers: SFT trains with ``lightning()`` and evaluates (losses, replies, forgetting
probe) under ``autocast()`` of the same runtime, so ``bf16`` is bf16 autocast in both; DPO passes ``trl()`` to
TRL, whose evaluation runs under the same autocast as its training; PPO and ``rlhf eval`` run in fp32 only
(no option); the classifiers that train a transformer, reward models and the retriever predict in fp32 (for
them the option is the training precision); embedding (``Embedder``) uses ``autocast()`` for inference;
serving takes these names but resolves ``auto`` its own way (``adaptlab.serve.precision``).
"""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:  # torch is imported where a device is resolved, so option validation stays fast
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
DEPRECATED_PRECISIONS = {"32": "fp32", "32-true": "fp32", "bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16"}
_LIGHTNING = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def normalize_precision(value: str, option: str = "--precision") -> str:
    """One of ``PRECISIONS``; old Lightning names map to it with a deprecation line."""
    text = str(value)
    if text in DEPRECATED_PRECISIONS:
        new = DEPRECATED_PRECISIONS[text]
        print(f"adaptlab: {option} {text} is deprecated; use {option} {new}", file=sys.stderr)
        return new
    if text not in PRECISIONS:
        raise AdaptlabError(f"{option} must be one of {', '.join(PRECISIONS)}, not '{text}'")
    return text


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


@dataclass(frozen=True)
class Runtime:
    """A device and a precision. ``device=None`` means CUDA when available, else the CPU. ``training``: what
    ``auto`` resolves for (and what ``describe`` records) — a training job or inference."""

    device: str | None = None
    precision: str = "auto"
    training: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", normalize_precision(self.precision))
        if self.device is not None and not _DEVICE.match(str(self.device)):
            raise AdaptlabError(f"--device must be cpu, cuda, cuda:N or mps, not '{self.device}'")

    @property
    def torch_device(self) -> torch.device:
        """The device, checked: asking for CUDA where there is none fails here, before any work."""
        import torch

        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise AdaptlabError(f"--device {self.device}: this torch sees no CUDA device; use --device cpu")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise AdaptlabError(f"--device {self.device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise AdaptlabError(f"--device {self.device}: MPS is not available here; use --device cpu")
        return device

    def resolved_precision(self, training: bool | None = None) -> str:
        """``fp32``, ``bf16`` or ``fp16`` for this device (see the module docstring for ``auto``); ``training``
        overrides the runtime's own."""
        training = self.training if training is None else training
        device = self.torch_device
        if self.precision == "fp16" and device.type != "cuda":
            raise AdaptlabError("--precision fp16 needs a CUDA device (float16 on a CPU is slow and loses accuracy); use bf16 or fp32")
        if self.precision != "auto":
            return self.precision
        if training and device.type != "cuda":
            return "fp32"
        return "bf16" if native_bf16(device) else "fp32"

    def autocast(self, training: bool | None = None) -> contextlib.AbstractContextManager:
        """The inference context for this precision (a no-op in fp32). For a training runtime it is the precision
        training used (``lightning()``/``trl()``), so a job evaluates in the precision it trained in."""
        precision = self.resolved_precision(training)
        if precision == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.torch_device.type, dtype=dtype)

    def lightning(self) -> dict:
        """Lightning Trainer arguments: accelerator, devices and precision for this device."""
        device = self.torch_device
        accelerator = {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")
        devices = [device.index] if device.index is not None else 1
        return {"accelerator": accelerator, "devices": devices, "precision": _LIGHTNING[self.resolved_precision(training=True)]}

    def trl(self, logger: str | None = None) -> dict:
        """transformers/TRL ``TrainingArguments`` for this device and precision; with ``logger`` (a job's
        ``--logger``) also ``report_to``: TRL's own integration for tensorboard, mlflow or wandb (it logs into the
        job's tracking run, ``adaptlab.training.tracking``), none otherwise."""
        precision = self.resolved_precision(training=True)
        args = {"use_cpu": self.torch_device.type == "cpu", "bf16": precision == "bf16", "fp16": precision == "fp16"}
        if logger is not None:
            args["report_to"] = [logger] if logger in ("tensorboard", "mlflow", "wandb") else "none"
        return args

    def describe(self) -> dict:
        """What a manifest records: the device type and the precision actually used."""
        return {"device": self.torch_device.type, "precision": self.resolved_precision()}
