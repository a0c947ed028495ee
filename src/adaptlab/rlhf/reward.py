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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from adaptlab.artifacts import read_manifest
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.measure import measure
from adaptlab.models import resolve_model
from adaptlab.models.adapters import lora_config
from adaptlab.models.classifier import count_parameters, load_classifier, logits_of
from adaptlab.params import check_fields, check_names, param
from adaptlab.rlhf.preferences import Pair, PreferenceSplit
from adaptlab.runtime import Runtime
from adaptlab.training.data import PadCollator
from adaptlab.training.engine import TrainingOptions, fit_module

STRATEGY = "reward-model"
THROUGHPUT_PAIRS = 256  # held-out responses timed for the inference rate


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


@dataclass(kw_only=True, eq=False)
class RewardModel(TrainingOptions):
    """Score (prompt, response) pairs; ``fit`` on a ``PreferenceSplit``; a job for ``adaptlab.jobs.run_job``."""

    name = STRATEGY
    model: str = param("minilm", "Backbone: minilm, smollm2-135m, a Hub id or a local directory.")
    method: str = param("lora", "lora or full.", choices=("lora", "full"))
    r: int = param(16, "LoRA rank.", minimum=1)
    alpha: int = param(32, "LoRA scaling alpha.", above=0)
    max_length: int = param(256, "Tokens per (prompt, response); the prompt is cut from the left.", minimum=8)
    lr: float | None = param(None, "Learning rate (default 5e-4 for LoRA, 3e-5 full).", above=0)
    epochs: int = param(2, "Training epochs.", minimum=1)
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = 5e-4 if self.method == "lora" else 3e-5
        check_fields(self)
        self.check_training()

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def _build(self):
        self.ref_ = resolve_model(self.model)
        bundle = load_classifier(self.ref_, ["reward"])  # one output: the scalar reward
        self.tokenizer_ = bundle.tokenizer
        if self.method == "full":
            return bundle.model
        from peft import get_peft_model

        config = lora_config("reward", bundle.model, r=self.r, alpha=self.alpha, modules_to_save=list(bundle.new_modules))
        return get_peft_model(bundle.model, config)

    def fit(self, data: PreferenceSplit, workdir: Path) -> "RewardModel":
        from adaptlab.training.data import BatchDataModule

        self.network_ = self._build()
        collate = PairCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        datamodule = BatchDataModule(
            PairDataset(data.train, self.tokenizer_, self.max_length), PairDataset(data.val, self.tokenizer_, self.max_length),
            collate, self.batch_size, self.seed, self.group_by_length)
        self.report_ = fit_module(PairwiseScores(self.network_), datamodule, self, workdir, self.runtime)
        self.network_.eval()
        return self

    # -- the job protocol -----------------------------------------------------------------------------------
    def evaluate(self, data: PreferenceSplit) -> dict:
        return {"test": self.pairwise_accuracy(data.test), "val": self.pairwise_accuracy(data.val)}

    def inference_rate(self, data: PreferenceSplit) -> float:
        pairs = data.test[:THROUGHPUT_PAIRS]
        with measure() as timing:
            self.score([p.prompt for p in pairs], [p.chosen for p in pairs])
        return len(pairs) / max(timing.seconds, 1e-9)

    def cost(self) -> dict:
        trainable, total = count_parameters(self.network_)
        return {"trainable_params": trainable, "total_params": total}

    def base_model(self) -> dict:
        return {"name": self.model, "fingerprint": self.ref_.fingerprint()}

    def get_params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("runtime")}

    def training_report(self) -> dict:
        return dataclasses.asdict(self.report_)

    def details(self) -> dict:
        return {"tokenization": {"max_length": self.max_length, "padding_side": self.tokenizer_.padding_side}}

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One scalar reward per (prompt, response)."""
        if len(prompts) != len(responses):
            raise AdaptlabError(f"{len(prompts)} prompts but {len(responses)} responses")
        device = self.runtime.torch_device
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
        known = {f.name for f in dataclasses.fields(cls)}
        model = cls(**{k: v for k, v in manifest["params"].items() if k in known}, device=device)
        model.ref_ = resolve_model(model.model)
        bundle = load_classifier(model.ref_, ["reward"])
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
    check_names(RewardModel, params, "train_reward_model", "the reward model")
    model = RewardModel(**params)
    result = run_job(model, data, output, seed=model.seed, labels=["reward"], data_description=data.describe(),
                     train_examples=len(data.train), resume=model.resume)
    return result.manifest
