"""Strategy "icl": in-context learning with a causal LM and a hand-written (hard) prompt. No weights change.

"Training" chooses the demonstrations: ``k`` examples from the training split only (never test), picked at
random, class-balanced, or per query as the nearest neighbours by embedding similarity (``knn``). Because
k-shot accuracy swings with which examples are shown and in which order, ``draws`` samples are tried; the
one with the best validation accuracy is kept, and the runner reports test accuracy over all draws as
mean and standard deviation. Prediction scores each label word's likelihood (``mode="score"``); the
``generate`` mode generates text and parses the first label word, for comparison. Contextual calibration
(Zhao et al., 2021) divides the label probabilities by those the prompt gives to content-free inputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.data import Splits
from adaptlab.embeddings import Embedder
from adaptlab.errors import AdaptlabError
from adaptlab.generation import Generator, SamplingOptions, load_causal_lm
from adaptlab.methods.base import Strategy
from adaptlab.prompting.scoring import LabelScorer
from adaptlab.prompting.template import Demonstration, PromptTemplate, default_example, is_sentiment

SELECTIONS = ("random", "balanced", "knn")
MODES = ("score", "generate")
CONTENT_FREE = ("N/A", "", "[MASK]")


def parse_label_words(value: str | dict | None, label_names: list[str]) -> list[str]:
    """``"negative=terrible,positive=great"`` or a mapping -> one word per label (default: the label names)."""
    if value is None:
        return list(label_names)
    mapping = value if isinstance(value, dict) else dict(
        part.split("=", 1) for part in (p.strip() for p in value.split(",")) if part and "=" in part
    )
    if not isinstance(value, dict) and any(p.strip() and "=" not in p for p in value.split(",")):
        raise AdaptlabError(f"--label-words must look like 'label=word,label=word', got {value!r}")
    unknown = set(mapping) - set(label_names)
    if unknown:
        raise AdaptlabError(f"--label-words names unknown label(s) {', '.join(sorted(unknown))} (labels: {', '.join(label_names)})")
    words = [str(mapping.get(name, name)).strip() for name in label_names]
    if any(not w for w in words):
        raise AdaptlabError("--label-words: every label needs a non-empty word")
    return words


class InContextClassifier(Strategy):
    name = "icl"
    runtime_params = ("device", "progress", "cache")

    def __init__(
        self,
        model: str = "smollm2-135m",
        k: int = 4,
        selection: str = "balanced",
        template: str | None = None,
        instruction: str | None = None,
        label_words: str | dict | None = None,
        chat: str = "auto",
        calibrate: bool = False,
        normalize_length: bool = False,
        draws: int = 5,
        mode: str = "score",
        batch_size: int = 16,
        embedding_model: str = "minilm",
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        if selection not in SELECTIONS:
            raise AdaptlabError(f"--selection must be one of {', '.join(SELECTIONS)}, not '{selection}'")
        if mode not in MODES:
            raise AdaptlabError(f"--mode must be score or generate, not '{mode}'")
        if k < 0 or draws < 1 or batch_size < 1:
            raise AdaptlabError("--k must be >= 0, --draws and --batch-size >= 1")
        self.model, self.k, self.selection, self.template, self.instruction = model, k, selection, template, instruction
        self.label_words, self.chat, self.calibrate, self.normalize_length = label_words, chat, calibrate, normalize_length
        self.draws, self.mode, self.batch_size, self.embedding_model = (1 if k == 0 else draws), mode, batch_size, embedding_model
        self.seed, self.device, self.progress = seed, device, progress
        self.lm, self.tokenizer, self.ref = load_causal_lm(model, device)
        self.scorer = LabelScorer(self.lm, self.tokenizer, batch_size=batch_size, normalize_length=normalize_length, progress=progress)
        self.variants_: list[dict] = []  # one per draw: demonstrations (or the kNN pool) and calibration
        self.chosen_ = 0

    # -- set-up -------------------------------------------------------------------------------------------
    def _prompt(self, label_names: list[str]) -> PromptTemplate:
        words = self.words_
        example = self.template or default_example(label_names)
        what = "the sentiment of the review" if is_sentiment(label_names) and not self.template else "the text"
        instruction = self.instruction if self.instruction is not None else f"Classify {what} as one of: {', '.join(words)}. Answer with one word."
        return PromptTemplate(instruction=instruction, example=example, chat=self.chat)

    def _draw(self, splits: Splits, draw: int) -> list[Demonstration]:
        rng = np.random.default_rng([self.seed, draw])
        labels, n_classes = splits.train.labels, len(splits.label_names)
        if self.selection == "random":
            if self.k > len(labels):
                raise AdaptlabError(f"--k {self.k} is larger than the {len(labels)} training examples")
            chosen = rng.choice(len(labels), size=self.k, replace=False)
        else:  # balanced: k/n_classes of each class (the remainder to random classes), shuffled
            per_class = np.full(n_classes, self.k // n_classes)
            per_class[rng.choice(n_classes, size=self.k % n_classes, replace=False)] += 1
            counts = np.bincount(labels, minlength=n_classes)
            for name, want, have in zip(splits.label_names, per_class, counts):
                if want > have:
                    raise AdaptlabError(f"--k {self.k} needs {want} '{name}' demonstrations but the training split has {have}")
            chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in enumerate(per_class)])
            chosen = rng.permutation(chosen)
        return [Demonstration(splits.train.texts[i], int(labels[i])) for i in chosen]

    def fit(self, splits: Splits, output: Path | None = None) -> "InContextClassifier":
        self.label_names = splits.label_names
        self.words_ = parse_label_words(self.label_words, self.label_names)
        self.prompt_ = self._prompt(self.label_names)
        self.continuations_ = self.prompt_.label_continuations(self.tokenizer, self.words_)
        if self.selection == "knn":
            if self.k > len(splits.train):
                raise AdaptlabError(f"--k {self.k} is larger than the {len(splits.train)} training examples")
            self.pool_ = [Demonstration(t, int(l)) for t, l in zip(splits.train.texts, splits.train.labels)]
            self.pool_vectors_ = self._embedder().embed([d.text for d in self.pool_])
            self.variants_ = [{"demos": None}]
        else:
            self.variants_ = [{"demos": self._draw(splits, d)} for d in range(self.draws)]
        # fail before any scoring if the longest prompt cannot fit the model's context
        longest = max(splits.train.texts + splits.val.texts, key=len)
        for variant in self.variants_:
            demos = variant["demos"] if variant["demos"] is not None else self.pool_[: self.k]
            prefix, query, _ = self.prompt_.render(self.tokenizer, demos, self.words_, longest)
            self.scorer.check_length(prefix, query, self.continuations_)
        scores = []
        for index in range(len(self.variants_)):
            self.use_variant(index)
            if self.calibrate:
                self.variants_[index]["calibration"] = self._content_free_probabilities().tolist()
            scores.append(float((self.predict_proba(splits.val.texts).argmax(1) == splits.val.labels).mean()))
        self.chosen_ = int(np.argmax(scores))
        self.val_by_draw_ = scores
        self.use_variant(self.chosen_)
        return self

    def _embedder(self) -> Embedder:
        return Embedder(self.embedding_model, "mean", normalize=True, progress=False, device=self.device)

    # -- variants (demonstration draws) -------------------------------------------------------------------
    def variant_count(self) -> int:
        return len(self.variants_)

    def use_variant(self, index: int) -> None:
        self.current_ = index

    # -- prediction ---------------------------------------------------------------------------------------
    def _demos_for(self, texts: list[str]) -> list[list[Demonstration]]:
        demos = self.variants_[self.current_]["demos"]
        if demos is not None:
            return [demos] * len(texts)
        queries = self._embedder().embed(texts)
        nearest = np.argsort(-(queries @ self.pool_vectors_.T), axis=1)[:, : self.k]
        return [[self.pool_[j] for j in row[::-1]] for row in nearest]  # most similar last, next to the query

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        items = [self.prompt_.render(self.tokenizer, d, self.words_, t)[:2] for d, t in zip(self._demos_for(texts), texts)]
        if self.mode == "generate":
            return self._generate_and_parse(items)
        scores = self.scorer.score(items, self.continuations_)
        proba = np.exp(scores - scores.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        calibration = self.variants_[self.current_].get("calibration") if self.calibrate else None
        if calibration is not None:
            proba = proba / np.asarray(calibration)
            proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def _content_free_probabilities(self) -> np.ndarray:
        saved, self.calibrate = self.calibrate, False
        try:
            return self.predict_proba(list(CONTENT_FREE)).mean(axis=0)
        finally:
            self.calibrate = saved

    def _generate_and_parse(self, items: list[tuple[str, str]]) -> np.ndarray:
        """Generate a few tokens greedily and take the first label word that appears (uniform if none)."""
        generator = Generator.from_loaded(self.lm, self.tokenizer, self.ref)
        options = SamplingOptions(max_new_tokens=5)
        proba = np.full((len(items), len(self.words_)), 1 / len(self.words_))
        for row, (prefix, query) in enumerate(items):
            text = generator.generate(prefix + query, options).lower()
            found = [(text.find(w.lower()), i) for i, w in enumerate(self.words_) if w.lower() in text]
            if found:
                proba[row] = 0
                proba[row, min(found)[1]] = 1
        return proba

    # -- artifact -----------------------------------------------------------------------------------------
    def cost(self) -> dict:
        return {"trainable_params": 0, "total_params": sum(p.numel() for p in self.lm.parameters())}

    def base_model(self) -> dict:
        return {"name": self.model, "fingerprint": self.ref.fingerprint()}

    def extra_manifest(self) -> dict:
        return {"prompting": {"chosen_draw": self.chosen_, "val_accuracy_by_draw": self.val_by_draw_,
                              "label_words": self.words_, "chat": self.prompt_.chat_mode(self.tokenizer)}}

    def save(self, directory: Path) -> None:
        variant = self.variants_[self.chosen_]
        demos = variant["demos"] if variant["demos"] is not None else self.pool_
        payload = {
            "instruction": self.prompt_.instruction, "example": self.prompt_.example, "chat": self.prompt_.chat,
            "label_words": self.words_, "calibration": variant.get("calibration"),
            "demonstrations": [{"text": d.text, "label": d.label} for d in demos],
        }
        (directory / "prompt.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if variant["demos"] is None:  # kNN: the pool's embeddings, so reloading needs no re-embedding
            from safetensors.numpy import save_file

            save_file({"pool": self.pool_vectors_}, directory / "knn_pool.safetensors")

    @classmethod
    def load(cls, directory: Path, manifest: dict, **runtime: Any) -> "InContextClassifier":
        params = dict(manifest["params"])
        strategy = cls(**params, **{k: v for k, v in runtime.items() if k in ("device", "progress")})
        payload = json.loads((directory / "prompt.json").read_text(encoding="utf-8"))
        strategy.label_names = manifest["labels"]
        strategy.words_ = payload["label_words"]
        strategy.prompt_ = PromptTemplate(payload["instruction"], payload["example"], chat=payload["chat"])
        strategy.continuations_ = strategy.prompt_.label_continuations(strategy.tokenizer, strategy.words_)
        demos = [Demonstration(d["text"], d["label"]) for d in payload["demonstrations"]]
        if strategy.selection == "knn":
            from safetensors.numpy import load_file

            strategy.pool_, strategy.pool_vectors_ = demos, load_file(directory / "knn_pool.safetensors")["pool"]
            strategy.variants_ = [{"demos": None, "calibration": payload["calibration"]}]
        else:
            strategy.variants_ = [{"demos": demos, "calibration": payload["calibration"]}]
        strategy.chosen_ = 0
        strategy.use_variant(0)
        strategy.val_by_draw_ = manifest.get("prompting", {}).get("val_accuracy_by_draw", [])
        return strategy
