"""Strategy "setfit": SetFit (Tunstall et al. 2022) with the ``setfit`` package, its head stored the safe way.

Two phases. First the sentence encoder (the *body*) is fine-tuned contrastively: ``setfit`` generates pairs of
training texts, positive (same label) and negative (different labels), ``num_iterations`` of each per text, and
trains the body with its cosine-similarity loss so that texts of one class embed close together. This phase is
``setfit.Trainer.train_embeddings`` on the training split alone (adaptlab re-implements neither the pairs nor the
loss). Then the head: the tuned body embeds the texts and logistic regression learns the task, exactly as the
``features`` strategy does (its code: a scaler and logistic regression, ``C`` chosen on the validation split unless
given, the fitted head written with skops and read back trusting only the types ``features`` trusts).

Nothing is pickled. ``SetFitModel.save_pretrained`` would write the head as ``model_head.pkl``, so it is not used:
the artifact holds ``body/``, the tuned body as a sentence-transformers directory (safetensors weights, tokenizer,
pooling; ``SentenceTransformer("ARTIFACT/body")`` loads it, and ``--model ARTIFACT/body`` takes it as a base model),
and ``classifier.skops``, the head. (Not ``model/``: an artifact's ``model/`` is a whole classifier, so other commands
and the model card would take the body for one.) Encoders only: a causal LM is refused before any weights load.

The contrastive phase runs where transformers' ``Trainer`` puts it (the GPU when there is one); the head's
embeddings and predictions run on ``--device``, in fp32.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.methods.features import FeatureClassifier
from adaptlab.models.loading import count_checkpoint_parameters, loading, max_positions, model_kind, resolve_model
from adaptlab.models.registry import PACKAGED_MODELS
from adaptlab.params import param
from adaptlab.progress import stderr

BODY_DIR = "body"  # the tuned body, inside the artifact (and, while training, the work directory)
MAX_DEFAULT_LENGTH = 512
#: sentence-transformers pooling modes the head's embedder reproduces (adaptlab's pooling names)
_POOLINGS = {"mean": "mean", "cls": "cls", "lasttoken": "last"}


@dataclass(kw_only=True, eq=False)
class _TunedBodyHead(FeatureClassifier):
    """The ``features`` strategy on the tuned body: the same logistic regression, C choice, skops file and checks;
    the embeddings are unit length when the body ends with a normalisation, as SetFit's head sees them."""

    normalize: bool = param(False, "Unit-length embeddings.", cli=False)

    def _embedder(self):
        embedder = super()._embedder()
        embedder.normalize = self.normalize
        return embedder


@dataclass(kw_only=True, eq=False)
class SetFitClassifier(Strategy):
    name = "setfit"
    description = ("SetFit (setfit package): contrastive tuning of the sentence encoder on generated pairs, then "
                   "logistic regression on the tuned embeddings. Encoders only.")

    model: str = param("minilm", "Sentence encoder: minilm, a Hub id or a local directory (encoders only).")
    num_iterations: int = param(20, "Positive and negative pairs generated per training text (setfit's num_iterations).",
                                minimum=1, maximum=100_000)
    epochs: int = param(1, "Epochs of contrastive training of the body over the generated pairs.", minimum=1, maximum=10_000)
    batch_size: int = param(16, "Pairs per contrastive training step (and texts per embedding batch).", minimum=1, below=2**31)
    lr: float = param(2e-5, "Learning rate of the body's contrastive training (setfit's default).", above=0, maximum=10)
    max_length: int | None = param(None, "Truncate texts to this many tokens (default: the encoder's sentence length, at "
                                   "most 512 and its positions).", minimum=1, maximum=100_000)
    C: float | None = param(None, "Logistic regression C; chosen on the validation split if omitted.", above=0, flag="--C")
    seed: int = param(0, "Seed of the pair sampling, the training order and the head.", minimum=0, below=2**32)

    def check(self) -> None:
        # a packaged decoder is refused now (no file is read); any other model's kind is read in fit, before its weights
        spec = PACKAGED_MODELS.get(self.model)
        if spec is not None and spec.kind == "decoder":
            raise AdaptlabError(_not_an_encoder(self.model))

    # -- training -----------------------------------------------------------------------------------------
    def fit(self, splits, workdir: Path) -> "SetFitClassifier":
        ref = resolve_model(self.model)
        if model_kind(ref) == "decoder":  # reads config.json only
            raise AdaptlabError(_not_an_encoder(self.model))
        self.ref_ = ref
        self.label_names = splits.label_names
        body_dir = Path(workdir) / BODY_DIR
        self.training_ = self._train_body(ref, splits, body_dir, Path(workdir) / "setfit")
        # the head is fitted on embeddings of the body as saved (the files the artifact holds), so a reloaded
        # artifact predicts exactly what was evaluated
        self.head_ = _TunedBodyHead(**self._head_settings(str(body_dir)), cache=False, device=self.device,
                                    progress=self.progress)
        self.head_.fit(splits, workdir)
        self.body_dir_ = body_dir
        return self

    def _train_body(self, ref, splits, body_dir: Path, output_dir: Path) -> dict:
        import setfit
        from transformers import PrinterCallback, ProgressCallback

        from adaptlab.runtime import Runtime

        setfit.logging.set_verbosity_warning()  # importing setfit turns its info logs on ("model_head.pkl not found...")
        device = Runtime(self.device).torch_device
        with loading(ref):
            model = setfit.SetFitModel.from_pretrained(ref.path, device=str(device))
        body = model.model_body
        self.pooling_, self.normalize_ = _pooling_of(body, self.model)
        self.max_length_ = self._resolve_max_length(body)
        body.max_seq_length = self.max_length_
        args = setfit.TrainingArguments(
            output_dir=str(output_dir), batch_size=self.batch_size, num_epochs=self.epochs,
            num_iterations=self.num_iterations, body_learning_rate=self.lr, max_length=self.max_length_, seed=self.seed,
            show_progress_bar=self.progress, report_to="none", save_strategy="no",
            logging_strategy="steps" if self.progress else "no")
        trainer = setfit.Trainer(model=model, args=args)
        trainer.st_trainer.args.dataloader_pin_memory = device.type == "cuda"
        if not self.progress:  # no bar, and no log lines in its place
            for callback in (ProgressCallback, PrinterCallback):
                trainer.st_trainer.remove_callback(callback)
        texts, labels = list(splits.train.texts), [int(y) for y in splits.train.labels]
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: progress, not the command's output
            trainer.train_embeddings(texts, labels)  # the training split only: no eval set is given
        state = trainer.st_trainer.state
        body.save(str(body_dir), create_model_card=False, safe_serialization=True)
        pairs = len(trainer.st_trainer.train_dataset)
        if self.progress:
            stderr.print(f"setfit: tuned the body on {pairs} generated pairs in {state.global_step} steps")
        return {"pairs": pairs, "steps": int(state.global_step),
                "train_loss": next((row["train_loss"] for row in reversed(state.log_history) if "train_loss" in row), None)}

    def _resolve_max_length(self, body) -> int:
        """The user's --max-length, or the encoder's sentence length (what SetFit uses), within its positions and 512."""
        transformer = body[0]
        limit = max_positions(getattr(transformer, "auto_model", None)) or MAX_DEFAULT_LENGTH
        if self.max_length is not None:
            if self.max_length > limit:
                raise AdaptlabError(f"--max-length {self.max_length} exceeds the {limit} positions model '{self.model}' supports")
            return self.max_length
        return int(min(body.max_seq_length or MAX_DEFAULT_LENGTH, limit, MAX_DEFAULT_LENGTH))

    def _head_settings(self, body: str) -> dict:
        return {"model": body, "pooling": self.pooling_, "normalize": self.normalize_, "classifier": "logreg", "C": self.C,
                "batch_size": self.batch_size, "max_length": self.max_length_, "precision": "fp32", "seed": self.seed}

    # -- prediction ---------------------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if getattr(self, "head_", None) is None:
            raise RuntimeError("fit() or load() the strategy before predicting")
        return self.head_.predict_proba(texts)

    def uncached(self):
        return self.head_.uncached()

    def cost(self) -> dict:
        # every weight of the body was trained, and the head
        body = count_checkpoint_parameters(str(self.body_dir_))
        head = self.head_._head_params()
        return {"trainable_params": body + head, "total_params": body + head}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def details(self) -> dict:
        embedding = {**{k: v for k, v in self.head_.embedder_.settings().items() if k not in ("model", "model_fingerprint")},
                     "model": f"{BODY_DIR}/ (the tuned body, in this artifact)"}
        return {"setfit": {**self.training_, "loss": "CosineSimilarityLoss", "setfit_version": _version("setfit")},
                "embedding": embedding, "selection": self.head_.selection_}

    # -- files --------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        shutil.copytree(self.body_dir_, directory / BODY_DIR)
        self.head_.save(directory)  # classifier.skops

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "SetFitClassifier":
        strategy = cls.rebuild(manifest, runtime)
        details = manifest["details"]
        embedding = details["embedding"]
        strategy.pooling_, strategy.normalize_ = embedding["pooling"], embedding["normalize"]
        strategy.max_length_ = embedding["max_length"]
        strategy.body_dir_ = Path(directory) / BODY_DIR
        strategy.training_ = details.get("setfit", {})
        head_manifest = {"params": strategy._head_settings(str(strategy.body_dir_)), "labels": manifest["labels"],
                         "details": {"embedding": {"precision": embedding["precision"]},
                                     "selection": details.get("selection", {})}}
        strategy.head_ = _TunedBodyHead.load(Path(directory), head_manifest, device=strategy.device,
                                             progress=strategy.progress, cache=False)
        return strategy


def _not_an_encoder(model: str) -> str:
    return f"setfit tunes a sentence encoder; model '{model}' is a causal (decoder) language model: use an encoder such as minilm"


def _pooling_of(body, model: str) -> tuple[str, bool]:
    """(adaptlab pooling, normalised) of a sentence-transformers body: a transformer, its pooling, optionally a
    normalisation. Other shapes (a Dense projection...) are refused: the head's embedder could not reproduce them."""
    modules = list(body)
    kinds = [type(m).__name__ for m in modules]
    shape_ok = kinds[:2] == ["Transformer", "Pooling"] and kinds[2:] in ([], ["Normalize"])
    mode = None
    if shape_ok:
        pooling = modules[1]
        mode = getattr(pooling, "pooling_mode", None)
        if mode is None and callable(getattr(pooling, "get_pooling_mode_str", None)):  # sentence-transformers < 5
            mode = pooling.get_pooling_mode_str()
    if mode not in _POOLINGS:
        raise AdaptlabError(f"setfit: model '{model}' is a sentence-transformers model of {' -> '.join(kinds)}"
                            f"{f' ({mode} pooling)' if mode else ''}; adaptlab's setfit takes a transformer with mean, "
                            "cls or last-token pooling and an optional normalisation")
    return _POOLINGS[mode], kinds[2:] == ["Normalize"]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
