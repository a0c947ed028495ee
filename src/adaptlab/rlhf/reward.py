"""Reward model: a backbone with a scalar head, trained on human preference pairs (Bradley-Terry).

P(chosen preferred over rejected) = sigmoid(r(prompt, chosen) - r(prompt, rejected)). Written as two-class
logits ``(r_rejected, r_chosen)`` with label 1, cross-entropy *is* the Bradley-Terry loss and accuracy is
pairwise accuracy, so the reward model trains on the same Lightning engine as every classifier (resume,
precision, early stopping on held-out pairwise accuracy, DDP...) with no second training loop.

Inputs are ``prompt`` and ``response`` as a text pair: the prompt is cut from the left (the latest turns
matter most) and the response from the right, to fit ``max_length`` tokens.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from adaptlab.artifacts import read_manifest, write_artifact
from adaptlab.embeddings import pick_device
from adaptlab.errors import AdaptlabError
from adaptlab.measure import measure
from adaptlab.models import resolve_model
from adaptlab.models.classifier import count_parameters, load_classifier, logits_of
from adaptlab.rlhf.preferences import Pair, PreferenceSplit
from adaptlab.training.data import PadCollator
from adaptlab.training.engine import TrainingOptions, fit_module, work_dir

STRATEGY = "reward-model"


def special_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens the tokenizer puts before, between and after a text pair (e.g. BERT's [CLS] a [SEP]
    b [SEP]; BOS a b for Llama), read off a tokenised probe pair."""
    x = tokenizer("x", add_special_tokens=False)["input_ids"]
    y = tokenizer("y", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", "y")["input_ids"]
    find = lambda part, start: next((i for i in range(start, len(full) - len(part) + 1) if full[i:i + len(part)] == part), None)
    i = find(x, 0)
    j = None if i is None else find(y, i + len(x))
    if j is None:
        return [], [], []
    return full[:i], full[i + len(x):j], full[j + len(y):]


def encode(tokenizer, prompt: str, response: str, max_length: int, template=None) -> list[int]:
    """Prompt tail + response head as one sequence with the model's special tokens."""
    before, between, after = template or special_template(tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    budget = max(2, max_length - len(before) - len(between) - len(after))
    response_ids = response_ids[: max(budget // 2, budget - len(prompt_ids))]
    keep = budget - len(response_ids)
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - keep):] if keep > 0 else []
    return before + prompt_ids + between + response_ids + after


class PairDataset(Dataset):
    def __init__(self, pairs: list[Pair], tokenizer, max_length: int) -> None:
        template = special_template(tokenizer)
        self.chosen = [encode(tokenizer, p.prompt, p.chosen, max_length, template) for p in pairs]
        self.rejected = [encode(tokenizer, p.prompt, p.rejected, max_length, template) for p in pairs]
        self.weights = [p.weight for p in pairs]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict:
        return {"chosen": self.chosen[i], "rejected": self.rejected[i], "weight": self.weights[i]}

    def lengths(self) -> list[int]:
        return [max(len(a), len(b)) for a, b in zip(self.chosen, self.rejected)]


class PairCollator:
    """Chosen sequences in rows 0..B-1, rejected in B..2B-1, padded together by the classifiers' ``PadCollator``;
    labels all 1 (chosen wins)."""

    def __init__(self, pad_id: int, side: str) -> None:
        self.pad = PadCollator(pad_id, side)

    def __call__(self, items: list[dict]) -> dict:
        sequences = [it["chosen"] for it in items] + [it["rejected"] for it in items]
        padded = self.pad([{"input_ids": seq, "labels": 0} for seq in sequences])
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                "labels": torch.ones(len(items), dtype=torch.long),
                "weights": torch.as_tensor([it["weight"] for it in items], dtype=torch.float32)}


class PairwiseScores(nn.Module):
    """(2B sequences) -> (B, 2) logits ``(r_rejected, r_chosen)`` from a scalar-head model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rewards = logits_of(self.model(input_ids=input_ids, attention_mask=attention_mask)).squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        return torch.stack([rejected, chosen], dim=-1)


class RewardModel:
    """Score (prompt, response) pairs; ``fit`` on a ``PreferenceSplit``; ``save``/``load`` as an artifact."""

    def __init__(self, model: str = "minilm", *, method: str = "lora", r: int = 16, alpha: int = 32,
                 max_length: int = 256, device: str | None = None, **training: Any) -> None:
        if method not in ("lora", "full"):
            raise AdaptlabError(f"--method must be lora or full, not '{method}'")
        training.setdefault("lr", 5e-4 if method == "lora" else 3e-5)
        training.setdefault("epochs", 2)
        self.options = TrainingOptions(**training)
        self.options.check()
        self.model, self.method, self.r, self.alpha, self.max_length, self.device = model, method, r, alpha, max_length, device
        self.ref = resolve_model(model)
        self.network_: nn.Module | None = None

    def _build(self):
        bundle = load_classifier(self.ref, ["reward"])  # one output: the scalar reward
        self.tokenizer_ = bundle.tokenizer
        if self.method == "full":
            return bundle.model
        from peft import LoraConfig, TaskType, get_peft_model

        from adaptlab.methods.finetune import default_lora_targets

        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=self.r, lora_alpha=self.alpha, lora_dropout=0.05,
                            target_modules=default_lora_targets(bundle.model), modules_to_save=list(bundle.new_modules))
        return get_peft_model(bundle.model, config)

    def fit(self, data: PreferenceSplit, output: Path) -> "RewardModel":
        from adaptlab.training.data import ClassificationDataModule

        self.network_ = self._build()
        collate = PairCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        datamodule = ClassificationDataModule(
            PairDataset(data.train, self.tokenizer_, self.max_length), PairDataset(data.val, self.tokenizer_, self.max_length),
            collate, self.options.batch_size, self.options.seed, self.options.group_by_length)
        self.report_ = fit_module(PairwiseScores(self.network_), datamodule, self.options, output)
        self.network_.eval()
        return self

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One scalar reward per (prompt, response)."""
        if len(prompts) != len(responses):
            raise AdaptlabError(f"{len(prompts)} prompts but {len(responses)} responses")
        device = pick_device(self.device)
        network = self.network_.to(device).eval()
        collate = PairCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        template = special_template(self.tokenizer_)
        ids = [encode(self.tokenizer_, p, r, self.max_length, template) for p, r in zip(prompts, responses)]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty(len(ids), dtype=np.float32)
        for start in range(0, len(ids), batch_size):
            index = order[start:start + batch_size]
            batch = collate([{"chosen": ids[i], "rejected": [], "weight": 1.0} for i in index])
            n = len(index)
            rewards = logits_of(network(input_ids=batch["input_ids"][:n].to(device),
                                        attention_mask=batch["attention_mask"][:n].to(device))).squeeze(-1)
            out[index] = rewards.float().cpu().numpy()
        return out

    def pairwise_accuracy(self, pairs: list[Pair]) -> dict:
        chosen = self.score([p.prompt for p in pairs], [p.chosen for p in pairs])
        rejected = self.score([p.prompt for p in pairs], [p.rejected for p in pairs])
        margin = chosen - rejected
        return {"pairs": len(pairs), "pairwise_accuracy": float((margin > 0).mean()), "mean_margin": float(margin.mean()),
                "reward_mean": float(np.concatenate([chosen, rejected]).mean()),
                "reward_std": float(np.concatenate([chosen, rejected]).std())}

    # -- artifact -------------------------------------------------------------------------------------------
    def params(self) -> dict:
        training = {k: v for k, v in dataclasses.asdict(self.options).items()
                    if k not in ("callbacks", "progress", "resume", "accelerator", "devices", "strategy", "num_nodes")}
        return {"model": self.model, "method": self.method, "r": self.r, "alpha": self.alpha, "max_length": self.max_length, **training}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        self.tokenizer_.save_pretrained(directory / "tokenizer")
        if self.method == "lora":
            self.network_.save_pretrained(directory / "adapter")
        else:
            save_file({k: v.contiguous() for k, v in self.network_.state_dict().items()}, directory / "model.safetensors")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "RewardModel":
        from transformers import AutoTokenizer

        path = Path(path)
        manifest = read_manifest(path)
        if manifest["strategy"] != STRATEGY:
            raise AdaptlabError(f"'{path}' is a '{manifest['strategy']}' artifact, not a reward model")
        params = dict(manifest["params"])
        model = cls(params.pop("model"), method=params.pop("method"), r=params.pop("r"), alpha=params.pop("alpha"),
                    max_length=params.pop("max_length"), device=device, **params)
        bundle = load_classifier(model.ref, ["reward"])
        if model.method == "lora":
            from peft import PeftModel

            model.network_ = PeftModel.from_pretrained(bundle.model, path / "adapter")
        else:
            from safetensors.torch import load_file

            bundle.model.load_state_dict(load_file(path / "model.safetensors"))
            model.network_ = bundle.model
        model.tokenizer_ = AutoTokenizer.from_pretrained(path / "tokenizer")
        model.tokenizer_.padding_side = bundle.tokenizer.padding_side
        model.network_.eval()
        return model


def train_reward_model(data: PreferenceSplit, output: str | Path, **params: Any) -> dict:
    """Fit, evaluate on the held-out prompts' pairs, and write the artifact; returns the manifest."""
    output = Path(output)
    torch.manual_seed(params.get("seed", 0))
    model = RewardModel(**params)
    started = time.perf_counter()
    with measure() as cost:
        model.fit(data, output)
    test, val = model.pairwise_accuracy(data.test), model.pairwise_accuracy(data.val)
    trainable, total = count_parameters(model.network_)
    manifest = {
        "strategy": STRATEGY,
        "base_model": {"name": model.model, "fingerprint": model.ref.fingerprint()},
        "labels": ["reward"],
        "data": data.describe(),
        "params": model.params(),
        "metrics": {"test": test, "val": val},
        "cost": {"trainable_params": trainable, "total_params": total, "train_seconds": round(time.perf_counter() - started, 2),
                 "peak_rss_mb": cost.as_dict()["peak_rss_mb"]},
        "training": dataclasses.asdict(model.report_),
    }
    manifest = write_artifact(output, manifest, model.save)
    import shutil

    shutil.rmtree(work_dir(output), ignore_errors=True)
    return manifest
