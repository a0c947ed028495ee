"""Fold a LoRA adapter into its base model, giving an ordinary ``full`` artifact."""

from __future__ import annotations

from pathlib import Path

from adaptlab.artifacts import read_manifest, write_artifact
from adaptlab.errors import AdaptlabError
from adaptlab.runner import load_artifact


def merge_lora(artifact: str | Path, output: str | Path) -> dict:
    """Merge ``artifact`` (strategy ``lora``) into the base weights and write a ``full`` artifact to ``output``."""
    manifest = read_manifest(Path(artifact))
    if manifest["strategy"] != "lora":
        raise AdaptlabError(
            f"artifact '{artifact}' is '{manifest['strategy']}'; only LoRA adapters can be merged into the weights "
            "(prompt-learning methods add tokens, they do not change weights)"
        )
    if Path(output).resolve() == Path(artifact).resolve():
        raise AdaptlabError("--output must differ from the artifact being merged")
    strategy = load_artifact(artifact, progress=False).strategy
    merged = strategy.model_.merge_and_unload()
    total = sum(p.numel() for p in merged.parameters())

    def write(directory: Path) -> None:
        merged.save_pretrained(directory / "model")
        strategy.tokenizer_.save_pretrained(directory / "tokenizer")

    keep = {k: manifest[k] for k in ("base_model", "labels", "data", "metrics", "tokenization", "training") if k in manifest}
    params = {k: v for k, v in manifest["params"].items() if k not in ("r", "alpha", "dropout", "target_modules")}
    return write_artifact(Path(output), {
        "strategy": "full",
        **keep,
        "params": params,
        "cost": {**manifest["cost"], "total_params": total},
        "merged_from": {"artifact": str(artifact), "strategy": "lora", "params": manifest["params"]},
    }, write)
