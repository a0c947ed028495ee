"""Sequence-classification models on any backbone, encoder or decoder, with the checks training needs.

Encoders (BERT, RoBERTa, MiniLM...) and decoders (Llama/SmolLM2, GPT-2...) both go through
``AutoModelForSequenceClassification``: encoders classify from their pooled first token, decoders from the
last real token; an encoder that declares mean pooling (a sentence-transformers checkpoint such as minilm) is
classified from the mean of its token vectors instead (``adaptlab.models.pooled``), the way it was trained to be read. Decoders are padded on the left so the last position is always a real token (this also
keeps prompt-learning methods, which prepend virtual tokens, correct). A decoder without a pad token uses
its end-of-text token for padding, as is standard; a model with neither is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError
from adaptlab.models.loading import ModelRef, declared_mean_pooling, hub_error, loading, model_kind, prepare_tokenizer

if TYPE_CHECKING:  # torch is imported where a model is built or inspected
    import torch
    from torch import nn


@dataclass
class ClassifierBundle:
    model: nn.Module
    tokenizer: object
    kind: str  # "encoder" or "decoder"
    new_modules: list[str]  # top-level modules created fresh for the task (the head): always trained and saved


def load_classifier(ref: ModelRef, label_names: list[str]) -> ClassifierBundle:
    """A fresh classification model for ``label_names`` on top of the pretrained weights of ``ref``."""
    from transformers import AutoModelForSequenceClassification

    kind = model_kind(ref)
    tokenizer = prepare_tokenizer(ref, kind)
    if kind == "encoder" and declared_mean_pooling(ref.path):
        return _mean_pooled(ref, label_names, tokenizer)
    with loading(ref):  # damaged weights (truncated safetensors...): one line
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                ref.path,
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id={name: i for i, name in enumerate(label_names)},
                output_loading_info=True,
            )
        except OSError as exc:
            raise hub_error(ref, exc) from None
        except ValueError as exc:
            raise AdaptlabError(f"model '{ref.name}' cannot be used for sequence classification ({exc})") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    # Which modules did not come from the checkpoint? Those are the new head (e.g. DistilBERT's
    # pre_classifier *and* classifier); PEFT must train and save all of them, or reloads silently differ.
    new_modules = sorted({_owning_module(model, key) for key in info["missing_keys"]})
    return ClassifierBundle(model=model, tokenizer=tokenizer, kind=kind, new_modules=new_modules)


def _mean_pooled(ref: ModelRef, label_names: list[str], tokenizer) -> ClassifierBundle:
    from transformers import AutoModel

    from adaptlab.models.pooled import MeanPooledClassifier

    with loading(ref):
        try:
            backbone = AutoModel.from_pretrained(ref.path)
        except OSError as exc:
            raise hub_error(ref, exc) from None
    backbone.config.update({"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                            "label2id": {name: i for i, name in enumerate(label_names)},
                            "pad_token_id": tokenizer.pad_token_id})
    return ClassifierBundle(model=MeanPooledClassifier(backbone, len(label_names)), tokenizer=tokenizer, kind="encoder",
                            new_modules=["classifier"])


def _owning_module(model: nn.Module, parameter_name: str) -> str:
    """The shortest module path that holds a newly initialised parameter (e.g. ``classifier``)."""
    parts = parameter_name.split(".")
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth])
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if not any(True for _ in module.children()) or name.split(".")[-1] in {"classifier", "score", "pre_classifier"}:
            return name
    return ".".join(parts[:-1])


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers, found structurally (works for BERT, RoBERTa, Llama, GPT-2...)."""
    from torch import nn

    count = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not candidates:
        raise AdaptlabError(f"cannot find the {count} transformer blocks of {type(model).__name__}")
    return candidates[0]


def linear_module_names(model: nn.Module) -> list[str]:
    """Short names of linear layers (what LoRA can target), e.g. query, value, q_proj."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D  # GPT-2 style linear layers

    return sorted({name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))})


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen, trainable, total = set(), 0, 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def logits_of(output) -> torch.Tensor:
    """HF models return an output object, plain heads a tensor."""
    return output.logits if hasattr(output, "logits") else output
