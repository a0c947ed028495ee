"""What a server holds: the artifacts it classifies with, the causal LMs it generates with, an optional RAG index.

Every artifact loads through the one artifact loader (``adaptlab.runner.Artifact``), whatever its strategy.
LoRA artifacts trained on the same base model (same fingerprint, same number of labels) share one copy of
it: the first loads normally, the others are added to its ``PeftModel`` as named adapters (PEFT's own
multi-adapter support; each adapter keeps its own classification head) and the adapter is selected per
forward pass. N adapters on a 22M-parameter base then cost one base plus N small adapters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn



class AdapterView(nn.Module):
    """One adapter of a shared ``PeftModel``: selecting it and running the model happen under one lock."""

    def __init__(self, peft_model, adapter: str, lock: threading.Lock) -> None:
        super().__init__()
        self.__dict__["peft"] = peft_model  # not a registered submodule: the views do not own the weights
        self.adapter, self.lock = adapter, lock

    def forward(self, **inputs):
        with self.lock:
            self.peft.set_adapter(self.adapter)
            return self.peft(**inputs)

    def to(self, *args, **kwargs):
        self.peft.to(*args, **kwargs)
        return self

    def eval(self):
        self.peft.eval()
        return self


@dataclass
class Registry:
    artifacts: dict = field(default_factory=dict)  # name -> Artifact
    generators: dict = field(default_factory=dict)  # name -> Generator (adapters: a view of their shared base)
    parents: dict = field(default_factory=dict)  # generator adapter name -> the served base it sits on
    embedders: dict = field(default_factory=dict)  # name -> Embedder, for /v1/embeddings
    shared_bases: dict = field(default_factory=dict)  # artifact name -> name of the artifact whose base it uses
    rag: object = None  # RagIndex
    device: str | None = None  # where the models run (None: CUDA when available)

    def artifact(self, name: str | None):
        if name is None:
            if len(self.artifacts) == 1:
                return next(iter(self.artifacts.values()))
            raise LookupError(f"several models are served; say which with \"model\": one of {', '.join(self.artifacts)}"
                              if self.artifacts else "no classification model is served")
        if name not in self.artifacts:
            raise LookupError(f"unknown model '{name}'; served: {', '.join(self.artifacts) or 'none'}")
        return self.artifacts[name]

    def generator(self, name: str | None):
        if name is None:
            if self.generators:
                return next(iter(self.generators.items()))
            raise LookupError("no generator is served; start the server with --generator MODEL")
        if name not in self.generators:
            raise LookupError(f"unknown generator '{name}'; served: {', '.join(self.generators) or 'none'}")
        return name, self.generators[name]


def load_registry(artifacts: dict[str, Path], generators: list[str], rag_store: str | None, device: str | None,
                  share_lora: bool = True, embedders: list[str] = ()) -> Registry:
    from adaptlab.artifacts import read_manifest
    from adaptlab.generation import Generator
    from adaptlab.methods import get_strategy
    from adaptlab.runner import Artifact

    registry = Registry(device=device)
    bases: dict[tuple, str] = {}
    for name, path in artifacts.items():
        manifest = read_manifest(path)
        key = (manifest["base_model"].get("fingerprint"), len(manifest["labels"]), manifest["strategy"])
        shareable = share_lora and get_strategy(manifest["strategy"]).shares_base
        if shareable and key in bases:
            registry.artifacts[name] = _adapter_on_shared_base(registry.artifacts[bases[key]], name, path, manifest, device)
            registry.shared_bases[name] = bases[key]
            continue
        # No embedding cache: a server would otherwise store a vector for every text it is sent, and one
        # computed under the server's bf16 autocast must not land in a cache keyed as fp32.
        registry.artifacts[name] = Artifact(path, device=device, progress=False, cache=False)
        if shareable:
            bases[key] = name
        causal_lm = registry.artifacts[name].strategy.causal_lm()
        if causal_lm is not None:  # its causal LM can generate too, without a second copy
            registry.generators[name] = Generator.from_loaded(*causal_lm)
    from adaptlab.serve.generators import load_generators, parse_generator_arguments

    for name, served in load_generators(parse_generator_arguments(generators), device).items():
        registry.generators[name] = served.generator
        if served.parent is not None:
            registry.parents[name] = served.parent
    from adaptlab.embeddings import Embedder

    for model in embedders:  # no cache: a server would otherwise store a vector for every text it is sent
        registry.embedders[model] = Embedder(model, normalize=True, progress=False, cache=False, device=device)
    if rag_store is not None:
        from adaptlab.rag import RagIndex

        registry.rag = RagIndex(rag_store, device=device, progress=False)
    return registry


def _adapter_on_shared_base(first, name: str, path: Path, manifest: dict, device: str | None):
    from adaptlab.runner import Artifact

    strategy = first.strategy
    host = strategy.host_network()
    if not isinstance(host, AdapterView):
        host = AdapterView(host, "default", threading.Lock())
        strategy.use_network(host)
    peft_model, lock = host.peft, host.lock
    with lock:
        peft_model.load_adapter(str(path / "adapter"), adapter_name=name)
        peft_model.set_adapter("default")
    return Artifact(path, network=AdapterView(peft_model, name, lock), device=device, progress=False)
