"""Model layer: short names for packaged models, Hub ids and local directories, GGUF conversion cache."""

from adaptlab.models.loading import ModelRef, load_backbone, load_tokenizer, model_kind, resolve_model
from adaptlab.models.registry import DEFAULT_DECODER, DEFAULT_ENCODER, PACKAGED_MODELS, cache_root

__all__ = [
    "DEFAULT_DECODER",
    "DEFAULT_ENCODER",
    "PACKAGED_MODELS",
    "ModelRef",
    "cache_root",
    "load_backbone",
    "load_tokenizer",
    "model_kind",
    "resolve_model",
]
