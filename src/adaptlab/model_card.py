"""What makes an artifact usable outside adaptlab: a short model card and adapter configs that travel.

Every artifact gets a ``README.md`` (also inside ``adapter/`` and ``model/``, replacing the empty template PEFT
writes): what the model is, what it was trained on, how well it did on held-out data, and how to load it with
adaptlab and with plain transformers / PEFT. PEFT records ``base_model_name_or_path`` as the path it loaded
the base from (this machine's package or cache directory); it is rewritten to the base's Hub id (or the name
the user gave), so ``AutoPeftModel*`` finds the base anywhere.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
from pathlib import Path

from adaptlab.models.registry import PACKAGED_MODELS

CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"


def finish_artifact_files(directory: Path, manifest: dict) -> None:
    """Portable adapter configs and the model card, written into ``directory`` before its checksums are taken."""
    base = manifest["base_model"]
    for config_file in directory.rglob(ADAPTER_CONFIG):
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base.get("hub_id") or base["name"]
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = model_card(directory, manifest)
    for folder in (directory, directory / "adapter", directory / "model"):
        if folder.is_dir():
            (folder / CARD).write_text(card, encoding="utf-8")


def model_card(directory: Path, manifest: dict) -> str:
    base, data, labels = manifest["base_model"], manifest.get("data") or {}, manifest.get("labels") or []
    hub = f" (Hugging Face Hub: `{base['hub_id']}`)" if base.get("hub_id") else ""
    lines = [f"# {_text(manifest['strategy'])} artifact made with adaptlab {_version()}", "",
             f"- **Base model**: `{_text(base['name'])}`{hub}, weights fingerprint `{base.get('fingerprint')}`."]
    spec = PACKAGED_MODELS.get(base["name"])
    if spec is not None and spec.gguf_file:
        lines.append(f"  The packaged weights are `{spec.gguf_file}` de-quantized to float; the Hub model is the original, "
                     "so loading the adapter on it gives close but not identical outputs.")
    if labels and labels != ["reward"]:
        lines.append(f"- **Task**: text classification into {', '.join(_text(label) for label in labels)}.")
    elif labels == ["reward"]:
        lines.append("- **Task**: reward model: one scalar score per (prompt, response).")
    else:
        lines.append("- **Task**: text generation.")
    if data.get("source"):
        sizes = data.get("sizes") or {}
        split = " / ".join(f"{sizes[k]} {k}" for k in ("train", "val", "test") if k in sizes)
        lines.append(f"- **Data**: `{_text(str(data['source']))}`" + (f" ({split})." if split else "."))
    lines += [_metric_lines(manifest.get("metrics") or {}), *_cost_lines(manifest.get("cost") or {})]
    lines += ["", "## Load it", "", "With adaptlab (any artifact):", "", "```python", "import adaptlab",
              'artifact = adaptlab.load_artifact("ARTIFACT")  # this directory', "```", *_plain_loading(directory, labels, manifest)]
    lines += ["", "`manifest.json` holds every setting, metric and library version, and a SHA-256 of each file."]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _metric_lines(metrics: dict) -> str | None:
    test = metrics.get("test") or {}
    shown = [f"{_text(k)} {v:.4g}" for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return f"- **Held-out test metrics**: {', '.join(shown[:8])}." if shown else None


def _cost_lines(cost: dict) -> list[str]:
    lines = []
    if cost.get("trainable_params") is not None:
        total = f" of {cost['total_params']:,}" if cost.get("total_params") else ""
        lines.append(f"- **Trainable parameters**: {cost['trainable_params']:,}{total}.")
    if cost.get("train_seconds") is not None:
        lines.append(f"- **Training time**: {cost['train_seconds']:.0f} s.")
    return lines


def _plain_loading(directory: Path, labels: list[str], manifest: dict) -> list[str]:
    """How to load the weights without adaptlab, for the layouts that allow it."""
    adapter = directory / "adapter" / ADAPTER_CONFIG
    if (directory / "model" / "modules.json").is_file():
        return ["", "With sentence-transformers alone (the head reads the mean of the token vectors, as the base model "
                "was trained to be read; `encode` returns one logit per label, in the order of `labels` above):", "",
                "```python", "from sentence_transformers import SentenceTransformer",
                'logits = SentenceTransformer("ARTIFACT/model").encode(["some text"])', "```"]
    if (directory / "model" / "config.json").is_file():
        task = "text-classification" if labels and labels != ["reward"] else "text-generation"
        return ["", "With transformers alone (tokenizer included):", "", "```python", "from transformers import pipeline",
                f'pipe = pipeline("{task}", model="ARTIFACT/model")', "```"]
    config = json.loads(adapter.read_text(encoding="utf-8")) if adapter.is_file() else {}
    task_type, base = config.get("task_type"), config.get("base_model_name_or_path")
    if task_type not in ("CAUSAL_LM", "SEQ_CLS") or (task_type == "CAUSAL_LM") != (not labels):
        return ["", "The weights are adaptlab-specific (a scikit-learn estimator, a head on frozen features, or a prompt "
                "read out through label words), so load them with adaptlab."]
    if task_type == "CAUSAL_LM":
        return ["", "With PEFT alone (the tokenizer, with its chat template, is inside `adapter/`):", "", "```python",
                "from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer",
                'model = AutoPeftModelForCausalLM.from_pretrained("ARTIFACT/adapter")',
                'tokenizer = AutoTokenizer.from_pretrained("ARTIFACT/adapter")', "```"]
    if ((manifest.get("details") or {}).get("tokenization") or {}).get("pooling") == "mean":
        return _mean_pooled_loading(config, base, labels, _encoder_attribute(adapter.parent))
    id2label = {i: label for i, label in enumerate(labels)}
    return ["", "With transformers and PEFT alone (the new head is saved with the adapter):", "", "```python",
            "from peft import PeftModel", "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            f"id2label = {json.dumps(id2label, ensure_ascii=False)}",
            f"base = AutoModelForSequenceClassification.from_pretrained({json.dumps(base)}, num_labels={len(labels)},",
            "    id2label=id2label, label2id={v: int(k) for k, v in id2label.items()})",
            'model = PeftModel.from_pretrained(base, "ARTIFACT/adapter")',
            'tokenizer = AutoTokenizer.from_pretrained("ARTIFACT/tokenizer")', "```"]


def _encoder_attribute(adapter: Path) -> str:
    """What the classifier calls its encoder in the adapter's weight names (``bert`` for BERT and MiniLM)."""
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "np") as weights:
        names = [n.split(".")[2] for n in weights.keys() if n.startswith("base_model.model.") and ".classifier" not in n]
    return names[0] if names else "bert"


def _mean_pooled_loading(config: dict, base: str, labels: list[str], encoder: str) -> list[str]:
    """The head reads the mean of the token vectors, which no transformers class does: a LoRA adapter loads onto the
    few lines below (parameter names as PEFT saved them); prompt-learning adapters need adaptlab's forward."""
    if config.get("peft_type") != "LORA":
        return ["", "The head reads the mean of the token vectors (as the base model was trained to be read), which no "
                "transformers class does: load this prompt-learning adapter with adaptlab."]
    return ["", "With transformers and PEFT alone: the head reads the mean of the token vectors (as the base model was "
            "trained to be read), which no transformers class does, so the model is these few lines:", "", "```python",
            "import torch", "from peft import PeftModel", "from transformers import AutoModel, AutoTokenizer", "",
            "class MeanPooledClassifier(torch.nn.Module):", "    def __init__(self):", "        super().__init__()",
            f"        self.{encoder} = AutoModel.from_pretrained({json.dumps(base)})",
            f"        self.config = self.{encoder}.config  # PEFT reads it",
            f"        self.classifier = torch.nn.Linear(self.config.hidden_size, {len(labels)})",
            "    def forward(self, input_ids, attention_mask, **_):",
            f"        hidden = self.{encoder}(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state",
            "        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)",
            "        return self.classifier((hidden * mask).sum(1) / mask.sum(1))  # logits", "",
            f"labels = {json.dumps(labels, ensure_ascii=False)}",
            'model = PeftModel.from_pretrained(MeanPooledClassifier(), "ARTIFACT/adapter").eval()',
            'tokenizer = AutoTokenizer.from_pretrained("ARTIFACT/tokenizer")', "```"]


def _text(value: str) -> str:
    """User-supplied text (label names, paths) shown in Markdown: HTML-escaped, so it renders as text."""
    return html.escape(str(value))


def _version() -> str:
    try:
        return importlib.metadata.version("adaptlab")
    except importlib.metadata.PackageNotFoundError:
        return "(source checkout)"
