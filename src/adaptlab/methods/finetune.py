"""Gradient-based strategies on the Lightning engine: the ladder from a new head to every weight.

- ``head``: backbone frozen, a new linear head on pooled features. The backbone runs once and the head trains
  on cached features (``cache_features=False`` runs the naive loop: backbone forward every step, same result).
- ``last-k``: the last ``layers`` transformer blocks, plus what sits above them and the head, are trained.
- ``full``: every parameter is trained.
- ``lora``, ``prefix-tuning``, ``p-tuning``, ``prompt-tuning``: Hugging Face PEFT methods; adapters are saved
  in PEFT's own format (``PeftModel.from_pretrained`` loads them) together with the new head.

Default learning rates differ by orders of magnitude on purpose: a head or a soft prompt starts from
scratch and needs large steps; pretrained weights need small ones. The defaults were picked on validation
accuracy (1,000 Rotten Tomatoes sentences, minilm, 3 epochs): full 5e-5, last-k 1e-4, LoRA 1e-3,
P-tuning 1e-2 (vs 3e-3), prefix tuning 2e-2 (vs 5e-3), prompt tuning 1e-1 (vs 3e-3, 3e-2), head 1e-3.
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adaptlab.data import Splits
from adaptlab.embeddings import Embedder, _pool, pick_device
from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.models import resolve_model
from adaptlab.models.classifier import (
    count_parameters,
    linear_module_names,
    load_classifier,
    logits_of,
    max_positions,
    transformer_blocks,
)
from adaptlab.models.loading import count_checkpoint_parameters, model_kind
from adaptlab.training.data import ClassificationDataModule, FeatureDataset, PadCollator, TokenizedDataset
from adaptlab.training.engine import FitReport, TrainingOptions, fit_module, work_dir

DEFAULT_MAX_LENGTH = 256
PREDICT_BATCH = 64
_TRAINING_FIELDS = [f.name for f in dataclasses.fields(TrainingOptions)]


class GradientStrategy(Strategy):
    """Shared by all gradient-based strategies: training options, tokenisation, prediction, cost."""

    default_lr: ClassVar[float] = 5e-5
    default_epochs: ClassVar[int] = 3
    runtime_params = ("device", "progress", "cache", "callbacks", "resume", "accelerator", "devices", "strategy", "num_nodes")

    def __init__(self, model: str, max_length: int | None, device: str | None, training: dict[str, Any]) -> None:
        unknown = set(training) - set(_TRAINING_FIELDS)
        if unknown:
            raise AdaptlabError(f"unknown training option(s) {', '.join(sorted(unknown))} for strategy '{self.name}'")
        if training.get("lr") is None:  # None (e.g. an option not given on the CLI) means the strategy's default
            training["lr"] = self.default_lr
        if training.get("epochs") is None:
            training["epochs"] = self.default_epochs
        training["callbacks"] = list(training.get("callbacks") or [])
        self.options = TrainingOptions(**training)
        self.options.check()
        if max_length is not None and max_length < 1:
            raise AdaptlabError(f"--max-length must be at least 1, not {max_length}")
        self.model, self.max_length, self.device = model, max_length, device
        self.ref = resolve_model(model)
        self.report_: FitReport | None = None

    # -- parameters (sklearn style) ----------------------------------------------------------------------
    def get_params(self) -> dict:
        own = {p: getattr(self, p) for p in self._own_params() if p not in self.runtime_params}
        training = {k: v for k, v in dataclasses.asdict(self.options).items() if k not in self.runtime_params}
        training.pop("callbacks", None)
        return {**own, **training}

    @classmethod
    def _own_params(cls) -> list[str]:
        return [
            p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    @classmethod
    def param_names(cls) -> list[str]:
        return cls._own_params() + _TRAINING_FIELDS

    def extra_manifest(self) -> dict:
        return {"training": None if self.report_ is None else dataclasses.asdict(self.report_)}

    def save_training_log(self, directory: Path, output: Path | None) -> None:
        """Keep Lightning's per-epoch metrics (train loss, val loss/accuracy) in the artifact."""
        log = work_dir(output) / "logs" / "metrics.csv" if output else None
        if log is not None and log.exists():
            shutil.copy(log, directory / "training_log.csv")

    def finished(self, output: Path) -> None:
        shutil.rmtree(work_dir(output), ignore_errors=True)  # checkpoints are only needed to resume


# -- head-only ------------------------------------------------------------------------------------------
class FrozenBackboneHead(nn.Module):
    """Backbone (frozen, always in eval mode) -> pooling -> head: the naive loop the cache replaces."""

    def __init__(self, backbone: nn.Module, pooling: str, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.pooling, self.head = backbone.requires_grad_(False), pooling, head

    def train(self, mode: bool = True) -> "FrozenBackboneHead":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            features = _pool(hidden.float(), attention_mask, self.pooling)
        return self.head(features)


class FeatureHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout, self.linear = nn.Dropout(dropout), nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))


class HeadOnly(GradientStrategy):
    name = "head"
    default_lr = 1e-3
    default_epochs = 10

    def __init__(
        self,
        model: str = "minilm",
        *,
        pooling: str | None = None,
        dropout: float = 0.1,
        cache_features: bool = True,
        max_length: int | None = None,
        device: str | None = None,
        cache: bool = True,
        **training: Any,
    ) -> None:
        super().__init__(model, max_length, device, training)
        self.cache = cache
        self.pooling = pooling or ("last" if model_kind(self.ref) == "decoder" else "mean")
        self.dropout, self.cache_features = dropout, cache_features
        # Features are computed in the precision training runs in, so cached and naive loops agree.
        precision = "bf16" if str(self.options.precision).startswith("bf16") else "fp32"
        self.embedder = Embedder(
            model, self.pooling, max_length=max_length, precision=precision, device=device,
            progress=self.options.progress, cache=cache,
        )
        self.head_: FeatureHead | None = None

    def fit(self, splits: Splits, output: Path | None = None) -> "HeadOnly":
        self.label_names = splits.label_names
        torch.manual_seed(self.options.seed)  # the head's initial weights: identical for cached and naive runs
        dim = self._dim()
        self.head_ = FeatureHead(dim, len(self.label_names), self.dropout)
        tokenizer = self.embedder.tokenizer
        ids = lambda texts: tokenizer(texts, truncation=True, max_length=self.embedder.max_length)["input_ids"]
        train_ids, val_ids = ids(splits.train.texts), ids(splits.val.texts)
        if self.cache_features:
            lengths = lambda token_ids: [len(x) for x in token_ids]  # same batches as the naive loop
            train = FeatureDataset(self.embedder.embed(splits.train.texts), splits.train.labels, lengths(train_ids))
            val = FeatureDataset(self.embedder.embed(splits.val.texts), splits.val.labels, lengths(val_ids))
            module: nn.Module = self.head_
            collate = PadCollator(0)
        else:
            train = TokenizedDataset(train_ids, splits.train.labels)
            val = TokenizedDataset(val_ids, splits.val.labels)
            module = FrozenBackboneHead(self.embedder.model, self.pooling, self.head_)
            collate = PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        data = ClassificationDataModule(train, val, collate, self.options.batch_size, self.options.seed, self.options.group_by_length)
        self.report_ = fit_module(module, data, self.options, _output(output))
        self.output_ = output
        self.head_.eval()
        return self

    def _dim(self) -> int:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.ref.path).hidden_size)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        features = torch.as_tensor(self.embedder.embed(list(texts)))
        with torch.inference_mode():
            return torch.softmax(self.head_.eval()(features).float(), dim=-1).numpy()

    def uncached(self):
        return self.embedder.fresh()

    def cost(self) -> dict:
        head = sum(p.numel() for p in self.head_.parameters())
        backbone = count_checkpoint_parameters(self.ref.path) if self.ref.local else None
        return {"trainable_params": head, "total_params": None if backbone is None else backbone + head}

    def base_model(self) -> dict:
        return {"name": self.model, "fingerprint": self.ref.fingerprint()}

    def save(self, directory: Path) -> None:
        save_file(self.head_.state_dict(), directory / "head.safetensors")
        self.save_training_log(directory, getattr(self, "output_", None))

    def extra_manifest(self) -> dict:
        return {**super().extra_manifest(), "embedding": self.embedder.settings()}

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "HeadOnly":
        strategy = _rebuild(cls, manifest, runtime)
        strategy.label_names = manifest["labels"]
        strategy.head_ = FeatureHead(strategy._dim(), len(strategy.label_names), strategy.dropout)
        strategy.head_.load_state_dict(load_file(directory / "head.safetensors"))
        strategy.head_.eval()
        return strategy


# -- token-level strategies ---------------------------------------------------------------------------
class TokenClassifierStrategy(GradientStrategy):
    """Strategies that run a (partly) trainable transformer on tokens: last-k, full and PEFT."""

    def fit(self, splits: Splits, output: Path | None = None) -> "TokenClassifierStrategy":
        self.label_names = splits.label_names
        bundle = load_classifier(self.ref, self.label_names)
        self.kind_, self.tokenizer_ = bundle.kind, bundle.tokenizer
        self.max_length_ = self._resolve_max_length(bundle.model)
        model = self.configure(bundle)  # freezing / PEFT wrapping, with its own checks, before any training
        ids = lambda texts: self.tokenizer_(texts, truncation=True, max_length=self.max_length_)["input_ids"]
        train = TokenizedDataset(ids(splits.train.texts), splits.train.labels)
        val = TokenizedDataset(ids(splits.val.texts), splits.val.labels)
        collate = PadCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        data = ClassificationDataModule(train, val, collate, self.options.batch_size, self.options.seed, self.options.group_by_length)
        self.report_ = fit_module(model, data, self.options, _output(output))
        self.output_ = output
        self.model_ = model.eval()
        self.counts_ = count_parameters(model)
        return self

    def configure(self, bundle) -> nn.Module:
        raise NotImplementedError

    def _resolve_max_length(self, model: nn.Module) -> int:
        """The user's --max-length, or 256 tokens within what the model's positions leave for text."""
        limit = max_positions(model) or DEFAULT_MAX_LENGTH
        reserved = getattr(self, "num_virtual_tokens", 0)  # prompt-learning methods prepend virtual tokens
        if self.max_length is None:
            return min(DEFAULT_MAX_LENGTH, limit - reserved)
        if self.max_length > limit:
            raise AdaptlabError(f"--max-length {self.max_length} exceeds the {limit} positions model '{self.model}' supports")
        return self.max_length

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        device = pick_device(self.device)
        model = self.model_.to(device).eval()
        ids = self.tokenizer_(texts, truncation=True, max_length=self.max_length_)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        collate = PadCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
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

    def base_model(self) -> dict:
        return {"name": self.model, "fingerprint": self.ref.fingerprint()}

    def extra_manifest(self) -> dict:
        return {**super().extra_manifest(), "tokenization": {"max_length": self.max_length_, "padding_side": self.tokenizer_.padding_side}}

    def save(self, directory: Path) -> None:
        self.tokenizer_.save_pretrained(directory / "tokenizer")
        self.save_weights(directory)
        self.save_training_log(directory, getattr(self, "output_", None))

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, manifest: dict, *, network: nn.Module | None = None, **runtime: Any) -> "TokenClassifierStrategy":
        """``network``: an already loaded model to predict with instead of this artifact's weights (the server
        passes one shared base model with this artifact's LoRA adapter selected)."""
        from transformers import AutoTokenizer

        strategy = _rebuild(cls, manifest, runtime)
        strategy.label_names = manifest["labels"]
        strategy.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        strategy.tokenizer_.padding_side = manifest["tokenization"]["padding_side"]
        strategy.max_length_ = manifest["tokenization"]["max_length"]
        strategy.model_ = (strategy.load_weights(directory) if network is None else network).eval()
        strategy.counts_ = (manifest["cost"]["trainable_params"], manifest["cost"]["total_params"])
        return strategy

    def load_weights(self, directory: Path) -> nn.Module:
        raise NotImplementedError


class FullFineTune(TokenClassifierStrategy):
    name = "full"
    default_lr = 5e-5

    def __init__(self, model: str = "minilm", *, max_length: int | None = None, device: str | None = None, **training: Any) -> None:
        super().__init__(model, max_length, device, training)

    def configure(self, bundle) -> nn.Module:
        return bundle.model.requires_grad_(True)

    def save_weights(self, directory: Path) -> None:
        self.model_.save_pretrained(directory / "model")  # a plain transformers model directory

    def load_weights(self, directory: Path) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(directory / "model")


class LastKLayers(TokenClassifierStrategy):
    name = "last-k"
    default_lr = 1e-4

    def __init__(self, model: str = "minilm", *, layers: int = 2, max_length: int | None = None,
                 device: str | None = None, **training: Any) -> None:
        super().__init__(model, max_length, device, training)
        if not isinstance(layers, int) or layers < 1:
            raise AdaptlabError(f"--layers must be a positive integer, not {layers!r}")
        self.layers = layers

    def configure(self, bundle) -> nn.Module:
        model = bundle.model.requires_grad_(False)
        blocks = transformer_blocks(model)
        if self.layers > len(blocks):
            raise AdaptlabError(f"--layers {self.layers} is more than the {len(blocks)} blocks model '{self.model}' has")
        for block in blocks[-self.layers :]:
            block.requires_grad_(True)
        for name in bundle.new_modules + _modules_above_blocks(model):
            model.get_submodule(name).requires_grad_(True)
        return model

    def save_weights(self, directory: Path) -> None:
        trainable = {n: p.detach().contiguous() for n, p in self.model_.named_parameters() if p.requires_grad}
        save_file(trainable, directory / "trainable.safetensors")

    def load_weights(self, directory: Path) -> nn.Module:
        model = load_classifier(self.ref, self.label_names).model
        state = load_file(directory / "trainable.safetensors")
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise AdaptlabError(f"artifact '{directory}' does not fit base model '{self.model}' ({len(missing)} unknown weights)")
        model.load_state_dict(state, strict=False)
        return model


def _modules_above_blocks(model: nn.Module) -> list[str]:
    """Pooler / final layer norm: they sit between the last block and the head, so last-k trains them."""
    names = []
    for name, _ in model.named_modules():
        leaf = name.split(".")[-1]
        if name.count(".") <= 1 and leaf in {"pooler", "norm", "ln_f", "final_layer_norm"}:
            names.append(name)
    return names


# -- PEFT -----------------------------------------------------------------------------------------------
class PeftStrategy(TokenClassifierStrategy):
    def peft_config(self, bundle, model: nn.Module):
        raise NotImplementedError

    def configure(self, bundle) -> nn.Module:
        from peft import get_peft_model

        config = self.peft_config(bundle, bundle.model)
        config.modules_to_save = list(bundle.new_modules)  # the head: trained, and saved with the adapter
        return get_peft_model(bundle.model, config)

    def save_weights(self, directory: Path) -> None:
        self.model_.save_pretrained(directory / "adapter")

    def load_weights(self, directory: Path) -> nn.Module:
        from peft import PeftModel

        base = load_classifier(self.ref, self.label_names).model
        return PeftModel.from_pretrained(base, directory / "adapter")

    @staticmethod
    def _model_dims(model: nn.Module) -> dict:
        """PEFT reads dimensions from the config's raw keys; configs with other names (DistilBERT's ``dim``,
        ``n_layers``) need them spelled out. Only missing ones are given, so PEFT's own handling stays."""
        raw, config = model.config.to_dict(), model.config
        wanted = {"token_dim": "hidden_size", "num_layers": "num_hidden_layers", "num_attention_heads": "num_attention_heads"}
        return {ours: getattr(config, theirs) for ours, theirs in wanted.items() if theirs not in raw}

    def _check_virtual_tokens(self, model: nn.Module, num_virtual_tokens: int) -> None:
        if num_virtual_tokens < 1:
            raise AdaptlabError(f"--num-virtual-tokens must be at least 1, not {num_virtual_tokens}")
        limit = max_positions(model)
        if limit is not None and num_virtual_tokens + self.max_length_ > limit:
            raise AdaptlabError(
                f"--num-virtual-tokens {num_virtual_tokens} plus --max-length {self.max_length_} overflows the "
                f"{limit} positions of model '{self.model}'; lower one of them"
            )


class Lora(PeftStrategy):
    name = "lora"
    default_lr = 1e-3

    def __init__(self, model: str = "minilm", *, r: int = 8, alpha: int = 16, dropout: float = 0.1,
                 target_modules: list[str] | None = None, max_length: int | None = None,
                 device: str | None = None, **training: Any) -> None:
        super().__init__(model, max_length, device, training)
        if r < 1:
            raise AdaptlabError(f"--r must be at least 1, not {r}")
        if isinstance(target_modules, str):
            target_modules = [t.strip() for t in target_modules.split(",") if t.strip()]
        self.r, self.alpha, self.dropout, self.target_modules = r, alpha, dropout, target_modules

    def peft_config(self, bundle, model: nn.Module):
        from peft import LoraConfig, TaskType

        if self.target_modules:
            available = linear_module_names(model)
            missing = [t for t in self.target_modules if t not in available]
            if missing:
                raise AdaptlabError(
                    f"--target-modules {', '.join(missing)} not found in model '{self.model}'; "
                    f"its linear layers are: {', '.join(available)}"
                )
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules or default_lora_targets(model))


def default_lora_targets(model: nn.Module) -> list[str] | str:
    """The attention query/value projections where PEFT or we know their names, else every linear layer."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = model.config.model_type
    return _LORA_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or "all-linear"


_LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}


class PrefixTuning(PeftStrategy):
    name = "prefix-tuning"
    default_lr = 2e-2

    def __init__(self, model: str = "minilm", *, num_virtual_tokens: int = 20, prefix_projection: bool = False,
                 encoder_hidden_size: int = 256, max_length: int | None = None, device: str | None = None,
                 **training: Any) -> None:
        super().__init__(model, max_length, device, training)
        self.num_virtual_tokens, self.prefix_projection, self.encoder_hidden_size = num_virtual_tokens, prefix_projection, encoder_hidden_size

    def peft_config(self, bundle, model: nn.Module):
        from peft import PrefixTuningConfig, TaskType

        self._check_virtual_tokens(model, self.num_virtual_tokens)
        backbone = getattr(model, model.base_model_prefix, model)
        if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)):
            raise AdaptlabError(
                f"model '{self.model}' ({model.config.model_type}) takes no key/value cache, which prefix tuning "
                "injects its prefixes into; use p-tuning or prompt-tuning with this model"
            )
        return PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                  prefix_projection=self.prefix_projection, encoder_hidden_size=self.encoder_hidden_size,
                                  **self._model_dims(model))


class PTuning(PeftStrategy):
    name = "p-tuning"
    default_lr = 1e-2

    def __init__(self, model: str = "minilm", *, num_virtual_tokens: int = 20, encoder_hidden_size: int = 128,
                 encoder_type: str = "MLP", max_length: int | None = None, device: str | None = None,
                 **training: Any) -> None:
        super().__init__(model, max_length, device, training)
        if encoder_type not in ("MLP", "LSTM"):
            raise AdaptlabError(f"--encoder-type must be MLP or LSTM, not '{encoder_type}'")
        self.num_virtual_tokens, self.encoder_hidden_size, self.encoder_type = num_virtual_tokens, encoder_hidden_size, encoder_type

    def peft_config(self, bundle, model: nn.Module):
        from peft import PromptEncoderConfig, TaskType

        self._check_virtual_tokens(model, self.num_virtual_tokens)
        return PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                   encoder_hidden_size=self.encoder_hidden_size,
                                   encoder_reparameterization_type=self.encoder_type, **self._model_dims(model))


class PromptTuning(PeftStrategy):
    name = "prompt-tuning"
    default_lr = 1e-1

    def __init__(self, model: str = "minilm", *, num_virtual_tokens: int = 20, init_text: str | None = None,
                 max_length: int | None = None, device: str | None = None, **training: Any) -> None:
        super().__init__(model, max_length, device, training)
        self.num_virtual_tokens, self.init_text = num_virtual_tokens, init_text

    def peft_config(self, bundle, model: nn.Module):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        self._check_virtual_tokens(model, self.num_virtual_tokens)
        if self.init_text:  # initialise the virtual tokens from a text's embeddings
            return PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                      prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=self.init_text,
                                      tokenizer_name_or_path=self.ref.path, **self._model_dims(model))
        return PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                  **self._model_dims(model))


def _output(output: Path | None) -> Path:
    if output is None:
        raise AdaptlabError("gradient-based strategies need an output directory for their checkpoints")
    return Path(output)


def _rebuild(cls, manifest: dict, runtime: dict):
    """The strategy as configured at training time, with this run's runtime options (device, progress...)."""
    params = dict(manifest["params"])
    known = set(cls.param_names())
    return cls(**params, **{k: v for k, v in runtime.items() if k in known})


GRADIENT_STRATEGIES = (HeadOnly, LastKLayers, FullFineTune, Lora, PrefixTuning, PTuning, PromptTuning)
