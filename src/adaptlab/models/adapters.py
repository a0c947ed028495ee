"""The one adapter factory: every PEFT config adaptlab builds, for every task type, is made here.

Task types and their LoRA defaults (each family's measured choice, kept in one table):

| task | r | alpha | dropout | target modules | used by |
| --- | --- | --- | --- | --- | --- |
| ``classifier`` | 8 | 16 | 0.1 | attention query/value (PEFT's per-architecture map) | ``train lora`` |
| ``reward`` | 16 | 32 | 0.05 | as ``classifier`` | ``rlhf reward`` |
| ``policy`` | 16 | 32 | 0.0 | every linear layer | ``rlhf ppo``, ``rlhf dpo`` (dropout 0.05) |
| ``sft`` | 16 | 32 | 0.05 | every linear layer | ``sft`` (supervised fine-tuning of causal LMs) |

``use_dora`` (weight-decomposed LoRA) and ``use_rslora`` (rank-stabilised scaling alpha/sqrt(r)) are passed to
PEFT unchanged. The new classification head (``modules_to_save``) is trained and saved with the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError
from adaptlab.models.classifier import linear_module_names

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class LoraDefaults:
    r: int
    alpha: int
    dropout: float
    target_modules: str | None  # None: the attention projections PEFT knows for the architecture


LORA_DEFAULTS = {
    "classifier": LoraDefaults(8, 16, 0.1, None),
    "reward": LoraDefaults(16, 32, 0.05, None),
    "policy": LoraDefaults(16, 32, 0.0, "all-linear"),
    "sft": LoraDefaults(16, 32, 0.05, "all-linear"),
}
_TASK_TYPES = {"classifier": "SEQ_CLS", "reward": "SEQ_CLS", "policy": "CAUSAL_LM", "sft": "CAUSAL_LM"}
_LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}  # architectures PEFT has no default for
_PEFT_HEADS = ("classifier", "score")  # PEFT adds these to a SEQ_CLS adapter's modules_to_save itself


def _modules_to_save(task: str, modules: list[str] | None) -> list[str] | None:
    """The new modules PEFT must train and save besides the adapter, without the head names PEFT appends on
    its own for classifiers (passing them too lists them twice in ``adapter_config.json``)."""
    if modules is None or _TASK_TYPES[task] != "SEQ_CLS":
        return None if modules is None else list(modules)
    return [m for m in modules if m not in _PEFT_HEADS] or None


def default_lora_targets(model: nn.Module) -> list[str] | str:
    """The attention query/value projections where PEFT or we know their names, else every linear layer."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = model.config.model_type
    return _LORA_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or "all-linear"


def lora_config(task: str, model: nn.Module, *, r: int | None = None, alpha: int | None = None,
                dropout: float | None = None, target_modules: list[str] | str | None = None, use_dora: bool = False,
                use_rslora: bool = False, modules_to_save: list[str] | None = None, model_name: str = "the model"):
    """A ``peft.LoraConfig`` for ``task`` (see the table above); None values take the task's defaults."""
    from peft import LoraConfig

    defaults = LORA_DEFAULTS[task]
    if target_modules and target_modules != "all-linear":
        available = linear_module_names(model)
        missing = [t for t in target_modules if t not in available]
        if missing:
            raise AdaptlabError(f"--target-modules {', '.join(missing)} not found in {model_name}; "
                                f"its linear layers are: {', '.join(available)}")
    targets = target_modules or defaults.target_modules or default_lora_targets(model)
    return LoraConfig(task_type=_TASK_TYPES[task], r=r or defaults.r, lora_alpha=alpha or defaults.alpha,
                      lora_dropout=defaults.dropout if dropout is None else dropout, target_modules=targets,
                      use_dora=use_dora, use_rslora=use_rslora, modules_to_save=_modules_to_save(task, modules_to_save))


def _model_dims(model: nn.Module) -> dict:
    """PEFT reads dimensions from the config's raw keys; configs with other names (DistilBERT's ``dim``,
    ``n_layers``) need them spelled out. Only missing ones are given, so PEFT's own handling stays."""
    raw, config = model.config.to_dict(), model.config
    wanted = {"token_dim": "hidden_size", "num_layers": "num_hidden_layers", "num_attention_heads": "num_attention_heads"}
    return {ours: getattr(config, theirs) for ours, theirs in wanted.items() if theirs not in raw}


def prompt_learning_config(method: str, task: str, model: nn.Module, *, num_virtual_tokens: int,
                           prefix_projection: bool = False, encoder_hidden_size: int | None = None,
                           encoder_type: str = "MLP", init_text: str | None = None, tokenizer_path: str | None = None,
                           modules_to_save: list[str] | None = None):
    """PEFT's prefix tuning, P-tuning or prompt tuning config (``method``: prefix | p-tuning | prompt)."""
    import peft

    common = {"task_type": _TASK_TYPES[task], "num_virtual_tokens": num_virtual_tokens, **_model_dims(model)}
    if method == "prefix":
        config = peft.PrefixTuningConfig(**common, prefix_projection=prefix_projection, encoder_hidden_size=encoder_hidden_size)
    elif method == "p-tuning":
        config = peft.PromptEncoderConfig(**common, encoder_hidden_size=encoder_hidden_size,
                                          encoder_reparameterization_type=encoder_type)
    elif init_text:  # prompt tuning initialised from a text's embeddings
        config = peft.PromptTuningConfig(**common, prompt_tuning_init=peft.PromptTuningInit.TEXT,
                                         prompt_tuning_init_text=init_text, tokenizer_name_or_path=tokenizer_path)
    else:
        config = peft.PromptTuningConfig(**common)
    extra = _modules_to_save(task, modules_to_save)
    if extra is not None:
        config.modules_to_save = extra
    return config


def init_prefix_from_ids(model, ids: list[int]) -> None:
    """Start a PEFT prefix (prefix tuning, no reparameterisation) from the keys and values the base model computes
    for real tokens ``ids`` (cycled or cut to the prefix length), instead of PEFT's random ones.

    Why: a random prefix is attended to at every layer and moves the model far from where it started (on
    wiki-descriptions with SmolLM2, held-out loss 7.3 against the base's 3.3 before any step, and 32 steps only
    brought it to 5.2); the activations of real words make step 0 the base model reading a short text first, so
    training starts from the base's quality (Li & Liang 2021, section 7.3: real-word initialisation matters most
    with little data). The keys carry their rotary positions 0..n-1, and the real tokens follow at positions n..,
    exactly as if the text had been prepended.
    """
    import torch

    config = model.active_peft_config
    if getattr(config, "prefix_projection", False):
        raise ValueError("a reparameterised prefix (prefix_projection) has no per-token keys and values to start from")
    count = config.num_virtual_tokens
    ids = (list(ids) * (count // max(len(ids), 1) + 1))[:count]
    base = model.get_base_model()
    embedding = model.prompt_encoder[model.active_adapter].embedding
    with torch.no_grad():
        cache = base(input_ids=torch.tensor([ids], device=embedding.weight.device), use_cache=True).past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers] if hasattr(cache, "layers") else list(cache)
        # PEFT's layout (get_prompt): (tokens, layers * 2, heads, head_dim) flattened per token, key before value
        stacked = torch.stack([tensor[0] for pair in layers for tensor in pair])  # (layers*2, heads, tokens, head_dim)
        embedding.weight.copy_(stacked.permute(2, 0, 1, 3).reshape(count, -1).to(embedding.weight.dtype))
