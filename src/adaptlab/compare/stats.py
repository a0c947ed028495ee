"""The statistics every comparison task shares: bootstrap intervals, ties with the best, Pareto fronts, and how
counts are written.

Uncertainty has two sources and both are reported: training seeds (mean ± std over ``--seeds`` runs) and the
finite test set (a 95% bootstrap interval: test examples resampled with replacement, each example's score averaged
over seeds). Two entries are called *tied* when a paired bootstrap on the same resampled examples shows the better
one ahead in fewer than 95% of resamples. The resamples are drawn once per comparison (seed 0), so every entry and
every metric is judged on the same ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def resamples(n: int) -> np.ndarray:
    """(BOOTSTRAP_SAMPLES, n) indices of test examples, drawn with replacement."""
    return np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))


def interval(scores: np.ndarray, indices: np.ndarray) -> list[float]:
    """The 95% bootstrap interval of the mean of per-example ``scores``."""
    means = scores[indices].mean(axis=1)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return [round(float(low), 4), round(float(high), 4)]


def mark_ties(entries: list[dict], scores: Callable[[dict], np.ndarray], indices: np.ndarray) -> None:
    """``p_best_ahead`` (how often the first entry, the best, is ahead on the same resample) and ``tied_with_best``."""
    best = scores(entries[0])[indices].mean(axis=1)
    for entry in entries:
        ahead = float((best > scores(entry)[indices].mean(axis=1)).mean())
        entry["p_best_ahead"] = round(ahead, 4)
        entry["tied_with_best"] = entry is entries[0] or ahead < CONFIDENCE


def mark_pareto(entries: list[dict], quality: Callable[[dict], float], fronts: tuple[tuple[str, str], ...]) -> None:
    """For each ``(cost key, flag)`` front: an entry is on it when no other entry is at least as good and at least as
    cheap, and better in one (a missing cost counts as zero)."""
    for cost, flag in fronts:
        for entry in entries:
            good, price = quality(entry), entry[cost] or 0
            entry[flag] = not any(
                other is not entry and quality(other) >= good and (other[cost] or 0) <= price
                and (quality(other) > good or (other[cost] or 0) < price)
                for other in entries)


def count(n: int) -> str:
    """1234567 -> 1.23M: parameter counts in table cells."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
