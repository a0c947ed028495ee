"""Fold a LoRA adapter into its base model, giving an ordinary ``full`` artifact."""

from __future__ import annotations

from pathlib import Path

from adaptlab.artifacts import read_manifest, write_artifact
from adaptlab.errors import AdaptlabError
from adaptlab.methods import get_strategy
from adaptlab.runner import load_artifact


def merge_lora(artifact: str | Path, output: str | Path) -> dict:
    """Merge ``artifact`` (strategy ``lora``) into the base weights and write a ``full`` artifact to ``output``."""
    manifest = read_manifest(Path(artifact))
    if not get_strategy(manifest["strategy"]).mergeable:
        raise AdaptlabError(
            f"artifact '{artifact}' is '{manifest['strategy']}'; only LoRA adapters can be merged into the weights "
            "(prompt-learning methods add tokens, they do not change weights)"
        )
    if Path(output).resolve() == Path(artifact).resolve():
        raise AdaptlabError("--output must differ from the artifact being merged")
    merged, tokenizer = load_artifact(artifact, progress=False).strategy.merged_model()
    total = sum(p.numel() for p in merged.parameters())

    def write(directory: Path) -> None:
        merged.save_pretrained(directory / "model")
        tokenizer.save_pretrained(directory / "tokenizer")

    keep = {k: manifest[k] for k in ("base_model", "labels", "data", "runtime", "metrics", "training")}
    full_params = set(get_strategy("full").param_names())
    params = {k: v for k, v in manifest["params"].items() if k in full_params}
    details = {"tokenization": manifest["details"]["tokenization"],
               "merged_from": {"artifact": str(artifact), "strategy": manifest["strategy"], "params": manifest["params"]}}
    return write_artifact(Path(output), {
        "strategy": "full", **keep, "params": params, "cost": {**manifest["cost"], "total_params": total}, "details": details,
    }, write)
