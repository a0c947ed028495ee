"""adaptlab: adapt a language model to your task in every way the field knows, and measure which is worth it.

The Python API mirrors the CLI::

    import adaptlab
    splits = adaptlab.load_splits("rotten_tomatoes", train_size=2000, seed=0)
    result = adaptlab.train("features", splits, "runs/rt", model="minilm", classifier="logreg")
    print(result.metrics["accuracy"])
    adaptlab.load_artifact("runs/rt").predict(["a gorgeous, moving film"])
    vectors = adaptlab.embed(["some text"], model="minilm")

    # generation: supervised fine-tuning of a causal LM (conversations, prompt/completion or plain text)
    tasks = adaptlab.load_generation_splits("wiki-descriptions", train_size=512, test_size=64)
    manifest = adaptlab.train_sft(tasks, "runs/sft", method="lora").manifest
    print(manifest["metrics"]["test"]["rouge_l"], manifest["metrics"]["forgetting"]["general_ppl_relative"])
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab._version import __version__  # noqa: F401 (the public version attribute)
from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    import numpy as np

    from adaptlab.data import LabeledTexts, Splits, load_data, split_data
    from adaptlab.embeddings import Embedder
    from adaptlab.data.generation import GenerationSplits, load_generation_data, load_generation_splits
    from adaptlab.runner import Artifact, TrainResult, load_artifact, train
    from adaptlab.sft import SFTJob, train_sft

# Heavy modules (torch, transformers, pandas) load on first use, so `adaptlab --help` starts instantly.
_LAZY = {
    "LabeledTexts": "adaptlab.data",
    "Splits": "adaptlab.data",
    "load_data": "adaptlab.data",
    "split_data": "adaptlab.data",
    "Embedder": "adaptlab.embeddings",
    "Artifact": "adaptlab.runner",
    "TrainResult": "adaptlab.runner",
    "load_artifact": "adaptlab.runner",
    "train": "adaptlab.runner",
    "GenerationSplits": "adaptlab.data.generation",
    "load_generation_data": "adaptlab.data.generation",
    "load_generation_splits": "adaptlab.data.generation",
    "SFTJob": "adaptlab.sft",
    "train_sft": "adaptlab.sft",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptlab' has no attribute '{name}'")


def load_splits(
    source: str | Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    train_data: str | Path | None = None,
    val_data: str | Path | None = None,
    test_data: str | Path | None = None,
    keep_splits: bool = False,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
) -> "Splits":
    """Load and validate a dataset, then cut its deterministic stratified train/validation/test split
    (``test_fraction``, ``val_fraction`` of it) -- or keep the user's own: ``train_data`` + ``test_data`` (+
    ``val_data``, else cut from train), each a file, named dataset, Hub id or Hub ``NAME:SPLIT``; ``keep_splits``
    keeps a Hub dataset's named splits. Sizes then sub-sample each split."""
    from adaptlab.config import DataConfig
    from adaptlab.data.splits import check_split_options

    check_split_options(seed, train_size=train_size, val_size=val_size, test_size=test_size)  # the API's own wording
    return DataConfig(source=source, text_column=text_column, label_column=label_column, id_column=id_column, seed=seed,
                      train_size=train_size, val_size=val_size, test_size=test_size, train_data=train_data and str(train_data),
                      val_data=val_data and str(val_data), test_data=test_data and str(test_data), keep_splits=keep_splits,
                      test_fraction=test_fraction, val_fraction=val_fraction).load()


def embed(texts: Sequence[str], model: str = "minilm", pooling: str = "mean", **options: Any) -> "np.ndarray":
    """Embed texts with a frozen model (cached on disk); see ``Embedder`` for the options."""
    from adaptlab.embeddings import Embedder

    return Embedder(model, pooling, **options).embed(texts)


__all__ = [
    "AdaptlabError",
    "Artifact",
    "Embedder",
    "GenerationSplits",
    "LabeledTexts",
    "SFTJob",
    "Splits",
    "TrainResult",
    "embed",
    "load_artifact",
    "load_data",
    "load_generation_data",
    "load_generation_splits",
    "load_splits",
    "split_data",
    "train",
    "train_sft",
]
