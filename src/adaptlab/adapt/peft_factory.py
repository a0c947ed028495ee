"""The one PEFT factory: every PEFT config adaptlab builds, for every task, is made here (``LoraConfig`` nowhere else).

LoRA's settings arrive as a ``LoraOptions`` (any job that inherits it), with each task's defaults already in its fields
(``adaptlab.adapt.defaults``); what is resolved here is what needs the model: the target modules (the attention
query/value projections PEFT knows for the architecture, or every linear layer for causal LMs), alpha when unset (2 x r),
and the new head modules PEFT must train and save besides the adapter (``modules_to_save``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptlab.adapt.defaults import TASKS, lora_defaults
from adaptlab.errors import AdaptlabError
from adaptlab.models.classifier import linear_module_names

if TYPE_CHECKING:
    from torch import nn

    from adaptlab.adapt.options import LoraOptions

_LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}  # architectures PEFT has no default for
_PEFT_HEADS = ("classifier", "score")  # PEFT adds these to a SEQ_CLS adapter's modules_to_save itself
_LORA_INITS = {"default": True, "gaussian": "gaussian"}  # adaptlab's names -> PEFT's init_lora_weights


def peft_modules_to_save(task: str, modules: list[str] | None) -> list[str] | None:
    """The new modules PEFT must train and save besides the adapter, without the head names PEFT appends on
    its own for classifiers (passing them too lists them twice in ``adapter_config.json``)."""
    if modules is None or TASKS[task].peft_task_type != "SEQ_CLS":
        return None if modules is None else list(modules)
    return [m for m in modules if m not in _PEFT_HEADS] or None


def default_lora_targets(model: nn.Module) -> list[str] | str:
    """The attention query/value projections where PEFT or we know their names, else every linear layer."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = model.config.model_type
    return _LORA_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or "all-linear"


def lora_targets(task: str, model: nn.Module, target_modules: list[str] | str | None, model_name: str) -> list[str] | str:
    """What LoRA adapts: the given module names (each checked against the model's linear layers) or all-linear, else
    the task's default."""
    if target_modules and "all-linear" in ([target_modules] if isinstance(target_modules, str) else target_modules):
        return "all-linear"
    if target_modules:
        available = linear_module_names(model)
        missing = [t for t in target_modules if t not in available]
        if missing:
            raise AdaptlabError(f"--target-modules {', '.join(missing)} not found in {model_name}; "
                                f"its linear layers are: {', '.join(available)}")
        return list(target_modules)
    return lora_defaults(task).target_modules or default_lora_targets(model)


def lora_config(task: str, model: nn.Module, options: LoraOptions, *, modules_to_save: list[str] | None = None,
                model_name: str = "the model"):
    """A ``peft.LoraConfig`` for ``task`` from ``options`` (alpha unset: 2 x r)."""
    from peft import LoraConfig

    alpha = 2 * options.r if options.alpha is None else options.alpha
    return LoraConfig(task_type=TASKS[task].peft_task_type, r=options.r, lora_alpha=alpha, lora_dropout=options.dropout,
                      target_modules=lora_targets(task, model, options.target_modules, model_name),
                      use_dora=options.use_dora, use_rslora=options.use_rslora,
                      init_lora_weights=_LORA_INITS[options.lora_init],
                      modules_to_save=peft_modules_to_save(task, modules_to_save))


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

    common = {"task_type": TASKS[task].peft_task_type, "num_virtual_tokens": num_virtual_tokens, **_model_dims(model)}
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
    extra = peft_modules_to_save(task, modules_to_save)
    if extra is not None:
        config.modules_to_save = extra
    return config


def init_prefix_from_ids(model, ids: list[int]) -> None:
    """Start a PEFT prefix (prefix tuning, no reparameterisation) from the keys and values the base model computes
    for real tokens ``ids`` (cycled or cut to the prefix length), instead of PEFT's random ones.

    Why: a random prefix is attended to at every layer and moves the model far from where it started (on
    wiki-descriptions with SmolLM2, validation loss 7.7 against the base's 3.9 before any step, and 32 steps only
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
