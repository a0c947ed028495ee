"""The linear probe that fine-tuning starts from (LP-FT: Kumar et al. 2022, "Fine-tuning can distort pretrained
features and underperform out-of-distribution").

A new classification head starts at random; its first steps push large, random gradients into the pretrained
weights, and on a many-class task with few examples a short schedule ends before the head has even caught up
with a linear probe on the frozen features. Starting the head from the probe's solution instead (logistic
regression on exactly the features the head sees, regularisation chosen on validation, as ``features-logreg``
does) means no fine-tuning run starts below the probe: step 0 predicts what the probe predicts.

Also the one place that chooses logistic regression's ``C`` on validation, for ``features-logreg`` and the probe.

A fitted probe is stored in adaptlab's cache under a key of everything it depends on (the weights' fingerprint, what
the head reads, the token limit, the runtime, the training and validation data, the seed), so the entries of one
comparison that see the same features (on minilm: head-less last-k, full, LoRA and the prompt-learning methods all
read the token mean of the frozen model) compute it once; a different input gives a different key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
PROBE_CACHE = "probes"


def choose_c(make_estimator: Callable[[float], Any], x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
             y_val: np.ndarray) -> tuple[float, dict[float, float]]:
    """The ``C`` of ``C_GRID`` with the best validation accuracy (ties go to the stronger regularisation), and
    every candidate's accuracy."""
    scores = {}
    for c in C_GRID:
        candidate = make_estimator(c).fit(x_train, y_train)
        scores[c] = float((candidate.predict(x_val) == y_val).mean())
    return max(C_GRID, key=lambda c: (scores[c], -c)), scores


@dataclass
class Probe:
    """A fitted probe as one linear layer over the raw features (the scaler folded in): ``x @ weight.T + bias``
    gives logits whose softmax is the probe's predicted probabilities."""

    weight: np.ndarray  # (classes, features)
    bias: np.ndarray  # (classes,)
    C: float
    val_accuracy: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def report(self) -> dict:
        return {"C": self.C, "val_accuracy": round(self.val_accuracy, 4)}


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, classes: int,
              seed: int, intercept: bool = True) -> Probe:
    """Logistic regression on ``x_train``, ``C`` chosen on ``x_val``; ``intercept=False`` for a head without bias.

    Features are centred and divided by one overall scale, not standardised per dimension: a dimension that barely
    varies (common in a pooler's tanh outputs) would otherwise get a weight hundreds of times larger than the rest,
    which makes the head's logits fragile (bf16 inference) and its first gradients into the backbone huge."""
    from sklearn.linear_model import LogisticRegression

    mean = x_train.mean(axis=0) if intercept else np.zeros(x_train.shape[1])
    scale = float(np.sqrt(((x_train - mean) ** 2).mean())) or 1.0
    z_train, z_val = (x_train - mean) / scale, (x_val - mean) / scale
    make = lambda c: LogisticRegression(C=c, fit_intercept=intercept, max_iter=2000, random_state=seed)
    best, scores = choose_c(make, z_train, y_train, z_val, y_val)
    model = make(best).fit(z_train, y_train)
    coef = model.coef_ / scale  # w . (x - mean) / scale  ==  (w / scale) . x - (w / scale) . mean
    intercept_ = (model.intercept_ if intercept else np.zeros(len(coef))) - coef @ mean
    if coef.shape[0] == 1:  # binary: one score z for class 1; logits (-z/2, z/2) give the same probabilities
        coef, intercept_ = np.vstack([-coef / 2, coef / 2]), np.array([-intercept_[0] / 2, intercept_[0] / 2])
    weight = np.zeros((classes, x_train.shape[1]))
    # a class absent from training is never predicted (with a bias; without one it starts at zero logits)
    bias = np.full(classes, float(intercept_.min()) - 10.0)
    weight[model.classes_], bias[model.classes_] = coef, intercept_
    return Probe(weight.astype(np.float32), bias.astype(np.float32), best, scores[best])


def head_inputs(model: nn.Module, head: nn.Module, batches: Iterable[dict], device: torch.device) -> np.ndarray:
    """What ``head`` receives for each example, in order, with ``model`` frozen and in eval mode (no dropout). A
    head applied at every position (decoders score each token and pool the last one; this project pads them on
    the left) gives the last position's input."""
    import torch

    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**{k: v.to(device) for k, v in batch.items() if k not in ("labels", "weights")})
    finally:
        hook.remove()
        model.train(was_training)
    features = torch.cat([x[:, -1] if x.ndim == 3 else x for x in captured])
    return features.float().cpu().numpy()


def load_probe(linear: nn.Linear, probe: Probe) -> None:
    """Set a linear head to the probe (the bias is zero where the layer has none: decoders' ``score``)."""
    import torch

    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(probe.weight, dtype=linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.copy_(torch.as_tensor(probe.bias, dtype=linear.bias.dtype))


def cached_probe(key: dict, fit: Callable[[], Probe]) -> Probe:
    """The probe stored under ``key`` (JSON-able: see the module docstring), or ``fit()``'s, stored for the next
    caller. Stored as safetensors + JSON (no pickle); an unreadable entry is fitted again."""
    import hashlib
    import json

    from safetensors.numpy import load_file, save_file

    from adaptlab._io import write_json
    from adaptlab.models.registry import cache_root

    digest = hashlib.sha256(json.dumps({**key, "C_GRID": C_GRID}, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_root() / PROBE_CACHE
    weights, record = folder / f"{digest}.safetensors", folder / f"{digest}.json"
    try:
        tensors, meta = load_file(weights), json.loads(record.read_text(encoding="utf-8"))
        return Probe(tensors["weight"], tensors["bias"], meta["C"], meta["val_accuracy"])
    except (OSError, ValueError, KeyError):
        pass
    probe = fit()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": probe.weight, "bias": probe.bias}, str(weights))
    write_json(record, {"C": probe.C, "val_accuracy": probe.val_accuracy})  # last: it marks the entry complete
    return probe

