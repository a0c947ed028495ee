"""Which precision a served model's forward passes run in.

``auto`` (the default) runs passes of at least ``BF16_MIN_BATCH`` texts under bf16 autocast where the hardware
computes bf16 natively (CPUs with AVX512-BF16/AMX, recent GPUs), and only for a model whose answers bf16 does
not move: at load the server classifies ``PROBE_TEXTS`` both ways and keeps fp32 if any probability changes
by more than ``BF16_TOLERANCE``. Why both rules, measured on this project's 2-core AMX CPU:

- a LoRA minilm classifier does 101 texts/s in fp32 and 66 in bf16 one text at a time, but 191 vs 402 texts/s
  in batches of 32: bf16 pays only once the matrices are large, which is when micro-batching has filled a
  batch (the crossover is at 8 texts);
- that classifier's probabilities move by 2e-4 in bf16 (no label changes on 600 test texts), but a zero-shot
  SmolLM2 label-word scorer's move by up to 0.06 and 10% of its labels flip: it stays in fp32.

``fp32`` gives every artifact's own numbers exactly; ``bf16`` autocasts every pass of every model.

The names are ``adaptlab.runtime``'s and mean what they mean for every job: ``fp32`` no autocast, ``bf16``
bfloat16 autocast over fp32 weights (``Runtime.resolved_precision`` decides where ``auto`` may use it). Only
``auto``'s two extra rules above are serving's own, and ``fp16`` (a CUDA training option) is not offered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.runtime import PRECISIONS, Runtime

BF16_MIN_BATCH = 8  # smallest pass ``auto`` runs in bf16 (the measured CPU crossover)
BF16_TOLERANCE = 1e-2  # largest probability change on the probe texts ``auto`` accepts
PROBE_TEXTS = (
    "A wonderful, moving film with a cast at the top of its game.",
    "Dull, predictable and far too long.",
    "The service was slow but the food made up for it.",
    "I would not recommend this product to anyone.",
    "Shares rose sharply after the company reported record quarterly earnings.",
    "The committee will meet again on Tuesday to discuss the budget.",
    "How do I reset my password if I no longer have access to my email?",
    "It was fine, I guess.",
    "Absolutely brilliant!",
    "The battery died after two days and support never answered.",
    "Scientists observed the comet passing closer to the sun than ever recorded.",
    "Not bad at all, though the ending felt rushed and the middle dragged on for a while.",
    "Terrible.",
    "The new update fixed the crashes and the app feels much faster now.",
    "We waited an hour for a table, and then they lost our order.",
    "An uneven but often charming debut from a director worth watching.",
)


@dataclass(frozen=True)
class PrecisionPlan:
    bf16_from: int | None  # passes of at least this many texts run in bf16; None: always fp32
    device_type: str = "cpu"  # where the autocast applies
    drift: float | None = None  # largest bf16 probability change on the probe texts, where measured

    def describe(self) -> str:
        if self.bf16_from is None:
            return "fp32"
        return "bf16" if self.bf16_from <= 1 else f"bf16 for passes of {self.bf16_from}+ texts, fp32 below"

    def apply(self, predict: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray]:
        """``predict`` under bf16 autocast where this plan says so. The autocast is entered inside the returned
        function, i.e. on the compute thread, because autocast state belongs to a thread."""

        def run(texts: list[str]) -> np.ndarray:
            if self.bf16_from is None or len(texts) < self.bf16_from:
                return predict(texts)
            import torch

            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                return predict(texts)

        return run


SERVE_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")  # auto, fp32, bf16


def check_serve_precision(precision: str) -> None:
    if precision not in SERVE_PRECISIONS:
        raise AdaptlabError(f"--precision must be one of {', '.join(SERVE_PRECISIONS)} for serving, not '{precision}'")


def plan_precision(predict: Callable[[list[str]], np.ndarray], precision: str, device: str | None) -> PrecisionPlan:
    """Resolve ``precision`` (auto | fp32 | bf16) for one model; ``auto`` runs the probe described above."""
    check_serve_precision(precision)
    runtime = Runtime(device, precision)
    device = runtime.torch_device
    resolved = runtime.resolved_precision()  # auto -> bf16 where native, else fp32
    if resolved == "fp32":
        return PrecisionPlan(None)
    if precision == "bf16":
        return PrecisionPlan(1, device.type)
    texts = list(PROBE_TEXTS)
    fp32 = predict(texts)
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = predict(texts)
    drift = float(np.abs(fp32 - bf16).max())
    return PrecisionPlan(BF16_MIN_BATCH if drift <= BF16_TOLERANCE else None, device.type, drift)
