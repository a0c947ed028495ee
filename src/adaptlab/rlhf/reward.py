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

from adaptlab.adapt import apply, default_lr, lora_options, lr_help
from adaptlab.artifacts import read_manifest
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.results import JobResult
from adaptlab.measure import measure
from adaptlab.models.loading import max_positions, resolve_model
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.rlhf.preferences import Pair, PreferenceSplit
from adaptlab.runtime import Runtime
from adaptlab.training.options import TrainingOptions

STRATEGY = "reward-model"
THROUGHPUT_PAIRS = 256  # held-out responses timed for the inference rate


@dataclass(kw_only=True, eq=False)
class RewardModel(lora_options("reward"), TrainingOptions):
    """Score (prompt, response) pairs; ``fit`` on a ``PreferenceSplit``; a job for ``adaptlab.jobs.run_job``."""

    name = STRATEGY
    model: str = param("minilm", "Backbone: minilm, smollm2-135m, a Hub id or a local directory.")
    method: str = param("lora", "lora or full.", choices=("lora", "full"))
    max_length: int = param(256, "Tokens per (prompt, response); the prompt is cut from the left.", minimum=8, maximum=100_000)
    lr: float | None = param(None, lr_help("reward", "Learning rate"), above=0, maximum=10)
    epochs: int = param(2, "Training epochs.", minimum=1, maximum=10_000)
    # two sequences per pair and long dialogues: a forward pass of 32 pairs x 160 tokens keeps 3.6 GB of activations
    # on minilm; 8 pairs per pass, accumulated 4 times, is the same optimiser step in a quarter of the memory
    batch_size: int = param(8, "Preference pairs per forward pass (two sequences each).", minimum=1, below=2**31)
    grad_accum: int = param(4, "Accumulate gradients over this many passes (8 x 4: 32 pairs per optimiser step).", minimum=1, below=2**31)
    chat: bool | None = param(None, "Frame (prompt, response) as a user and an assistant turn with the tokenizer's chat "
                                    "template (default: when it has one, i.e. for chat decoders); else as a text pair.")
    center_rewards: float | None = param(None, "Add c * mean((r_chosen + r_rejected)^2) to the loss, keeping rewards "
                                               "centred on zero (TRL's center_rewards_coefficient; e.g. 0.01).", minimum=0, maximum=100)
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr is None:
            self.lr = default_lr("reward", self.method)
        self.check_training()
        if self.method == "lora":
            self.check_lora_targets(self.model)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def _build(self):
        from adaptlab.models.classifier import load_classifier

        self.ref_ = resolve_model(self.model)
        bundle = load_classifier(self.ref_, ["reward"])  # one output: the scalar reward
        limit = max_positions(bundle.model)
        if limit is not None and self.max_length > limit:  # a longer pair would fail inside a forward pass
            self.max_length = limit  # the manifest's params record the length used
        self.tokenizer_ = bundle.tokenizer
        return apply(bundle.model, self.method, self, "reward", keep=bundle.new_modules, model_name=f"model '{self.model}'")

    def fit(self, data: PreferenceSplit, workdir: Path) -> "RewardModel":
        from adaptlab.rlhf.pairs import PairCollator, PairDataset, PairwiseScores, pair_template
        from adaptlab.training.data import BatchDataModule
        from adaptlab.training.engine import fit_module
        from adaptlab.training.memory import warn_if_pass_too_large

        self.network_ = self._build()
        self.template_ = pair_template(self.tokenizer_, self.chat)
        collate = PairCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        train, val = (PairDataset(pairs, self.tokenizer_, self.max_length, self.template_) for pairs in (data.train, data.val))
        warn_if_pass_too_large(self, self.network_.config, max(train.lengths()), per_item=2, item="pairs",
                               lm_head=False)
        datamodule = BatchDataModule(train, val, collate, self.batch_size, self.seed, self.group_by_length)
        self.report_ = fit_module(PairwiseScores(self.network_), datamodule, self, workdir, self.runtime, objective="reward",
                                  module_options={"center_rewards": self.center_rewards})
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
        from adaptlab.models.classifier import count_parameters

        trainable, total = count_parameters(self.network_)
        return {"trainable_params": trainable, "total_params": total}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def get_params(self) -> dict:
        return recorded_params(self)

    def training_report(self) -> dict:
        return dataclasses.asdict(self.report_)

    def details(self) -> dict:
        from adaptlab.rlhf.pairs import uses_chat

        return {"tokenization": {"max_length": self.max_length, "padding_side": self.tokenizer_.padding_side,
                                 "framing": "chat template" if uses_chat(self.tokenizer_, self.chat) else "text pair"}}

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One scalar reward per (prompt, response)."""
        import torch

        from adaptlab.models.classifier import logits_of
        from adaptlab.rlhf.pairs import PairCollator, encode

        if len(prompts) != len(responses):
            raise AdaptlabError(f"{len(prompts)} prompts but {len(responses)} responses")
        device = self.runtime.torch_device
        network = self.network_.to(device).eval()
        collate = PairCollator(self.tokenizer_.pad_token_id, self.tokenizer_.padding_side)
        ids = [encode(self.tokenizer_, p, r, self.max_length, self.template_) for p, r in zip(prompts, responses)]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty(len(ids), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                index = order[start:start + batch_size]
                batch = collate([{"chosen": ids[i], "rejected": [], "weight": 1.0} for i in index])
                n = len(index)
                rewards = logits_of(network(input_ids=batch["input_ids"][:n].to(device),
                                            attention_mask=batch["attention_mask"][:n].to(device))).squeeze(-1)
                out[index] = rewards.float().cpu().numpy()
        return out

    def pairwise_accuracy(self, pairs: list[Pair]) -> dict:
        """Share of pairs whose chosen response scores higher, with a 95% interval that resamples whole prompts
        (the pairs of one prompt are not independent)."""
        chosen = self.score([p.prompt for p in pairs], [p.chosen for p in pairs])
        rejected = self.score([p.prompt for p in pairs], [p.rejected for p in pairs])
        margin = chosen - rejected
        return {"pairs": len(pairs), "pairwise_accuracy": float((margin > 0).mean()),
                "ci95": prompt_bootstrap_interval(margin > 0, [p.prompt for p in pairs]), "mean_margin": float(margin.mean()),
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

        from adaptlab.models.classifier import load_classifier

        path = Path(path)
        manifest = read_manifest(path)
        if manifest["strategy"] != STRATEGY:
            raise AdaptlabError(f"'{path}' is a '{manifest['strategy']}' artifact, not a reward model")
        known = {f.name for f in dataclasses.fields(cls)}
        params = {"chat": False, **manifest["params"]}  # reward models from before --chat read text pairs
        model = cls(**{k: v for k, v in params.items() if k in known}, device=device)
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
        from adaptlab.rlhf.pairs import pair_template

        model.template_ = pair_template(model.tokenizer_, model.chat)
        model.network_.eval()
        return model


def prompt_bootstrap_interval(correct: np.ndarray, prompts: list[str], draws: int = 2000, seed: int = 0) -> list[float]:
    """Percentile 95% interval of the accuracy when prompts (with all their pairs) are resampled."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    hits = np.array([correct[index].sum() for index in groups.values()], dtype=np.float64)
    sizes = np.array([len(index) for index in groups.values()], dtype=np.float64)
    if len(hits) < 2:
        return [float(correct.mean()), float(correct.mean())] if len(correct) else [0.0, 0.0]
    picks = np.random.default_rng(seed).integers(0, len(hits), size=(draws, len(hits)))
    accuracy = hits[picks].sum(1) / sizes[picks].sum(1)
    return [round(float(np.percentile(accuracy, 2.5)), 4), round(float(np.percentile(accuracy, 97.5)), 4)]


def train_reward_model(data: PreferenceSplit, output: str | Path, *, overwrite: bool = False, **params: Any) -> JobResult:
    """Fit, evaluate on the held-out prompts' pairs, and write the artifact; returns the manifest."""
    check_names(RewardModel, params, "train_reward_model", "the reward model")
    model = RewardModel(**params)
    result = run_job(model, data, output, seed=model.seed, labels=["reward"], data_description=data.describe(),
                     train_examples=len(data.train), resume=model.resume, overwrite=overwrite)
    return result
