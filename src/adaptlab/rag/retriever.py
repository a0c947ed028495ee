"""Adapt the retriever: fine-tune the embedding model on (question, passage) pairs, so that a store rebuilt with
it ranks the passages that answer a user's kind of question higher.

The objective is the one sentence-transformers calls ``MultipleNegativesRankingLoss`` (InfoNCE with in-batch
negatives): in a batch of B pairs, the B x B cosine similarities times a scale (20) are the logits of a B-way
classification whose right answer is each question's own passage. Written that way it trains on the same
Lightning engine as every classifier (resume, precision, checkpoints, best epoch by validation in-batch
accuracy) with no second training loop. One thing that loss does not do, and this one does: a passage that
appears twice in a batch (SQuAD has about five questions per paragraph) is not counted as its own negative.

The artifact's ``model/`` is a sentence-transformers directory (transformer, mean pooling, normalisation):
``SentenceTransformer("ARTIFACT/model")`` loads it, and ``rag index --model ARTIFACT`` builds a store with it.
The store records the artifact's content fingerprint, so querying it with another embedder is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptlab.adapt import apply, default_lr
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import run_job
from adaptlab.results import JobResult
from adaptlab.models.loading import resolve_model
from adaptlab.params import check_fields, check_names, param, recorded_params
from adaptlab.runtime import Runtime
from adaptlab.training.options import TrainingOptions

STRATEGY = "retriever"
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
#: written when the base model is a plain transformer: mean pooling, then unit length (what the stores expect)
DEFAULT_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


@dataclass(frozen=True)
class QueryPassage:
    question: str
    passage: str

    @property
    def key(self) -> str:
        return hashlib.sha256(self.passage.encode()).hexdigest()[:16]


@dataclass
class PairSplit:
    """Training, validation and test pairs; no passage is in two splits (the split is by passage)."""

    train: list[QueryPassage]
    val: list[QueryPassage]
    test: list[QueryPassage]
    source: str

    def describe(self) -> dict:
        digest = hashlib.sha256("\n".join(f"{p.question}\t{p.key}" for p in self.train).encode()).hexdigest()[:16]
        return {"source": self.source, "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "fingerprint": digest}


def read_pairs(path: str | Path) -> list[QueryPassage]:
    """A SQuAD-format JSON file (each question with its paragraph) or JSONL of ``{"question", "passage"}``
    (``adaptlab.schemas.PassagePair``)."""
    from adaptlab.data.files import read_jsonl
    from adaptlab.rag.evaluate import read_squad
    from adaptlab.schemas import PassagePair, parse  # loaded with the data, not at startup

    path = Path(path)
    if path.suffix.lower() == ".json":
        return [QueryPassage(qa.question, paragraph.context) for article in read_squad(path, "--pairs").data
                for paragraph in article.paragraphs for qa in paragraph.qas]
    source = f"--pairs '{path}'"
    pairs = []
    for number, value in read_jsonl(path, source):
        row = parse(PassagePair, value, f"{source} line {number}")
        pairs.append(QueryPassage(row.question, row.passage))
    return pairs


def split_pairs(pairs: list[QueryPassage], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                source: str = "") -> PairSplit:
    """Split by passage (seeded): a test question never shares its passage with a training question."""
    keys = sorted({p.key for p in pairs})
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    n_val, n_test = (max(1, round(len(keys) * f)) for f in (val_fraction, test_fraction))
    if len(keys) < n_val + n_test + 2:
        raise AdaptlabError(f"--pairs holds {len(keys)} distinct passages; give at least {n_val + n_test + 2}")
    role = {key: "val" for key in keys[:n_val]} | {key: "test" for key in keys[n_val:n_val + n_test]}
    parts = {"train": [], "val": [], "test": []}
    for pair in pairs:
        parts[role.get(pair.key, "train")].append(pair)
    return PairSplit(**parts, source=source)


@dataclass(kw_only=True, eq=False)
class RetrieverTuner(TrainingOptions):
    """Fine-tune an embedding model for retrieval; ``fit`` on a ``PairSplit``; a job for ``adaptlab.jobs.run_job``."""

    name = STRATEGY
    model: str = param("minilm", "Embedding model to adapt: minilm, a Hub id or a local directory.")
    lr: float = param(default_lr("retriever", "full"), "Peak learning rate.", above=0, maximum=10)
    epochs: int = param(2, "Training epochs.", minimum=1, maximum=10_000)
    batch_size: int = param(32, "(question, passage) pairs per step, at least 2: each question's negatives are the other "
                                "passages of its batch.", minimum=1, below=2**31)
    warmup_ratio: float = param(0.1, "Fraction of steps spent warming up the learning rate.", minimum=0, below=1)
    group_by_length: bool = param(False, "Batch pairs of similar length (more repeated passages per batch, fewer negatives).")
    scale: float = param(20.0, "Cosine similarities are multiplied by this before the softmax (sentence-transformers' default).", above=0, maximum=1000)
    query_length: int = param(64, "Tokens per question.", minimum=4, maximum=100_000)
    passage_length: int = param(256, "Tokens per passage.", minimum=8, maximum=100_000)
    device: str | None = param(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", runtime=True)
    progress: bool = param(True, "Show progress bars.", runtime=True, cli=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size < 2:  # checked here, not as a declared minimum, so the message can say why
            raise AdaptlabError(f"--batch-size must be at least 2 for the retriever, not {self.batch_size}: its negatives are "
                                "the other passages of a batch, so with 1 there are none (loss 0, nothing is learned)")
        self.check_training()

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.precision, training=True)

    def fit(self, data: PairSplit, workdir: Path) -> "RetrieverTuner":
        from adaptlab.models import load_backbone, load_tokenizer
        from adaptlab.rag.pair_training import DualEncoder, PairBatchCollator, PairTrainingSet
        from adaptlab.training.data import BatchDataModule
        from adaptlab.training.engine import fit_module

        self.ref_ = resolve_model(self.model)
        self.tokenizer_ = load_tokenizer(self.ref_)
        self.encoder_ = DualEncoder(apply(load_backbone(self.ref_), "full", self, "retriever"), self.scale)
        sets = [PairTrainingSet(pairs, self.tokenizer_, self.query_length, self.passage_length) for pairs in (data.train, data.val)]
        datamodule = BatchDataModule(*sets, PairBatchCollator(self.tokenizer_.pad_token_id), self.batch_size, self.seed,
                                     self.group_by_length)
        self.report_ = fit_module(self.encoder_, datamodule, self, workdir, self.runtime)
        self.encoder_.eval()
        return self

    # -- the job protocol -----------------------------------------------------------------------------------
    def evaluate(self, data: PairSplit) -> dict:
        return {"test": self.ranking_scores(data.test), "val": self.ranking_scores(data.val)}

    def ranking_scores(self, pairs: list[QueryPassage]) -> dict:
        """Each question ranks every distinct passage of its split: recall@1/@5 and MRR of its own passage."""
        passages = sorted({p.key: p.passage for p in pairs}.items())
        position = {key: i for i, (key, _) in enumerate(passages)}
        scores = self.embed([p.question for p in pairs], self.query_length) @ self.embed([t for _, t in passages], self.passage_length).T
        own = scores[np.arange(len(pairs)), [position[p.key] for p in pairs]]
        rank = 1 + (scores > own[:, None]).sum(axis=1)
        return {"recall@1": round(float(np.mean(rank <= 1)), 4), "recall@5": round(float(np.mean(rank <= 5)), 4),
                "mrr": round(float(np.mean(1.0 / rank)), 4), "questions": len(pairs), "passages": len(passages)}

    def embed(self, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        import torch

        from adaptlab.models.loading import pad_batch

        device = self.runtime.torch_device
        encoder = self.encoder_.to(device).eval()
        ids = self.tokenizer_(texts, truncation=True, max_length=max_length)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), encoder.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                index = order[start:start + batch_size]
                batch, mask = pad_batch([ids[i] for i in index], self.tokenizer_.pad_token_id)
                out[index] = encoder.encode(batch.to(device), mask.to(device)).float().cpu().numpy()
        return out

    def inference_rate(self, data: PairSplit) -> float:
        from adaptlab.measure import measure

        questions = [p.question for p in data.test[:256]]
        with measure() as timing:
            self.embed(questions, self.query_length)
        return len(questions) / max(timing.seconds, 1e-9)

    def cost(self) -> dict:
        from adaptlab.models.classifier import count_parameters

        trainable, total = count_parameters(self.encoder_)
        return {"trainable_params": trainable, "total_params": total}

    def base_model(self) -> dict:
        from adaptlab.models.causal import base_record

        return base_record(self.model, self.ref_)

    def get_params(self) -> dict:
        return recorded_params(self)

    def training_report(self) -> dict:
        return dataclasses.asdict(self.report_)

    def details(self) -> dict:
        return {"objective": "in-batch negatives (MultipleNegativesRankingLoss), repeated passages masked",
                "pooling": "mean", "normalize": True, "load_with": "SentenceTransformer('ARTIFACT/model')"}

    def save(self, directory: Path) -> None:
        """``model/``: the tuned transformer, its tokenizer and the sentence-transformers module files."""
        target = directory / "model"
        self.encoder_.backbone.save_pretrained(target, safe_serialization=True)
        self.tokenizer_.save_pretrained(target)
        base = Path(self.ref_.path) if self.ref_.local else None
        if base is not None and (base / "modules.json").exists():
            for name in SENTENCE_TRANSFORMERS_FILES:
                if (base / name).exists():
                    shutil.copy(base / name, target / name)
            for module in json.loads((base / "modules.json").read_text(encoding="utf-8")):
                if module["path"] and (base / module["path"]).is_dir():
                    shutil.copytree(base / module["path"], target / module["path"], dirs_exist_ok=True)
        else:
            (target / "modules.json").write_text(json.dumps(DEFAULT_MODULES, indent=2))
            (target / "1_Pooling").mkdir(exist_ok=True)
            (target / "1_Pooling" / "config.json").write_text(json.dumps(
                {"word_embedding_dimension": self.encoder_.dimension, "pooling_mode_mean_tokens": True}, indent=2))
            (target / "2_Normalize").mkdir(exist_ok=True)
            (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": self.passage_length}))


def train_retriever(data: PairSplit, output: str | Path, *, overwrite: bool = False, **params) -> JobResult:
    """Fine-tune, evaluate on the held-out passages' questions, and write the artifact; returns the manifest."""
    check_names(RetrieverTuner, params, "train_retriever", "the retriever")
    job = RetrieverTuner(**params)
    return run_job(job, data, output, seed=job.seed, labels=[], data_description=data.describe(),
                   train_examples=len(data.train), resume=job.resume, overwrite=overwrite)
