"""Causal (decoder) language models: loading for generation, prompting, SFT and RLHF.

A name is a packaged short name, a local directory, a Hub id, or a generator artifact adaptlab wrote (an SFT,
DPO or PPO policy): its weights (``model/``) or its base plus adapter (``adapter/``), with the tokenizer and
chat template it was trained with. LoRA adapters are merged on load (one plain network, as fast as the base,
ready for a new adapter when a DPO or PPO run starts from it); prompt-learning adapters stay PEFT models.
``save_generator`` writes what every generator job saves, so each of them loads here, with plain
``peft``/``transformers`` and with ``pipeline("text-generation")``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from adaptlab.errors import AdaptlabError
from adaptlab.families import generator_strategies, is_generator
from adaptlab.models.loading import ModelRef, loading, model_kind, prepare_tokenizer, resolve_model
from adaptlab.models.registry import PACKAGED_MODELS
from adaptlab.runtime import Runtime


def is_artifact(name: str) -> bool:
    return (Path(name).expanduser() / "manifest.json").is_file()


def load_causal_lm(name: str, device: str | None = None) -> tuple:
    """``(model, tokenizer, ref)`` for a decoder, in eval mode on ``device``; refuses encoders with a clear message."""
    from transformers import AutoModelForCausalLM

    target = Runtime(device).torch_device  # a bad device fails before the weights load
    if is_artifact(name):
        model, tokenizer, ref = _from_artifact(Path(name).expanduser(), name)
        return model.to(target).eval(), tokenizer, ref
    ref: ModelRef = resolve_model(name)
    if model_kind(ref) != "decoder":
        raise AdaptlabError(f"model '{name}' is not a causal (decoder) language model; use e.g. smollm2-135m")
    tokenizer = prepare_tokenizer(ref, "decoder")
    with loading(ref):
        model = AutoModelForCausalLM.from_pretrained(ref.path).to(target).eval()
    return model, tokenizer, ref


def base_record(name: str, ref: ModelRef) -> dict:
    """The manifest's ``base_model``: the name as given (or the packaged model's), its Hub id where known, and a
    fingerprint of the weights; never this machine's resolved path. A run that started from an earlier
    artifact records that artifact's base, and what it started from."""
    if is_artifact(name):
        from adaptlab.artifacts import read_manifest

        manifest = read_manifest(Path(name).expanduser(), verify=False)
        return {**manifest["base_model"], "started_from": {"strategy": manifest["strategy"], "fingerprint": ref.fingerprint()}}
    spec = PACKAGED_MODELS.get(name)
    hub_id = spec.hub_id if spec else (None if ref.local else ref.path)
    return {"name": name, "hub_id": hub_id, "fingerprint": ref.fingerprint()}


def portable_base_name(record: dict) -> str:
    """What an adapter's ``base_model_name_or_path`` should say: a Hub id where there is one, else the name."""
    return record.get("hub_id") or record["name"]


def _from_artifact(path: Path, name: str) -> tuple:
    from transformers import AutoModelForCausalLM

    from adaptlab.artifacts import read_manifest

    manifest = read_manifest(path)
    if not is_generator(manifest["strategy"]):
        raise AdaptlabError(f"artifact '{path}' is a '{manifest['strategy']}' classifier, not a generator; use a causal "
                            f"LM or an artifact of {', '.join(generator_strategies())}")
    tokenizer = artifact_tokenizer(path)
    if (path / "model").is_dir():
        model = AutoModelForCausalLM.from_pretrained(path / "model")
    else:
        from peft import PeftModel

        base, _, _ = load_causal_lm(find_base(manifest["base_model"], path), "cpu")
        model = PeftModel.from_pretrained(base, path / "adapter")
        if model.peft_config["default"].peft_type.value == "LORA":
            model = model.merge_and_unload()
    return model, tokenizer, ModelRef(name, str(path.resolve()), local=True)


def artifact_tokenizer(path: Path):
    """A generator artifact's tokenizer (with the chat template it was trained with), ready to pad."""
    tokenizer_dir = path / "tokenizer" if (path / "tokenizer").is_dir() else path / ("model" if (path / "model").is_dir() else "adapter")
    return prepare_tokenizer(ModelRef(str(path), str(tokenizer_dir), local=True), "decoder")


def find_base(record: dict, artifact: Path) -> str:
    """The base an adapter artifact needs, found here: its name (short name, directory) or else its Hub id."""
    name = record["name"]
    if name in PACKAGED_MODELS or Path(name).expanduser().is_dir() or not record.get("hub_id"):
        return name
    print(f"adaptlab: base model '{name}' of '{artifact}' is not here; loading {record['hub_id']} instead", file=sys.stderr)
    return record["hub_id"]


def save_generator(model, tokenizer, directory: Path, base: dict) -> str:
    """Save a tuned causal LM into an artifact directory; returns the subdirectory written.

    A PEFT adapter goes to ``adapter/`` with ``base_model_name_or_path`` set to a portable name, so
    ``AutoPeftModelForCausalLM`` finds the base anywhere. A LoRA trained on top of an earlier artifact is merged
    and saved whole (``model/``): the artifact must not depend on another one being present. Full weights go
    to ``model/``. The tokenizer, with its chat template, is saved inside, so the directory is complete.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel) and "started_from" in base:
        model = model.merge_and_unload()
    if isinstance(model, PeftModel):
        model.peft_config["default"].base_model_name_or_path = portable_base_name(base)
        target = directory / "adapter"
    else:
        target = directory / "model"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target.name


def decoder_and_head(model) -> tuple | None:
    """``(decoder, lm_head)`` of a plain or LoRA causal LM, so a loss can apply the LM head only at the positions
    that have a label (a 49k-word head over every position is a third of SmolLM2's training FLOPs); None for
    prompt-learning PEFT models, whose virtual tokens only the full forward adds."""
    config = getattr(model, "active_peft_config", None)
    if config is not None and config.is_prompt_learning:
        return None
    return model.get_decoder(), model.get_output_embeddings()
