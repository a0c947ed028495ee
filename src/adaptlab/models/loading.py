"""Resolve a model name to local weights and load them with transformers.

A name is, in order: a packaged short name (``minilm``, ``smollm2-135m``), an existing local directory, or
a Hugging Face Hub id (downloaded by transformers when online; offline it fails with a clear message).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adaptlab._io import atomic_directory
from adaptlab.errors import AdaptlabError
from adaptlab.families import generator_strategies, is_generator
from adaptlab.hub import check_hub_name
from adaptlab.models.registry import PACKAGED_MODELS, PackagedModel, cache_root

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".json", ".model", ".txt"}


@dataclass(frozen=True)
class ModelRef:
    """A model name resolved to something ``from_pretrained`` accepts."""
    name: str  # as the user wrote it
    path: str  # local directory, or Hub id when ``local`` is False
    local: bool
    digest: str | None = None  # an artifact's model: from its manifest's checksums (the same on every machine)

    def fingerprint(self) -> str:
        """Identifies these exact weights for caches: file names, sizes and modification times.

        Rewriting a weight file changes its mtime, so a re-trained model never reuses stale embeddings.
        """
        if not self.local:
            return "hub:" + self.path
        if self.digest is not None:
            return "artifact:" + self.digest
        digest = hashlib.sha256()
        for file in sorted(Path(self.path).rglob("*")):
            if file.is_file() and file.suffix in _WEIGHT_SUFFIXES:
                stat = file.stat()
                digest.update(f"{file.relative_to(self.path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()[:16]


@functools.cache
def quiet_transformers() -> None:
    """transformers' own progress bars and info logs off (adaptlab draws its own bars; e.g. the expected
    "classifier newly initialised" report is noise). Done when the first model is resolved, not on import,
    so commands that only validate their options never import transformers."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def resolve_model(name: str) -> ModelRef:
    """Find the weights for ``name``; packaged GGUF models are converted once into the cache.

    Every check that can refuse the name runs before transformers is imported (~2 s), so a wrong --model is one
    line at once; a local directory's files are checked for damage here too (``check_model_files``)."""
    ref = _resolve(name)
    quiet_transformers()
    return ref


def check_model(name: str, decoder: bool = False) -> None:
    """Every refusal ``resolve_model`` (or loading an adaptlab artifact as a model) would make, without importing
    transformers or converting anything: what a command runs on ``--model`` before its heavy imports.
    ``decoder``: the command generates, so an encoder or a classifier artifact is refused too."""
    if not str(name).strip():
        raise AdaptlabError("--model is empty; give a packaged name (" + ", ".join(PACKAGED_MODELS) + "), a local "
                            "directory or a Hugging Face id")
    path = Path(name).expanduser()
    if name not in PACKAGED_MODELS and path.is_dir() and (path / "manifest.json").is_file():
        from adaptlab.artifacts import read_manifest

        manifest = read_manifest(path)  # its checksums: a damaged artifact is refused now, not after the imports
        if decoder and not is_generator(manifest["strategy"]):
            raise AdaptlabError(f"artifact '{path}' is a '{manifest['strategy']}' classifier, not a generator; use a "
                                f"causal LM or an artifact of {', '.join(generator_strategies())}")
        if (path / "model" / "config.json").is_file():
            check_model_files(path / "model", name)
        elif not decoder:  # an adapter artifact is a base model only for the generators that stack on it
            raise AdaptlabError(f"artifact '{path}' holds a '{manifest['strategy']}' adapter, not a whole model; give "
                                "a base model, or an artifact with its weights in model/ (full, a tuned retriever)")
        return
    ref = _resolve(name, convert=False)
    if decoder and _declared_kind(name, ref) == "encoder":
        raise AdaptlabError(f"model '{name}' is not a causal (decoder) language model; use e.g. smollm2-135m")


def declared_width(name: str) -> int | None:
    """The hidden size a local or packaged model's config.json declares (what its embeddings' width is), without
    loading it; None where there is no config to read (a Hub id, a GGUF not converted yet)."""
    ref = _resolve(name, convert=False)
    config_file = Path(ref.path) / "config.json"
    if not ref.local or not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return next((config[key] for key in ("hidden_size", "d_model", "n_embd", "dim") if isinstance(config.get(key), int)), None)


def _declared_kind(name: str, ref: ModelRef) -> str | None:
    """``encoder`` or ``decoder`` as the registry or a local config.json declares it (None for a Hub id)."""
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name].kind
    if not ref.local:
        return None
    config = json.loads((Path(ref.path) / "config.json").read_text(encoding="utf-8"))
    return _kind(config.get("architectures"), config.get("is_decoder"))


def _kind(architectures: list | None, is_decoder: bool | None) -> str:
    """``decoder`` for a causal LM's config, else ``encoder``: the one rule of ``model_kind`` and ``check_model``."""
    causal = any(str(arch).endswith("ForCausalLM") for arch in architectures or [])
    return "decoder" if causal or is_decoder else "encoder"


def _resolve(name: str, convert: bool = True) -> ModelRef:
    if name in PACKAGED_MODELS:
        spec = PACKAGED_MODELS[name]
        package_dir = spec.package_dir()
        if package_dir is None:
            raise AdaptlabError(f"model '{name}' needs its package: {spec.install} (or use the Hub id {spec.hub_id})")
        if spec.gguf_file and convert:
            quiet_transformers()
            return ModelRef(name, str(converted_gguf_dir(spec, package_dir)), local=True)
        return ModelRef(name, str(package_dir / (spec.subdir or "")), local=True)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file() and (path / "model" / "config.json").is_file():
        check_model_files(path / "model", name)
        return _artifact_model(name, path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise AdaptlabError(f"model directory '{path}' has no config.json; point to a saved transformers model")
        check_model_files(path, name)
        return ModelRef(name, str(path.resolve()), local=True)
    if path.exists() or name.startswith((".", "/", "~")):
        raise AdaptlabError(f"model '{name}' is not a model directory; pass a directory with config.json")
    check_hub_name(name, "model", PACKAGED_MODELS, "--model")
    return ModelRef(name, name, local=False)


def _artifact_model(name: str, artifact: Path) -> ModelRef:
    """An adaptlab artifact that holds a whole model in ``model/`` (a tuned retriever, a full fine-tune)."""
    try:
        files = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise AdaptlabError(f"model '{name}': its manifest.json cannot be read; re-create the artifact") from None
    weights = sorted(f"{file}:{digest}" for file, digest in files.items() if file.startswith("model/"))
    return ModelRef(name, str((artifact / "model").resolve()), local=True,
                    digest=hashlib.sha256(";".join(weights).encode()).hexdigest()[:16])


def converted_gguf_dir(spec: PackagedModel, package_dir: Path) -> Path:
    """The float safetensors copy of a packaged GGUF model, made on first use.

    Dequantising GGUF takes ~20 s per load; the converted directory loads in ~2 s. It is written to a
    temporary directory and renamed into place, so an interrupted conversion never leaves a broken cache.
    """
    target = cache_root() / "models" / f"{spec.name}-{spec.package_version()}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"adaptlab: converting {spec.gguf_file} to safetensors once (about 20 s) -> {target}", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=spec.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=spec.gguf_file)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def check_model_files(directory: Path, name: str) -> None:
    """Refuse a local model directory whose files are damaged, reading only headers: a config or tokenizer that is
    not JSON, a safetensors file shorter than its header says, or no weights at all. Loading would find the same
    faults seconds later, after torch and transformers are imported."""
    parsed = {}
    for file in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (directory / file).is_file():
            try:
                parsed[file] = json.loads((directory / file).read_text(encoding="utf-8"))
                if not isinstance(parsed[file], dict):
                    raise ValueError(file)
            except (OSError, ValueError):
                raise AdaptlabError(f"model '{name}': {file} is not valid JSON: its files are damaged or incomplete; "
                                    "re-download or point --model elsewhere") from None
    config = parsed["config.json"]
    if not config.get("model_type") and not config.get("architectures"):
        raise AdaptlabError(f"model '{name}': config.json names no model_type or architectures: its files are damaged "
                            "or incomplete; re-download or point --model elsewhere")
    weights = list(directory.glob("*.safetensors")) + list(directory.glob("*.bin"))
    if not weights and not list(directory.glob("*.gguf")):
        raise AdaptlabError(f"model '{name}' has no weights (*.safetensors or *.bin) next to its config.json: its files "
                            "are damaged or incomplete; re-download or point --model elsewhere")
    for file in directory.glob("*.safetensors"):
        reason = _safetensors_damage(file)
        if reason:
            raise AdaptlabError(f"model '{name}': {file.name} is {reason}: its files are damaged or incomplete; "
                                "re-download or point --model elsewhere")


def _safetensors_header(file: Path) -> tuple[int, dict] | str:
    """A safetensors file's header length and header, read without torch; or why it cannot be read."""
    import struct

    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return "shorter than a header"
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > file.stat().st_size - 8:
            return "truncated (its header is cut)"
        try:
            return header_length, json.loads(handle.read(header_length))
        except ValueError:
            return "unreadable (its header is not JSON)"


def _safetensors_damage(file: Path) -> str | None:
    """Why a safetensors file cannot be whole (None if its header is sound and the data it lists is all there)."""
    read = _safetensors_header(file)
    if isinstance(read, str):
        return read
    header_length, header = read
    size = file.stat().st_size
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    if ends and 8 + header_length + max(ends) > size:
        return f"truncated: {size} bytes of {8 + header_length + max(ends)}"
    return None


def checkpoint_matrix_names(name: str) -> set[str] | None:
    """The short names of the modules that hold a 2-D weight in a local model's safetensors headers (its linear and
    embedding layers: what LoRA can target), read without loading it; None where there are no headers to read."""
    ref = _resolve(name, convert=False)
    headers = [_safetensors_header(file) for file in sorted(Path(ref.path).glob("*.safetensors"))] if ref.local else []
    if not headers or any(isinstance(read, str) for read in headers):
        return None  # none, or damaged: loading refuses those with its own message
    return {key.rsplit(".", 2)[-2] for _, header in headers for key, entry in header.items()
            if key.endswith(".weight") and key.count(".") >= 1 and len(entry.get("shape", ())) == 2}


def count_checkpoint_parameters(model_dir: str) -> int:
    """Parameter count read from the safetensors headers, without loading any weights."""
    from safetensors import safe_open

    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def hub_error(ref: ModelRef, exc: Exception) -> AdaptlabError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return AdaptlabError(
        f"model '{ref.name}' is not a short name ({', '.join(PACKAGED_MODELS)}) or a local directory, and "
        f"loading it from the Hugging Face Hub failed ({reason}); if you are offline, use a short name or a local path"
    )


@contextmanager
def loading(ref: ModelRef) -> Iterator[None]:
    """Turn what ``from_pretrained`` raises into one line: a Hub failure (``OSError``), or, for a local directory,
    files that are damaged or incomplete (a garbled tokenizer.json, a config without a model type, truncated
    weights)."""
    try:
        yield
    except AdaptlabError:
        raise
    except OSError as exc:
        raise hub_error(ref, exc) from None
    except Exception as exc:
        if not ref.local:
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AdaptlabError(f"model '{ref.name}' could not be loaded ({type(exc).__name__}: {reason}): its files are "
                            "damaged or incomplete; re-download or point --model elsewhere") from None


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    with loading(ref):
        return AutoTokenizer.from_pretrained(ref.path)


def load_backbone(ref: ModelRef):
    """The bare transformer (no task head), in eval mode: what feature extraction needs."""
    from transformers import AutoModel

    with loading(ref):
        return AutoModel.from_pretrained(ref.path).eval()


def model_kind(ref: ModelRef) -> str:
    """``decoder`` for causal LMs, ``encoder`` otherwise, read from the config."""
    from transformers import AutoConfig

    with loading(ref):
        config = AutoConfig.from_pretrained(ref.path)
    return _kind(config.architectures, getattr(config, "is_decoder", False))


def prepare_tokenizer(ref: ModelRef, kind: str):
    """The model's tokenizer, able to pad: a decoder without a pad token pads with its end-of-text token (as is
    standard); a model with neither is refused. Decoders pad on the left so the last position is a real token."""
    tokenizer = load_tokenizer(ref)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise AdaptlabError(
                f"model '{ref.name}' has neither a pad token nor an end-of-text token to pad batches with; "
                "use a model whose tokenizer defines one"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left" if kind == "decoder" else "right"
    return tokenizer


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the pad token, else end-of-text."""
    value = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if value is None:
        raise AdaptlabError("the tokenizer has no pad or end-of-text token to pad batches with")
    return value


def pad_batch(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple:
    """``(input_ids, attention_mask)`` long tensors: every sequence padded to the longest in this batch only, on
    ``side`` (decoders that classify from the last position pad on the left). The one padding routine of
    training, embedding, scoring and the soft-prompt classifier."""
    import torch

    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(length - len(sequence), length) if side == "left" else slice(0, len(sequence))
        ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def pool(hidden, mask, pooling: str):
    """One vector per sequence from its token vectors (``hidden``: batch x tokens x width) and ``mask``: ``mean``
    over real tokens, ``cls`` (the first token) or ``last`` (the last real token; right padding). The one pooling
    of embedding, the head strategy's frozen backbone and the mean-pooled classifier."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def max_positions(model_or_config) -> int | None:
    """How many positions the model reads (None when its config does not say)."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def declared_mean_pooling(path: str | Path) -> bool:
    """Whether the local checkpoint at ``path`` is a sentence-transformers model whose pooling is the mean."""
    path = Path(path)
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        pooling = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
        config = json.loads((path / pooling["path"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return False
    return bool(config.get("pooling_mode_mean_tokens")) and not any(
        config.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens"))
