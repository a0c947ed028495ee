"""Deterministic stratified train / validation / test splits.

The split is cut in a fixed order from one seed: first the test pool, then the validation pool, and the
rest is the training pool. Sub-sampling (``train_size`` etc.) then draws from each pool, so the test set
never depends on how much training data is used, and no example is ever in two splits. The validation
split is for model selection (early stopping, hyper-parameters); the test split only for the final report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptlab.data.dataset import LabeledTexts
from adaptlab.errors import AdaptlabError

MIN_PER_CLASS = 3  # one example of every class in each of train, validation and test


@dataclass(frozen=True)
class Splits:
    train: LabeledTexts
    val: LabeledTexts
    test: LabeledTexts
    seed: int

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names

    def describe(self) -> dict:
        """What the manifest records about the data: where from, sizes, balance, content hashes."""
        return {
            "source": self.train.source,
            **({"split_origins": self.train.origins} if self.train.origins else {}),
            "seed": self.seed,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "class_counts": {"train": self.train.class_counts(), "test": self.test.class_counts()},
            "fingerprints": {
                "train": self.train.fingerprint(),
                "val": self.val.fingerprint(),
                "test": self.test.fingerprint(),
            },
        }


def check_split_options(seed: Any, **sizes: Any) -> None:
    """The split options as the CLI, YAML and the Python API give them: a seed numpy accepts and whole,
    positive sizes (``train_size=2.5``, ``True`` or ``-1`` are one-line errors, not tracebacks later)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise AdaptlabError(f"--seed must be a whole number from 0 to {2**32 - 1}, not {seed!r}")
    for name, size in sizes.items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
            raise AdaptlabError(f"--{name.replace('_', '-')} must be a whole number of at least 1, not {size!r}")


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    """Both in (0, 1) with room left for training (classification and generation splits alike)."""
    if not 0 < test_fraction < 1 or not 0 < val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise AdaptlabError("test and validation fractions must be in (0, 1) and sum to less than 1")


def split_data(
    data: LabeledTexts,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    train_per_class: int | None = None,
) -> Splits:
    """Split ``data`` into stratified train/validation/test sets; sizes sub-sample each pool (``train_per_class``:
    that many training examples of each class, or all of a class that has fewer; the smaller draws are part of the
    larger ones, so a learning curve adds examples rather than swapping them)."""
    check_split_options(seed, train_size=train_size, val_size=val_size, test_size=test_size, train_per_class=train_per_class)
    if train_size is not None and train_per_class is not None:
        raise AdaptlabError("give --train-size or a number of examples per class, not both")
    check_fractions(test_fraction, val_fraction)
    counts = np.bincount(data.labels, minlength=len(data.label_names))
    for name, count in zip(data.label_names, counts):
        if count < MIN_PER_CLASS:
            raise AdaptlabError(
                f"data '{data.source}': label '{name}' has only {count} example(s); a stratified split needs "
                f"at least {MIN_PER_CLASS} per class (add examples or remove the label)"
            )
    if data.splits is not None:
        train_pool, val_pool, test_pool = _given_splits(data, val_fraction, seed)
    else:
        rng = np.random.default_rng(seed)
        n = len(data)
        everything = np.arange(n)
        test_pool, rest = _stratified_take(everything, data.labels, max(round(n * test_fraction), 1), rng)
        val_pool, train_pool = _stratified_take(rest, data.labels, max(round(n * val_fraction), 1), rng)

    if val_size is None and train_size is not None:
        # Keep validation proportionate to a sub-sampled training set (about 1:8), but never tiny.
        val_size = min(len(val_pool), max(train_size // 8, 10 * len(data.label_names)))
    # Each split sub-samples with its own generator, so e.g. the test subset ignores --train-size.
    if train_per_class is not None:
        if val_size is None:
            val_size = min(len(val_pool), max(train_per_class * len(data.label_names) // 8, 10 * len(data.label_names)))
        train = _per_class(train_pool, data.labels, train_per_class, np.random.default_rng([seed, 1]))
    else:
        train = _subsample(train_pool, data.labels, train_size, "--train-size", "training", np.random.default_rng([seed, 1]))
    val = _subsample(val_pool, data.labels, val_size, "--val-size", "validation", np.random.default_rng([seed, 2]))
    test = _subsample(test_pool, data.labels, test_size, "--test-size", "test", np.random.default_rng([seed, 3]))
    return Splits(train=data.subset(train), val=data.subset(val), test=data.subset(test), seed=seed)


def _given_splits(data: LabeledTexts, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pools the data names (a ``split`` column, or the user's own sources); a validation pool cut from training
    (stratified, ``val_fraction`` of it) when the data has none, so early stopping never looks at the test split."""
    pools = {name: np.array([i for i, s in enumerate(data.splits) if s == name], dtype=np.int64) for name in ("train", "val", "test")}
    for name in ("train", "test"):
        if not len(pools[name]):
            raise AdaptlabError(f"data '{data.source}': column 'split' names no {name} rows; every split needs some")
    if not len(pools["val"]):
        pools["val"], pools["train"] = _stratified_take(pools["train"], data.labels,
                                                        max(round(len(pools["train"]) * val_fraction), 1),
                                                        np.random.default_rng([seed, 0]))
    return pools["train"], pools["val"], pools["test"]


def _subsample(pool: np.ndarray, labels: np.ndarray, size: int | None, option: str, what: str, rng) -> np.ndarray:
    if size is None:
        return pool
    n_classes = len(np.unique(labels))
    if size < n_classes:
        raise AdaptlabError(f"{option} {size} is too small: it must hold at least one example of each of the {n_classes} classes")
    if size > len(pool):
        raise AdaptlabError(
            f"{option} {size} is larger than the {len(pool)} {what} examples available; use a smaller value"
        )
    taken, _ = _stratified_take(pool, labels, size, rng)
    return taken


def _per_class(pool: np.ndarray, labels: np.ndarray, k: int, rng) -> np.ndarray:
    """The first ``k`` of a fixed shuffle of each class's pool: the draw for a smaller ``k`` is part of a larger one."""
    order = rng.permutation(pool)
    taken = [order[labels[order] == label][:k] for label in np.unique(labels[pool])]
    return np.sort(np.concatenate(taken))


def _stratified_take(pool: np.ndarray, labels: np.ndarray, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` indices from ``pool`` keeping class proportions (largest-remainder rounding).

    Every class gets at least one example when ``k`` allows it and at least one stays behind when the
    class has more than one, so later splits still see every class.
    """
    classes, counts = np.unique(labels[pool], return_counts=True)
    exact = k * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    if k >= len(classes):
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, np.maximum(counts - 1, 1))
    remainder = exact - quota
    while quota.sum() < k:
        room = quota < counts - 1
        if not room.any():
            room = quota < counts
        i = int(np.argmax(np.where(room, remainder, -np.inf)))
        quota[i] += 1
        remainder[i] -= 1
    while quota.sum() > k:
        i = int(np.argmax(np.where(quota > 1, quota - exact, -np.inf)))
        quota[i] -= 1
    taken, left = [], []
    for cls, q in zip(classes, quota):
        members = rng.permutation(pool[labels[pool] == cls])
        taken.append(members[:q])
        left.append(members[q:])
    return rng.permutation(np.concatenate(taken)), np.sort(np.concatenate(left))
