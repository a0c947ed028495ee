"""One artifact directory format for every strategy.

An artifact is a directory holding ``manifest.json`` (strategy, base model, label map, data fingerprint,
hyper-parameters, metrics, cost, library versions, and a SHA-256 of every other file and of the manifest itself)
plus the weights: safetensors for tensors, PEFT's own format for adapters, skops for scikit-learn estimators.
Nothing is pickled. Artifacts are written atomically (``adaptlab.jobs.write_artifact``, which adds the model card), and
loading checks the checksums and the manifest's shape before trusting any file: an edited manifest (other labels,
another base model) would load weights it does not describe, so it is refused like a damaged weight file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

from adaptlab.errors import AdaptlabError

FORMAT = "adaptlab-artifact"
FORMAT_VERSION = 2  # 2: one schema for every family (strategy-specific facts under "details", "runtime")
_V1_DETAILS = ("tokenization", "embedding", "selection", "prompting", "samples", "merged_from")
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"  # of the manifest's other keys, canonical JSON
# key -> (type, what it holds), checked on every load
_SHAPE = {"strategy": (str, "the strategy name"), "base_model": (dict, "the base model's name and fingerprint"),
          "files": (dict, "a checksum per file"), "params": (dict, "the settings"), "details": (dict, "the strategy's facts")}
_LIBRARIES = ("adaptlab", "torch", "transformers", "peft", "lightning", "scikit-learn", "skops", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path, verify: bool = True) -> dict:
    """Read and check an artifact's manifest; every problem is a one-line ``AdaptlabError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdaptlabError(f"artifact '{directory}' does not exist or is not a directory; pass the --output of a train run")
    path = directory / MANIFEST
    if not path.exists():
        raise AdaptlabError(f"'{directory}' is not an adaptlab artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaptlabError(f"artifact manifest '{path}' is not valid JSON ({exc}); re-run training") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AdaptlabError(f"'{path}' is not an adaptlab artifact manifest")
    if not isinstance(manifest.get("format_version", 1), int):
        raise AdaptlabError(f"'{path}': 'format_version' must be a whole number; the manifest is damaged, re-train")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise AdaptlabError(f"artifact '{directory}' was written by a newer adaptlab; upgrade adaptlab to load it")
    if verify and MANIFEST_CHECKSUM in manifest and manifest[MANIFEST_CHECKSUM] != _manifest_digest(manifest):
        raise AdaptlabError(f"'{path}' was edited or damaged after training (its {MANIFEST_CHECKSUM} no longer matches); "
                            "it may no longer describe the weights: re-train, or restore the original file")
    if manifest.get("format_version", 1) == 1:
        manifest = _upgrade_v1(manifest)
    for key, (kind, holds) in _SHAPE.items():
        if (key in manifest and not isinstance(manifest[key], kind)) or (key in ("strategy", "base_model") and key not in manifest):
            raise AdaptlabError(f"'{path}': '{key}' must be {holds} ({kind.__name__}); the manifest is damaged, re-train")
    if not isinstance(manifest["base_model"].get("name"), str):
        raise AdaptlabError(f"'{path}': 'base_model' has no name; the manifest is damaged, re-train")
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.exists():
                raise AdaptlabError(f"artifact '{directory}' is incomplete: '{name}' is missing")
            if file_sha256(file) != expected:
                raise AdaptlabError(f"artifact '{directory}': '{name}' does not match its checksum; the file was changed or damaged")
    return manifest


def seal_manifest(manifest: dict) -> dict:
    """The manifest with its own checksum set: what ``write_artifact`` stores. The checksums catch accidents and
    edits, not a forger (nothing is secret), so loading also refuses what is unsafe whatever the manifest says."""
    return {**manifest, MANIFEST_CHECKSUM: _manifest_digest(manifest)}


def _manifest_digest(manifest: dict) -> str:
    rest = {key: value for key, value in manifest.items() if key != MANIFEST_CHECKSUM}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def directory_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def _upgrade_v1(manifest: dict) -> dict:
    """Read a format-1 manifest as format 2: strategy-specific keys move under ``details``; Lightning's precision
    names become the runtime vocabulary."""
    from adaptlab.runtime import DEPRECATED_PRECISIONS

    manifest = dict(manifest)
    manifest["details"] = {key: manifest.pop(key) for key in _V1_DETAILS if key in manifest}
    params = dict(manifest.get("params", {}))
    params.pop("accelerator", None)
    if str(params.get("precision")) in DEPRECATED_PRECISIONS:
        params["precision"] = DEPRECATED_PRECISIONS[str(params["precision"])]
    manifest["params"] = params
    manifest.setdefault("runtime", None)
    manifest.setdefault("training", None)
    return manifest
