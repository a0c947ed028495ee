"""Causal (decoder) language models: loading for generation, prompting, SFT and RLHF."""

from __future__ import annotations

from adaptlab.errors import AdaptlabError
from adaptlab.models.loading import ModelRef, hub_error, model_kind, prepare_tokenizer, resolve_model
from adaptlab.runtime import Runtime


def load_causal_lm(name: str, device: str | None = None) -> tuple:
    """``(model, tokenizer, ref)`` for a decoder, in eval mode on ``device``; refuses encoders with a clear message."""
    from transformers import AutoModelForCausalLM

    target = Runtime(device).torch_device  # a bad device fails before the weights load
    ref: ModelRef = resolve_model(name)
    if model_kind(ref) != "decoder":
        raise AdaptlabError(f"model '{name}' is not a causal (decoder) language model; use e.g. smollm2-135m")
    tokenizer = prepare_tokenizer(ref, "decoder")
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path).to(target).eval()
    except OSError as exc:
        raise hub_error(ref, exc) from None
    return model, tokenizer, ref
