"""The causal LMs a server generates with: plain models, and generator artifacts as named adapters on one base.

``--generator`` takes ``MODEL`` or ``NAME=MODEL`` (a short name, Hub id, directory, or an SFT/DPO/PPO artifact).
LoRA artifacts are not merged here (as ``generate`` does): those of the same base become named PEFT adapters of
one ``PeftModel`` (vLLM's ``--lora-modules`` convention), the base is served beside them under its own name
(adapters disabled), and a request picks its adapter by model name, so N adapters cost one base plus N small
adapters. Every other generator (full weights, prompt-learning adapters, plain models) is loaded on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import AdaptlabError


@dataclass(frozen=True)
class ServedGenerator:
    """A served name: the ``Generator`` that holds the weights, and the adapter to select (None: none)."""

    generator: object  # adaptlab.generation.Generator
    adapter: str | None = None
    parent: str | None = None  # the base model an adapter sits on, for /v1/models


def parse_generator_arguments(values: list[str]) -> dict[str, str]:
    """``MODEL`` or ``NAME=MODEL`` -> {name: model}; an artifact directory is named after itself."""
    named: dict[str, str] = {}
    for value in values:
        name, equals, model = value.partition("=")
        if not equals:
            model = value
            name = Path(value).resolve().name if (Path(value) / "manifest.json").is_file() else value
        if name in named:
            raise AdaptlabError(f"two generators are named '{name}'; name them with NAME=MODEL")
        named[name] = model
    return named


def load_generators(named: dict[str, str], device: str | None) -> dict[str, ServedGenerator]:
    from adaptlab.artifacts import read_manifest
    from adaptlab.generation import Generator
    from adaptlab.models.causal import artifact_tokenizer

    served: dict[str, ServedGenerator] = {}
    bases: dict[str, tuple[str, object]] = {}  # base fingerprint -> (served base name, its Generator)
    lora = {name: model for name, model in named.items() if _is_lora_artifact(model)}
    for name, model in lora.items():  # adapters first, so a base also asked for by name is that same copy
        base = read_manifest(Path(model))["base_model"]
        if base["fingerprint"] not in bases:
            bases[base["fingerprint"]] = _shared_base(base, name, model, device)
        else:
            bases[base["fingerprint"]][1].model.load_adapter(str(Path(model) / "adapter"), adapter_name=name)
        base_name, generator = bases[base["fingerprint"]]
        served[name] = ServedGenerator(generator.view(name, artifact_tokenizer(Path(model))), adapter=name, parent=base_name)
    shared = {base_name: generator for base_name, generator in bases.values()}
    for name, model in named.items():
        if name in lora:
            continue
        served[name] = ServedGenerator(shared[model].view(None) if model in shared else Generator(model, device))
    for base_name, generator in shared.items():  # the base itself is served too, under its own name
        if not any(s.generator.model is generator.model and s.adapter is None for s in served.values()):
            served[base_name] = ServedGenerator(generator.view(None))
    return served


def _is_lora_artifact(model: str) -> bool:
    from adaptlab.models.causal import is_artifact

    adapter_config = Path(model) / "adapter" / "adapter_config.json"
    return is_artifact(model) and adapter_config.exists() and _is_lora(adapter_config)


def _is_lora(adapter_config: Path) -> bool:
    return json.loads(adapter_config.read_text(encoding="utf-8")).get("peft_type") == "LORA"


def _shared_base(base: dict, name: str, model: str, device: str | None):
    from peft import PeftModel

    from adaptlab.generation import Generator
    from adaptlab.models.causal import find_base

    base_name = find_base(base, Path(model))
    generator = Generator(base_name, device)
    generator.model = PeftModel.from_pretrained(generator.model, str(Path(model) / "adapter"), adapter_name=name).eval()
    return base_name, generator
