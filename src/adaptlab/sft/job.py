"""Supervised fine-tuning of a causal LM: one job (``adaptlab.jobs.Job``) for every method, on the Lightning engine.

Methods: ``full`` (every weight), ``last-k`` (the last ``layers`` blocks and the final norm), ``lora`` (PEFT,
with DoRA and rsLoRA switches), ``prefix-tuning`` and ``prompt-tuning`` (PEFT's virtual tokens), applied by the
adaptation layer (``adaptlab.adapt``) with its options and defaults. The data are
conversations (loss on assistant turns, end-of-turn token included) or plain text (every token; packed).
Training is the classifiers' engine with the ``causal-lm`` objective: best epoch by validation loss, resume
from the last checkpoint, DDP through ``--devices``/``--strategy``.

Evaluation (after ``fit``, on the test split once): held-out loss and perplexity, greedy replies scored by
exact match, token F1 and ROUGE-L, mean length and the share that stopped by itself, a few samples, and the
forgetting probe before and after (general-text perplexity, zero-shot Rotten Tomatoes accuracy by
``LabelScorer``), all under the job's ``Runtime.autocast()``: the precision training ran in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.adapt import LastKOptions, PromptTuningOptions, apply, default_lr, lora_options, lr_help
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.runtime import Runtime
from adaptlab.training.options import TrainingOptions

METHODS = ("full", "last-k", "lora", "prefix-tuning", "prompt-tuning")
PROMPT_LEARNING = ("prefix-tuning", "prompt-tuning")
SAMPLES = 5  # (prompt, reference, output) rows kept in the manifest


def sft_methods() -> tuple[str, ...]:
    """The built-in methods and the PEFT methods registered for SFT (``adaptlab.adapt.register_peft_method``)."""
    from adaptlab.adapt import PEFT_METHODS

    return METHODS + tuple(name for name, method in PEFT_METHODS.items() if "sft" in method.lr)


@dataclass(kw_only=True, eq=False)
class SFTJob(lora_options("sft"), LastKOptions, PromptTuningOptions, TrainingOptions):
    """Adapt a causal LM to generate like the training data (``adaptlab sft``)."""

    name = "sft"
    model: str = param("smollm2-135m", "Causal LM to adapt: short name, Hub id, local directory, or an sft/dpo/ppo artifact.")
    method: str = param("lora", "full, last-k, lora, prefix-tuning or prompt-tuning (or a PEFT method registered with "
                        "adaptlab.adapt.register_peft_method, with its default options).")
    lr: float | None = param(None, lr_help("sft") + " These are the generation ladder's measured rates; until this release "
                             "sft's own were full 2e-5, last-k 5e-5, lora 2e-4, prefix-tuning 5e-3.", above=0, maximum=10)
    epochs: int = param(2, "Training epochs.", minimum=1, maximum=10_000)
    batch_size: int = param(16, "Examples (or packed blocks) per optimiser step, before accumulation.", minimum=1, below=2**31)
    lora_dropout: float | None = param(None, replaced_by="dropout")
    prefix_init: str = param("data", "prefix tuning without --init-text: start from the keys and values of the first training "
                             "example's opening tokens (data: the model starts where it was) or PEFT's random ones (random: "
                             "the model starts far worse than it was and little data does not bring it back).",
                             choices=("data", "random"))
    group_by_length: bool = param(False, "Batch examples of similar length together: 1.2x faster on a CPU, but "
                                  "~2% higher held-out loss on small data (sft_batching.json); off, as in TRL.")
    max_length: int = param(512, "Tokens per example (or packed block); longer ones are cut.", minimum=8, below=100_001)
    packing: bool | None = param(None, "Pack examples into blocks of max-length (position ids reset per example); "
                                 "default: on for plain text, off for conversations.")
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, ~30% slower.")
    max_new_tokens: int = param(48, "Evaluation: most tokens generated per test reply.", minimum=1, below=4097)
    generate_limit: int | None = param(256, "Evaluation: test examples generated and scored (all are used for the loss).", minimum=1)
    forgetting: bool = param(True, "Measure forgetting (general-text perplexity, zero-shot Rotten Tomatoes) before and after.")
    forgetting_text: str | None = param(None, "File of general text (.txt/.jsonl) for the forgetting perplexity "
                                        "(default: held-out Wikipedia summaries).")
    forgetting_sample: int = param(200, "Forgetting probe size: Rotten Tomatoes sentences scored zero-shot, and a third "
                                   "as many held-out Wikipedia summaries (at most 64) for the perplexity.", minimum=16, below=10_001)
    forgetting_baseline: str | None = param(None, "JSON file caching the forgetting probe of the starting model: read "
                                            "if it exists, else written (a comparison probes each base once).",
                                            runtime=True, cli=False)
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        check_fields(self)
        methods = sft_methods()
        if self.method not in methods:
            raise AdaptlabError(f"--method must be one of {', '.join(methods)}, not {self.method!r}")
        if self.lr is None:
            self.lr = default_lr("sft", self.method)
        self.check_training()
        if self.method == "lora":
            self.check_lora_targets(self.model)
        if self.packing and self.method in PROMPT_LEARNING:
            raise AdaptlabError(f"--packing cannot be used with {self.method}: virtual tokens would sit only before the first packed example")
        if self.forgetting_text is not None and not Path(self.forgetting_text).is_file():
            raise AdaptlabError(f"--forgetting-text '{self.forgetting_text}' does not exist; pass a .txt or .jsonl file")

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    # -- training ------------------------------------------------------------------------------------------
    def fit(self, splits, workdir: Path) -> "SFTJob":
        from adaptlab.models.causal import is_artifact, load_causal_lm
        from adaptlab.models.loading import pad_id
        from adaptlab.sft.template import ensure_chat_template
        from adaptlab.training.data import BatchDataModule, CausalCollator, CausalDataset, causal_rows
        from adaptlab.training.engine import fit_module
        from adaptlab.training.memory import warn_if_pass_too_large

        if self.method in PROMPT_LEARNING and is_artifact(self.model):
            raise AdaptlabError(f"{self.method} cannot start from an artifact (its virtual tokens cannot be merged into it); "
                                "start from a model, or use lora, last-k or full")
        self.splits_ = splits
        lm, self.tokenizer_, self.ref_ = load_causal_lm(self.model, "cpu")
        if splits.kind == "chat":
            ensure_chat_template(self.tokenizer_)
        self.kept_ = {name: self._encode(getattr(splits, name)) for name in ("train", "val", "test")}
        for name in ("train", "val"):
            if not self.kept_[name]:
                raise AdaptlabError(f"no {name} example has a token to learn from after truncation to {self.max_length}; raise --max-length")
        self.model_ = self._adapt(lm)
        if self.gradient_checkpointing:
            self.model_.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        block = self.max_length if self._packing() else None
        train, val = (CausalDataset(causal_rows(self.kept_[name], block)) for name in ("train", "val"))
        warn_if_pass_too_large(self, lm.config, block or max(len(ids) for ids, _ in self.kept_["train"]))
        data = BatchDataModule(train, val, CausalCollator(pad_id(self.tokenizer_)), self.batch_size, self.seed, self.group_by_length)
        self.report_ = fit_module(self.model_, data, self, workdir, self.runtime, objective="causal-lm")
        self.model_.eval()
        if self.gradient_checkpointing:
            self.model_.gradient_checkpointing_disable()
        return self

    def _packing(self) -> bool:
        if self.method in PROMPT_LEARNING:  # the virtual tokens would precede only the first example of a block
            return False
        return self.splits_.kind == "text" if self.packing is None else self.packing

    def _encode(self, part) -> list[tuple[list[int], list[int]]]:
        from adaptlab.sft.template import encode_conversation, encode_text

        if part.kind == "text":
            return [chunk for text in part.records for chunk in encode_text(self.tokenizer_, text, self.max_length) if len(chunk[0]) > 1]
        encoded = (encode_conversation(self.tokenizer_, messages, self.max_length) for messages in part.records)
        return [e for e in encoded if e is not None]

    def _adapt(self, lm):
        """The network to train: the method's PEFT wrapper, or the model with the right weights unfrozen; a prefix
        starts from real tokens' keys and values unless ``prefix_init`` is random."""
        from adaptlab.adapt.peft_factory import init_prefix_from_ids

        from adaptlab.adapt import PEFT_METHODS

        options = PEFT_METHODS[self.method].options() if self.method in PEFT_METHODS else self
        model = apply(lm, self.method, options, "sft", model_name=f"model '{self.model}'", tokenizer_path=self.ref_.path)
        if self.method == "prefix-tuning" and (self.init_text or self.prefix_init == "data"):
            ids = (self.tokenizer_(self.init_text, add_special_tokens=False)["input_ids"] if self.init_text
                   else self.kept_["train"][0][0])
            init_prefix_from_ids(model, ids)
        return model

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, splits) -> dict:
        from adaptlab.models.loading import pad_id
        from adaptlab.sft.evaluate import forgetting_deltas, sequence_loss

        self.model_.to(self.runtime.torch_device)
        pad = pad_id(self.tokenizer_)
        # LoRA weights folded into the base for evaluation (3x faster decoding on a CPU than adapters applied
        # at every layer; the same function in fp32), and unfolded again before the artifact is saved.
        merged = self.method == "lora"
        if merged:
            self.model_.merge_adapter()
        # Every pass (losses, replies, both forgetting probes) in the precision training ran in: --precision bf16
        # is bf16 autocast here too; fp32 (the default on a CPU) is no context at all.
        with self.runtime.autocast():
            try:
                metrics: dict[str, Any] = {"val": sequence_loss(self.model_, self.kept_["val"], pad)}
                test = sequence_loss(self.model_, self.kept_["test"], pad) if self.kept_["test"] else {}
                if splits.kind == "chat":
                    test.update(self._replies(splits.test.records))
                metrics["test"] = test
                after = self._probe(before=False) if self.forgetting else None
            finally:
                if merged:
                    self.model_.unmerge_adapter()
            if after is not None:
                metrics["forgetting"] = forgetting_deltas(self._probe(before=True), after)
        return metrics

    def _replies(self, records: list) -> dict:
        from adaptlab.sft.evaluate import generate_replies, reply_metrics
        from adaptlab.sft.template import encode_prompt, prompt_and_reference

        asked = [prompt_and_reference(messages) for messages in records[: self.generate_limit]]
        prompts = [encode_prompt(self.tokenizer_, messages) for messages, _ in asked]
        replies = generate_replies(self.model_, self.tokenizer_, prompts, self.max_new_tokens)
        self.rate_ = len(prompts) / max(replies["seconds"], 1e-9)
        scores = reply_metrics(replies, [reference for _, reference in asked])
        self.per_example_ = scores.pop("per_example")  # for paired comparisons (compare); not in the manifest
        self.samples_ = [{"prompt": messages[-1]["content"], "reference": reference, "output": output}
                         for (messages, reference), output in list(zip(asked, replies["texts"]))[:SAMPLES]]
        return scores

    def _probe(self, before: bool) -> dict:
        """The forgetting probe on the tuned model, or (``before``) on the model it started from: PEFT adapters
        switched off, or for full and last-k a fresh copy of the starting weights (read from
        ``forgetting_baseline`` when a comparison already probed it)."""
        from adaptlab.sft.evaluate import cached_probe

        if before:
            return cached_probe(Path(self.forgetting_baseline) if self.forgetting_baseline else None, self._probe_start)
        return self._run_probe(self.model_)

    def _probe_start(self) -> dict:
        from peft import PeftModel

        from adaptlab.models.causal import load_causal_lm

        if isinstance(self.model_, PeftModel):
            with self.model_.disable_adapter():
                return self._run_probe(self.model_)
        return self._run_probe(load_causal_lm(self.model, str(self.runtime.torch_device))[0])

    def _run_probe(self, model) -> dict:
        from adaptlab.sft.evaluate import forgetting_probe, forgetting_sample

        if getattr(self, "general_", None) is None:
            self.general_, self.rt_ = forgetting_sample(self.forgetting_sample, self.forgetting_text)
        return forgetting_probe(model, self.tokenizer_, self.general_, self.rt_)

    def inference_rate(self, splits) -> float | None:
        return getattr(self, "rate_", None)

    # -- what the manifest records -------------------------------------------------------------------------
    def cost(self) -> dict:
        return {"trainable_params": sum(p.numel() for p in self.model_.parameters() if p.requires_grad),
                "total_params": sum(p.numel() for p in self.model_.parameters())}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def get_params(self) -> dict:
        return recorded_params(self)

    def training_report(self) -> dict:
        return dataclasses.asdict(self.report_)

    def details(self) -> dict:
        sizes = {name: len(getattr(self.splits_, name)) for name in ("train", "val", "test")}
        return {
            "data_kind": self.splits_.kind, "chat_template": self.tokenizer_.chat_template,
            "packing": self._packing(), "examples_cut_or_dropped": {n: sizes[n] - len(self.kept_[n]) for n in sizes}
            if self.splits_.kind == "chat" else None,
            "samples": getattr(self, "samples_", []),
        }

    def save(self, directory: Path) -> None:
        from adaptlab.models.causal import save_generator

        save_generator(self.model_, self.tokenizer_, directory, self.base_model())


def train_sft(splits, output: str | Path, *, overwrite: bool = False, **params: Any):
    """Fine-tune on ``splits`` (``adaptlab.load_generation_splits``) and write the artifact; returns ``JobResult``.

    >>> splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=512, test_size=64)
    >>> adaptlab.train_sft(splits, "runs/sft-lora", method="lora", epochs=1).manifest["metrics"]["test"]["rouge_l"]
    """
    from adaptlab.data.generation import GenerationSplits

    if not isinstance(splits, GenerationSplits):
        raise AdaptlabError(f"train_sft needs generation splits (adaptlab.load_generation_splits), not "
                            f"{type(splits).__name__}; classification splits train with adaptlab.train")
    if not isinstance(output, (str, Path)) or not str(output).strip():
        raise AdaptlabError(f"train_sft needs an output path for the artifact, not {output!r}")
    check_names(SFTJob, params, "train_sft", "SFT")
    params.setdefault("seed", splits.seed)
    return fit_sft(SFTJob(**params), splits, output, overwrite=overwrite)


def fit_sft(job: SFTJob, splits, output: str | Path, *, overwrite: bool = False):
    """Run a constructed job (the comparison keeps it for its per-example scores); returns ``JobResult``."""
    return run_job(job, splits, output, seed=job.seed, labels=[], data_description=splits.describe(),
                   train_examples=len(splits.train), resume=job.resume, overwrite=overwrite)
