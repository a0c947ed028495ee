"""The base of every gradient-based strategy: training options, the Lightning engine, token-level prediction.

Default learning rates differ by orders of magnitude on purpose: a head or a soft prompt starts from
scratch and needs large steps; pretrained weights need small ones. The defaults were picked on validation
accuracy (1,000 Rotten Tomatoes sentences, minilm, 3 epochs): full 5e-5, last-k 1e-4, LoRA 1e-3,
P-tuning 1e-2 (vs 3e-3), prefix tuning 2e-2 (vs 5e-3), prompt tuning 1e-1 (vs 3e-3, 3e-2), head 1e-3.
Each strategy's ``lr`` field reads its default from the adaptation layer's one table (``adaptlab.adapt.defaults``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.models.loading import ModelRef, max_positions, resolve_model
from adaptlab.params import param
from adaptlab.runtime import Runtime
from adaptlab.training.options import TrainingOptions

if TYPE_CHECKING:  # torch, Lightning and transformers load when a strategy trains or predicts, not when options are built
    from torch import nn

    from adaptlab.training.data import PadCollator
    from adaptlab.training.engine import FitReport
    from adaptlab.training.probe import Probe

DEFAULT_MAX_LENGTH = 256
HEAD_INITS = ("probe", "random")
PREDICT_BATCH = 64
MODEL_HELP = "Model: minilm, smollm2-135m, a Hub id or a local directory."
MAX_LENGTH_HELP = "Truncate texts to this many tokens (default: the model's, at most 256)."


@dataclass(kw_only=True, eq=False)
class GradientStrategy(Strategy, TrainingOptions):
    """Shared by all gradient-based strategies: training options, the engine, the training report."""

    model: str = param("minilm", MODEL_HELP)
    max_length: int | None = param(None, MAX_LENGTH_HELP, minimum=1, maximum=100_000)
    head_init: str = param("probe", "How the new head starts: probe (logistic regression on the frozen features the "
                           "head sees, C chosen on validation: LP-FT, so no run starts below the probe) or random.",
                           choices=HEAD_INITS)

    def check(self) -> None:
        self.check_training()

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    @property
    def ref(self) -> ModelRef:
        """The resolved base model (resolving a packaged GGUF model converts it once, so not in the constructor)."""
        if getattr(self, "ref_", None) is None:
            self.ref_ = resolve_model(self.model)
        return self.ref_

    def train_module(self, module: nn.Module, train, val, collate, workdir: Path, module_options: dict | None = None) -> None:
        """Fit ``module`` with this strategy's options on the Lightning engine (best validation weights kept)."""
        from adaptlab.training.data import BatchDataModule
        from adaptlab.training.engine import fit_module

        data = BatchDataModule(train, val, collate, self.batch_size, self.seed, self.group_by_length)
        self.report_: FitReport | None = fit_module(module, data, self, workdir, self.runtime, module_options=module_options)

    def start_from_probe(self, head: nn.Module, x_train: np.ndarray, x_val: np.ndarray, splits) -> Probe:
        """LP-FT: set the linear ``head`` to the probe fitted on the features it sees (``head_init="probe"``)."""
        from adaptlab.training.probe import fit_probe

        return self._set_probe(head, fit_probe(x_train, splits.train.labels, x_val, splits.val.labels,
                                               len(self.label_names), self.seed, intercept=head.bias is not None))

    def _set_probe(self, head: nn.Module, probe: Probe) -> Probe:
        from adaptlab.training.probe import load_probe

        load_probe(head, probe)
        self.probe_ = probe.report()
        return probe

    def training_report(self) -> dict | None:
        report = getattr(self, "report_", None)
        probe = getattr(self, "probe_", None)
        return None if report is None else {**dataclasses.asdict(report), "epochs_planned": report.budget["max_epochs"],
                                            "head_start": "probe" if probe else "random", "probe": probe}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref)


@dataclass(kw_only=True, eq=False)
class TokenClassifierStrategy(GradientStrategy):
    """Strategies that run a (partly) trainable transformer on tokens: last-k, full and PEFT."""

    head_lr: float | None = param(None, "Learning rate of the new head (default: --lr).", above=0, maximum=10)

    def reserved_positions(self) -> int:
        """Positions a method prepends (virtual tokens), kept free when the default max length is chosen."""
        return 0

    def fit(self, splits, workdir: Path) -> "TokenClassifierStrategy":
        from adaptlab.models.classifier import count_parameters, load_classifier
        from adaptlab.training.data import TokenizedDataset

        self.label_names = splits.label_names
        bundle = load_classifier(self.ref, self.label_names)
        self.tokenizer_ = bundle.tokenizer
        self.max_length_ = self._resolve_max_length(bundle.model)
        ids = lambda texts: self.tokenizer_(texts, truncation=True, max_length=self.max_length_)["input_ids"]
        train = TokenizedDataset(ids(splits.train.texts), splits.train.labels)
        val = TokenizedDataset(ids(splits.val.texts), splits.val.labels)
        if self.head_init == "probe":  # on the plain pretrained model, before PEFT copies the head into its wrapper
            self._probe_head(bundle, train, val, splits)
        model = self.configure(bundle)  # freezing / PEFT wrapping, with its own checks, before any training
        options = {"head_lr": self.head_lr, "head_modules": bundle.new_modules} if self.head_lr else None
        self.train_module(model, train, val, self._collator(), workdir, options)
        self.model_ = model.eval()
        self.counts_ = count_parameters(model)
        return self

    def _probe_head(self, bundle, train, val, splits) -> Probe | None:
        """The head is the new linear layer that outputs the classes (DistilBERT's ``classifier``, not its new
        ``pre_classifier``); the probe is fitted on what that layer receives from the frozen model."""
        from torch import nn

        from adaptlab.training.probe import cached_probe, fit_probe

        heads = [bundle.model.get_submodule(name) for name in bundle.new_modules]
        heads = [m for m in heads if isinstance(m, nn.Linear) and m.out_features == len(self.label_names)]
        if not heads:
            return None
        head = heads[0]
        # what the head reads depends on the network class (pooler or token mean) and nothing this strategy adds:
        # the probe is fitted on the plain pretrained model, so the entries of a comparison share it (one fit)
        key = {"model": self.ref.fingerprint(), "network": type(bundle.model).__name__, "head": [head.in_features, head.out_features],
               "intercept": head.bias is not None, "tokenizer": [len(bundle.tokenizer), bundle.tokenizer.padding_side],
               "max_length": self.max_length_, "device": self.runtime.torch_device.type, "seed": self.seed,
               "train": splits.train.fingerprint(), "val": splits.val.fingerprint()}

        def fit() -> Probe:
            x_train, x_val = (self._head_inputs(bundle.model, head, data) for data in (train, val))
            return fit_probe(x_train, splits.train.labels, x_val, splits.val.labels, len(self.label_names), self.seed,
                             intercept=head.bias is not None)

        return self._set_probe(head, cached_probe(key, fit))

    def _head_inputs(self, model: nn.Module, head: nn.Module, data) -> np.ndarray:
        from adaptlab.training.probe import head_inputs

        collate = self._collator()
        batches = (collate([data[i] for i in range(start, min(start + PREDICT_BATCH, len(data)))])
                   for start in range(0, len(data), PREDICT_BATCH))
        return head_inputs(model.to(self.runtime.torch_device), head, batches, self.runtime.torch_device)

    def configure(self, bundle) -> nn.Module:
        """Freeze, unfreeze or wrap ``bundle.model`` for training; return the module to train."""
        raise NotImplementedError

    def _collator(self) -> PadCollator:
        from adaptlab.training.data import PadCollator

        return PadCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)

    def _resolve_max_length(self, model: nn.Module) -> int:
        """The user's --max-length, or 256 tokens within what the model's positions leave for text."""
        limit = max_positions(model) or DEFAULT_MAX_LENGTH
        if self.max_length is None:
            return min(DEFAULT_MAX_LENGTH, limit - self.reserved_positions())
        if self.max_length > limit:
            raise AdaptlabError(f"--max-length {self.max_length} exceeds the {limit} positions model '{self.model}' supports")
        return self.max_length

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from adaptlab.models.classifier import logits_of

        texts = list(texts)
        device = self.runtime.torch_device
        model = self.model_.to(device).eval()
        ids = self.tokenizer_(texts, truncation=True, max_length=self.max_length_)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        collate = self._collator()
        out = np.empty((len(texts), len(self.label_names)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), PREDICT_BATCH):
                batch_index = order[start : start + PREDICT_BATCH]
                batch = collate([{"input_ids": ids[i], "labels": 0} for i in batch_index])
                logits = logits_of(model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)))
                out[batch_index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def cost(self) -> dict:
        trainable, total = self.counts_
        return {"trainable_params": trainable, "total_params": total}

    def details(self) -> dict:
        from adaptlab.models.pooled import MeanPooledClassifier

        # PEFT wraps the classifier one or two levels deep
        pooling = "mean" if any(isinstance(m, MeanPooledClassifier) for m in self.model_.modules()) else "model"
        return {"tokenization": {"max_length": self.max_length_, "padding_side": self.tokenizer_.padding_side,
                                 "pooling": pooling}}

    def save(self, directory: Path) -> None:
        self.tokenizer_.save_pretrained(directory / "tokenizer")
        self.save_weights(directory)

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, manifest: dict, *, network: nn.Module | None = None, **runtime: Any) -> "TokenClassifierStrategy":
        """``network``: an already loaded model to predict with instead of this artifact's weights (the server
        passes one shared base model with this artifact's adapter selected)."""
        from transformers import AutoTokenizer

        strategy = cls.rebuild(manifest, runtime)
        tokenization = manifest["details"]["tokenization"]
        strategy.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        strategy.tokenizer_.padding_side = tokenization["padding_side"]
        strategy.max_length_ = tokenization["max_length"]
        strategy.model_ = (strategy.load_weights(directory) if network is None else network).eval()
        strategy.counts_ = (manifest["cost"]["trainable_params"], manifest["cost"]["total_params"])
        return strategy

    def load_weights(self, directory: Path) -> nn.Module:
        raise NotImplementedError
