"""Fold a LoRA adapter into its base model: a classifier becomes an ordinary ``full`` artifact; a generator
(SFT, DPO or PPO policy) keeps its strategy, with a plain transformers directory (``model/``, tokenizer and chat
template inside) that ``pipeline("text-generation")`` loads."""

from __future__ import annotations

from pathlib import Path

from adaptlab.artifacts import read_manifest
from adaptlab.errors import AdaptlabError
from adaptlab.families import family_of
from adaptlab.jobs import check_output, write_artifact
from adaptlab.methods import get_strategy
from adaptlab.runner import load_artifact


def merge_lora(artifact: str | Path, output: str | Path, *, overwrite: bool = False) -> dict:
    """Merge ``artifact`` (strategy ``lora``) into the base weights and write a ``full`` artifact to ``output``
    (an artifact already there is replaced only with ``overwrite``)."""
    manifest = read_manifest(Path(artifact))
    check_output(output, overwrite, inputs=[artifact])
    if family_of(manifest["strategy"], f"artifact '{artifact}'").generator:
        return _merge_generator(Path(artifact), Path(output), manifest)
    if not get_strategy(manifest["strategy"]).mergeable:
        raise AdaptlabError(
            f"artifact '{artifact}' is '{manifest['strategy']}'; only LoRA adapters can be merged into the weights "
            "(prompt-learning methods add tokens, they do not change weights)"
        )
    merged, tokenizer = load_artifact(artifact, progress=False).strategy.merged_model()
    total = sum(p.numel() for p in merged.parameters())

    def write(directory: Path) -> None:
        from adaptlab.models.pooled import save_classifier

        save_classifier(merged, tokenizer, directory / "model", manifest["details"]["tokenization"]["max_length"])
        tokenizer.save_pretrained(directory / "tokenizer")  # where every token classifier artifact keeps it

    keep = {k: manifest[k] for k in ("base_model", "labels", "data", "runtime", "metrics", "training")}
    full_params = set(get_strategy("full").param_names())
    params = {k: v for k, v in manifest["params"].items() if k in full_params}
    details = {"tokenization": manifest["details"]["tokenization"],
               "merged_from": {"artifact": str(artifact), "strategy": manifest["strategy"], "params": manifest["params"]}}
    return write_artifact(Path(output), {
        "strategy": "full", **keep, "params": params, "cost": {**manifest["cost"], "total_params": total}, "details": details,
    }, write)


def _merge_generator(artifact: Path, output: Path, manifest: dict) -> dict:
    import json

    from adaptlab.models.causal import load_causal_lm

    adapter = artifact / "adapter" / "adapter_config.json"
    if not adapter.exists():
        raise AdaptlabError(f"artifact '{artifact}' already holds full weights (model/); there is nothing to merge")
    if json.loads(adapter.read_text(encoding="utf-8")).get("peft_type") != "LORA":
        raise AdaptlabError(f"artifact '{artifact}' is a prompt-learning adapter; only LoRA adapters can be merged into the weights")
    merged, tokenizer, _ = load_causal_lm(str(artifact), "cpu")  # LoRA adapters are merged on load

    def write(directory: Path) -> None:
        merged.save_pretrained(directory / "model")
        tokenizer.save_pretrained(directory / "model")

    keep = {k: manifest[k] for k in ("strategy", "base_model", "labels", "data", "params", "runtime", "metrics", "cost", "training")}
    details = {**(manifest.get("details") or {}), "merged_from": {"artifact": artifact.name, "strategy": manifest["strategy"]}}
    total = sum(p.numel() for p in merged.parameters())
    return write_artifact(output, {**keep, "cost": {**manifest["cost"], "total_params": total}, "details": details}, write)
