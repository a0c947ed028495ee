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

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.data import Splits
from adaptlab.embeddings import Embedder
from adaptlab.errors import AdaptlabError
from adaptlab.methods.base import Strategy
from adaptlab.models.causal import load_causal_lm
from adaptlab.params import param
from adaptlab.prompting.template import Demonstration, PromptOptions, PromptTemplate, default_example, is_sentiment

SELECTIONS = ("random", "balanced", "knn")
MODES = ("score", "generate")
CONTENT_FREE = ("N/A", "", "[MASK]")


def parse_label_words(value: str | dict | None, label_names: list[str] | None) -> list[str]:
    """``"negative=terrible,positive=great"`` or a mapping -> one word per label (default: the label names).
    ``label_names=None`` checks the form only: what a strategy does when constructed, before the data are read."""
    if value is None:
        return list(label_names or [])
    mapping = value if isinstance(value, dict) else dict(
        part.split("=", 1) for part in (p.strip() for p in value.split(",")) if part and "=" in part
    )
    if not isinstance(value, dict) and any(p.strip() and "=" not in p for p in value.split(",")):
        raise AdaptlabError(f"--label-words must look like 'label=word,label=word', got {value!r}")
    if label_names is None:
        return []
    unknown = set(mapping) - set(label_names)
    if unknown:
        raise AdaptlabError(f"--label-words names unknown label(s) {', '.join(sorted(unknown))} (labels: {', '.join(label_names)})")
    words = [str(mapping.get(name, name)).strip() for name in label_names]
    if any(not w for w in words):
        raise AdaptlabError("--label-words: every label needs a non-empty word")
    return words


@dataclass(kw_only=True, eq=False)
class InContextClassifier(PromptOptions, Strategy):
    name = "icl"
    needs_decoder = True
    description = "In-context learning: a causal LM, a hand-written prompt and k demonstrations; labels scored by likelihood."

    model: str = param("smollm2-135m", "Causal LM: smollm2-135m, a Hub id or a local directory.")
    k: int = param(4, "Demonstrations per prompt (0 = zero-shot).", minimum=0, maximum=1000)
    selection: str = param("balanced", "How demonstrations are picked from the training split.", choices=SELECTIONS)
    calibrate: bool = param(False, "Contextual calibration against content-free inputs.")
    draws: int = param(5, "Demonstration samples tried; the best on validation is kept, test reported over all.", minimum=1, maximum=100)
    mode: str = param("score", "score (label likelihoods) or generate (generate text, parse the label).", choices=MODES)
    batch_size: int = param(16, "Prompt x label pairs per forward pass.", minimum=1, below=2**31)
    embedding_model: str = param("minilm", "Embedder for --selection knn.")
    seed: int = param(0, "Seed of the demonstration draws.", minimum=0, below=2**32)
    cache: bool = param(True, "Use the on-disk embedding cache (kNN selection).", runtime=True, cli=False)

    def check(self) -> None:
        self.check_template()
        parse_label_words(self.label_words, None)
        if self.k == 0:
            self.draws = 1  # zero-shot has nothing to draw

    def _load_model(self) -> None:
        from adaptlab.prompting.scoring import LabelScorer

        self.lm_, self.tokenizer_, self.ref_ = load_causal_lm(self.model, self.device)
        self.scorer_ = LabelScorer(self.lm_, self.tokenizer_, batch_size=self.batch_size,
                                   normalize_length=self.normalize_length, progress=self.progress)
        self.chosen_ = self.current_ = 0

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

    def fit(self, splits: Splits, workdir: Path) -> "InContextClassifier":
        self.label_names = splits.label_names
        self._load_model()
        self.words_ = parse_label_words(self.label_words, self.label_names)
        self.prompt_ = self._prompt(self.label_names)
        self.continuations_ = self.prompt_.label_continuations(self.tokenizer_, self.words_)
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
            prefix, query, _ = self.prompt_.render(self.tokenizer_, demos, self.words_, longest)
            self.scorer_.check_length(prefix, query, self.continuations_)
        scores, self.val_scored_ = [], {}
        for index in range(len(self.variants_)):
            self.use_variant(index)
            if self.calibrate:
                self.variants_[index]["calibration"] = self._content_free_probabilities().tolist()
            proba = self.predict_proba(splits.val.texts)
            self.val_scored_[index] = (tuple(splits.val.texts), proba)  # the job's validation metrics reuse it
            scores.append(float((proba.argmax(1) == splits.val.labels).mean()))
        self.chosen_ = int(np.argmax(scores))
        self.val_by_draw_ = scores
        self.use_variant(self.chosen_)
        return self

    def _embedder(self) -> Embedder:
        """One embedder for the pool and every query (a served kNN artifact must not reload it per request)."""
        if getattr(self, "embedder_", None) is None:
            self.embedder_ = Embedder(self.embedding_model, "mean", normalize=True, progress=False, device=self.device,
                                      cache=self.cache)
        return self.embedder_

    # -- variants (demonstration draws) -------------------------------------------------------------------
    def variant_count(self) -> int:
        return len(self.variants_)

    def use_variant(self, index: int) -> None:
        self.current_ = index

    @contextlib.contextmanager
    def uncached(self):
        """Inference timings score every text again, the validation split included."""
        self.recompute_ = True
        try:
            yield
        finally:
            self.recompute_ = False

    @property
    def chosen_variant(self) -> int:
        return self.chosen_

    def causal_lm(self):
        return self.lm_, self.tokenizer_, self.ref_

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
        scored = getattr(self, "val_scored_", {}).get(self.current_)
        if scored is not None and not getattr(self, "recompute_", False) and scored[0] == tuple(texts):
            return scored[1].copy()  # the validation split, scored while choosing the draw: an LM pass each is minutes
        items = [self.prompt_.render(self.tokenizer_, d, self.words_, t)[:2] for d, t in zip(self._demos_for(texts), texts)]
        if self.mode == "generate":
            return self._generate_and_parse(items)
        scores = self.scorer_.score(items, self.continuations_)
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
        from adaptlab.generation import Generator, SamplingOptions

        generator = Generator.from_loaded(self.lm_, self.tokenizer_, self.ref_)
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
        return {"trainable_params": 0, "total_params": sum(p.numel() for p in self.lm_.parameters())}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def details(self) -> dict:
        return {"prompting": {"chosen_draw": self.chosen_, "val_accuracy_by_draw": self.val_by_draw_,
                              "label_words": self.words_, "chat": self.prompt_.chat_mode(self.tokenizer_)}}

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
        strategy = cls.rebuild(manifest, runtime)
        strategy._load_model()
        payload = json.loads((directory / "prompt.json").read_text(encoding="utf-8"))
        strategy.words_ = payload["label_words"]
        strategy.prompt_ = PromptTemplate(payload["instruction"], payload["example"], chat=payload["chat"])
        strategy.continuations_ = strategy.prompt_.label_continuations(strategy.tokenizer_, strategy.words_)
        demos = [Demonstration(d["text"], d["label"]) for d in payload["demonstrations"]]
        if strategy.selection == "knn":
            from safetensors.numpy import load_file

            strategy.pool_, strategy.pool_vectors_ = demos, load_file(directory / "knn_pool.safetensors")["pool"]
            strategy.variants_ = [{"demos": None, "calibration": payload["calibration"]}]
        else:
            strategy.variants_ = [{"demos": demos, "calibration": payload["calibration"]}]
        strategy.val_by_draw_ = manifest["details"]["prompting"]["val_accuracy_by_draw"]
        return strategy
