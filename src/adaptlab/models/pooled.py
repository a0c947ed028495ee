"""A classifier that reads the mean of the token vectors, for encoders trained to be read that way.

``AutoModelForSequenceClassification`` on a BERT-family model classifies from the first token through the pretrained
pooler. A sentence-transformers checkpoint (all-MiniLM-L6-v2 and the like) was trained so that the *mean* of its
token vectors carries the sentence; its first token and pooler were not. On all-MiniLM-L6-v2 a linear probe on the
pooler reaches 68% validation accuracy on Rotten Tomatoes, 84% on wiki-topics and 79% on CLINC150, one on the mean
80%, 89% and 92% (see ``docs``: defaults). Fine-tuning that starts from the pooler first has to make up that
distance, and last-k (two blocks) never did. So a checkpoint that declares mean pooling (``modules.json`` ->
``Pooling``) is classified the way it was trained to be read, by :class:`MeanPooledClassifier`.

No transformers class pools by the mean, so a fully trained (or merged) model of this kind is saved as a
sentence-transformers directory whose last module is the head: ``SentenceTransformer(path).encode(texts)`` gives
the logits without adaptlab.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from adaptlab.models.loading import pool

DENSE_DIR = "2_Dense"


class MeanPooledClassifier(nn.Module):
    """Encoder -> mean over real tokens -> dropout -> linear ``classifier``.

    Parameter names match ``AutoModelForSequenceClassification``'s (``bert.encoder...``, ``classifier``), so LoRA
    targets, last-k's block search and the probe's head lookup work unchanged. ``forward`` takes what PEFT passes:
    prompt tuning prepends virtual token embeddings (they are averaged with the text), prefix tuning passes
    ``past_key_values`` and an attention mask that starts with the prefix (only the text positions are averaged)."""

    main_input_name = "input_ids"

    def __init__(self, backbone: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.base_model_prefix = backbone.base_model_prefix or "encoder_model"
        setattr(self, self.base_model_prefix, backbone)
        self.config = backbone.config
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused: its weights would count as trainable and never move
        hidden = self.config.hidden_size
        dropout = getattr(self.config, "classifier_dropout", None)
        self.dropout = nn.Dropout(dropout if dropout is not None else getattr(self.config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(hidden, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(self.config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @property
    def device(self) -> torch.device:  # PEFT places its prompt encoder on the model's device
        return self.classifier.weight.device

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                past_key_values=None, labels=None, **_: object) -> SequenceClassifierOutput:
        extra = {"past_key_values": past_key_values} if past_key_values is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, **extra).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        features = pool(hidden, attention_mask[:, -hidden.shape[1]:], "mean")  # a prefix's positions have no output
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(features)))


def save_sentence_transformer(model: MeanPooledClassifier, tokenizer, directory: Path, max_length: int) -> None:
    """``directory`` as a sentence-transformers model: the trained encoder, mean pooling, the head as a ``Dense``
    layer without activation (so ``encode`` returns logits). Written with sentence-transformers' own modules."""
    from sentence_transformers import SentenceTransformer, models

    model.backbone.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    encoder = models.Transformer(str(directory), max_seq_length=max_length)
    head = models.Dense(model.classifier.in_features, model.classifier.out_features, activation_function=nn.Identity())
    head.linear.load_state_dict(model.classifier.state_dict())
    pooling = models.Pooling(model.classifier.in_features, "mean")
    SentenceTransformer(modules=[encoder, pooling, head], device="cpu").save(str(directory))


def load_sentence_transformer(directory: Path) -> MeanPooledClassifier:
    """A classifier written by :func:`save_sentence_transformer` (read without importing sentence-transformers)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    head = load_file(directory / DENSE_DIR / "model.safetensors")
    model = MeanPooledClassifier(AutoModel.from_pretrained(directory), num_labels=head["linear.weight"].shape[0])
    model.classifier.load_state_dict({"weight": head["linear.weight"], "bias": head["linear.bias"]})
    return model


def save_classifier(model: nn.Module, tokenizer, directory: Path, max_length: int) -> None:
    """A complete classifier directory, tokenizer inside: transformers' own layout (``pipeline`` loads it) or, for a
    mean-pooled model, sentence-transformers'."""
    if isinstance(model, MeanPooledClassifier):
        save_sentence_transformer(model, tokenizer, directory, max_length)
    else:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)


def load_saved_classifier(directory: Path) -> nn.Module:
    if (directory / DENSE_DIR).is_dir():
        return load_sentence_transformer(directory)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(directory)
