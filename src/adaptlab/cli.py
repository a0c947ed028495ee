"""The ``adaptlab`` command line: a thin layer over the Python API.

Bad input raises ``AdaptlabError`` anywhere below; ``main`` prints it as one line and exits with code 2.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from adaptlab.errors import AdaptlabError

app = typer.Typer(
    help="Adapt a language model to your task in every way the field knows, and measure which is worth it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train one adaptation strategy and save its artifact.", no_args_is_help=True)
app.add_typer(train_app, name="train")
rag_app = typer.Typer(help="Retrieval-augmented generation: index documents, search them, answer with citations.", no_args_is_help=True)
app.add_typer(rag_app, name="rag")
from adaptlab.feedback.cli import feedback_app  # noqa: E402 - light: imports nothing heavy at module level

app.add_typer(feedback_app, name="feedback", help="Collect human rankings of model outputs in a browser, for reward models.")
rlhf_app = typer.Typer(help="Learning from human preferences: reward models (PPO and DPO are on the way).", no_args_is_help=True)
app.add_typer(rlhf_app, name="rlhf")
out = Console()

# Options shared by every strategy's `train` command and by `data`.
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Named dataset (rotten_tomatoes, imdb), a .csv/.jsonl/.parquet file, or a Hub dataset id.")]
TextCol = Annotated[Optional[str], typer.Option(help="Column holding the text.")]
LabelCol = Annotated[Optional[str], typer.Option(help="Column holding the label (strings or integers).")]
IdCol = Annotated[Optional[str], typer.Option(help="Optional column of unique example ids.")]
Seed = Annotated[Optional[int], typer.Option(help="Seed for the split and for training.")]
TrainSize = Annotated[Optional[int], typer.Option(help="Sub-sample the training split to this many examples (stratified).")]
ValSize = Annotated[Optional[int], typer.Option(help="Sub-sample the validation split.")]
TestSize = Annotated[Optional[int], typer.Option(help="Sub-sample the test split.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file describing the run; options given here override it.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Artifact directory to write.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]


def _run_training(strategy: str, config_path, data_values: dict, params: dict, output, as_json: bool) -> None:
    from adaptlab.config import train_config
    from adaptlab.runner import train

    config = train_config(strategy, config_path, data_values, params, output)
    output = config.output or f"runs/{Path(str(config.data.source)).stem}-{strategy}"
    splits = config.data.load()
    result = train(strategy, splits, output, **config.params)
    if not result.manifest:  # a secondary process of multi-process training: rank 0 reports
        return
    if as_json:
        print(json.dumps({"artifact": str(result.artifact), **{k: result.manifest[k] for k in ("metrics", "cost")}}, indent=2))
        return
    _print_result(result)


def _print_result(result) -> None:
    manifest = result.manifest
    test, cost, sizes = manifest["metrics"]["test"], manifest["cost"], manifest["data"]["sizes"]
    table = Table(title=f"{manifest['strategy']} on {manifest['data']['source']} ({manifest['base_model']['name']})")
    for column in ("test acc", "macro-F1", "val acc", "trainable params", "train time", "peak RSS", "size"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{test['accuracy']:.4f}",
        f"{test['macro_f1']:.4f}",
        f"{manifest['metrics']['val']['accuracy']:.4f}",
        _params(cost),
        f"{cost['train_seconds']:.1f} s",
        f"{cost['peak_rss_mb']:.0f} MB",
        f"{manifest['size_bytes'] / 1024:.0f} KiB",
    )
    out.print(table)
    labels = manifest["labels"]
    confusion = Table(title="test confusion (rows: true)")
    confusion.add_column("true \\ predicted")
    for label in labels:
        confusion.add_column(label, justify="right")
    for label, row in zip(labels, test["confusion_matrix"]):
        confusion.add_row(label, *map(str, row))
    out.print(confusion)
    out.print(f"split train/val/test = {sizes['train']}/{sizes['val']}/{sizes['test']}; artifact: {result.artifact}")
    training = manifest.get("training")
    if training:
        best = "" if training["best_epoch"] is None else f", best epoch {training['best_epoch'] + 1} (val acc {training['best_val_acc']:.4f})"
        resumed = "" if training["resumed_from_epoch"] is None else f", resumed at epoch {training['resumed_from_epoch'] + 1}"
        out.print(
            f"trained {manifest['strategy']}: {training['epochs_run']} epochs, {training['steps']} steps{best}{resumed}, "
            f"{training['samples_per_second']:.0f} samples/s, {training['seconds']:.1f} s"
        )


def _params(cost: dict) -> str:
    trainable, total = cost["trainable_params"], cost.get("total_params")
    if not total:
        return f"{trainable:,}"
    return f"{trainable:,} ({100 * trainable / total:.3g}%)"


def _opt(kind, help: str, *flags: str):
    return Annotated[Optional[kind], typer.Option(*flags, help=help)]


# name -> (annotation, strategy parameter name); options are None unless given, so YAML values survive.
DATA_OPTIONS = {
    "data": (DataOpt, "source"), "text_column": (TextCol, "text_column"), "label_column": (LabelCol, "label_column"),
    "id_column": (IdCol, "id_column"), "seed": (Seed, "seed"), "train_size": (TrainSize, "train_size"),
    "val_size": (ValSize, "val_size"), "test_size": (TestSize, "test_size"),
}
MODEL_OPTION = _opt(str, "Model: minilm, smollm2-135m, a Hub id or a local directory.")
MAX_LENGTH = _opt(int, "Truncate texts to this many tokens (default: the model's, at most 256).")
DEVICE = _opt(str, "cpu, cuda, cuda:1 ... (default: cuda if available).")
TRAINING_OPTIONS = {
    "epochs": _opt(int, "Training epochs."),
    "batch_size": _opt(int, "Examples per optimiser step (before accumulation)."),
    "lr": _opt(float, "Peak learning rate (default depends on the strategy)."),
    "weight_decay": _opt(float, "AdamW weight decay (not applied to biases and norms)."),
    "warmup_ratio": _opt(float, "Fraction of steps spent warming up the learning rate."),
    "schedule": _opt(str, "Learning-rate schedule: linear, cosine, constant, constant_with_warmup."),
    "grad_accum": _opt(int, "Accumulate gradients over this many batches."),
    "grad_clip": _opt(float, "Clip gradient norm to this value."),
    "precision": _opt(str, "fp32, bf16 or fp16 (CUDA); auto (default): bf16 on CUDA GPUs that have it, else fp32."),
    "patience": _opt(int, "Stop early after this many epochs without validation-accuracy gain."),
    "group_by_length": _opt(bool, "Batch texts of similar length together (less padding).", "--group-by-length/--no-group-by-length"),
    "accelerator": _opt(str, "Deprecated: use --device."),
    "devices": _opt(str, "Lightning devices: auto, a count, or a list such as 0,1."),
    "strategy": _opt(str, "Lightning strategy: auto, ddp, fsdp, deepspeed_stage_2 ..."),
    "num_nodes": _opt(int, "Machines for multi-node training."),
    "logger": _opt(str, "Training log: csv (kept in the artifact), tensorboard, none."),
    "resume": Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of an interrupted run.")],
}
STRATEGY_OPTIONS: dict[str, tuple[str, dict]] = {
    "icl": ("In-context learning: a causal LM, a hand-written prompt and k demonstrations; labels scored by likelihood.", {
        "model": _opt(str, "Causal LM: smollm2-135m, a Hub id or a local directory."),
        "k": _opt(int, "Demonstrations per prompt (0 = zero-shot)."),
        "selection": _opt(str, "How demonstrations are picked from the training split: random, balanced, knn."),
        "template": _opt(str, "Example format with {text} and {label}, e.g. 'Review: {text}\nSentiment: {label}'."),
        "instruction": _opt(str, "Instruction placed before the demonstrations."),
        "label_words": _opt(str, "Words the model should say per label, e.g. 'negative=terrible,positive=great'."),
        "chat": _opt(str, "auto (chat template if the model has one), turns, inline, off."),
        "calibrate": _opt(bool, "Contextual calibration against content-free inputs.", "--calibrate/--no-calibrate"),
        "normalize_length": _opt(bool, "Average label log-likelihood per token (multi-token labels).", "--normalize-length/--no-normalize-length"),
        "draws": _opt(int, "Demonstration samples tried; the best on validation is kept, test reported over all."),
        "mode": _opt(str, "score (label likelihoods) or generate (generate text, parse the label)."),
        "batch_size": _opt(int, "Prompt x label pairs per forward pass."),
        "device": DEVICE,
    }),
    "soft-prompt": ("Prompt tuning of a causal LM scored through label words (like icl, with learned virtual tokens).", {
        "model": _opt(str, "Causal LM: smollm2-135m, a Hub id or a local directory."),
        "num_virtual_tokens": _opt(int, "Learned virtual tokens in front of the prompt."),
        "init_text": _opt(str, "Initialise them from this text, e.g. 'Classify the sentiment of this review' (default: random)."),
        "template": _opt(str, "Example format with {text} and {label}."),
        "instruction": _opt(str, "Instruction in the prompt."),
        "label_words": _opt(str, "Words per label, e.g. 'negative=terrible,positive=great'."),
        "chat": _opt(str, "auto, turns, inline, off."),
        "normalize_length": _opt(bool, "Average label log-likelihood per token.", "--normalize-length/--no-normalize-length"),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "features": ("Frozen model embeddings -> scikit-learn classifier (logistic regression or random forest).", {
        "model": MODEL_OPTION,
        "pooling": _opt(str, "mean, cls or last (last real token; for decoders)."),
        "classifier": _opt(str, "logreg or random-forest."),
        "C": _opt(float, "Logistic regression C; chosen on the validation split if omitted.", "--C"),
        "n_estimators": _opt(int, "Trees in the random forest."),
        "batch_size": _opt(int, "Texts per embedding batch."),
        "max_length": MAX_LENGTH,
        "precision": _opt(str, "auto (bf16 where the hardware has it), fp32 or bf16."),
        "device": DEVICE,
    }),
    "head": ("Frozen backbone, new linear head trained on cached features.", {
        "model": MODEL_OPTION,
        "pooling": _opt(str, "mean, cls or last (default: mean for encoders, last for decoders)."),
        "dropout": _opt(float, "Dropout before the head."),
        "cache_features": _opt(bool, "Run the backbone once and train on cached features (--no-cache-features: naive loop).", "--cache-features/--no-cache-features"),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "last-k": ("Train the last k transformer blocks and the head; the rest stays frozen.", {
        "model": MODEL_OPTION, "layers": _opt(int, "How many of the last blocks to train."), "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "full": ("Fine-tune every parameter.", {"model": MODEL_OPTION, "max_length": MAX_LENGTH, "device": DEVICE}),
    "lora": ("LoRA adapters (Hugging Face PEFT); `adaptlab merge` folds them into the base weights.", {
        "model": MODEL_OPTION,
        "r": _opt(int, "LoRA rank."),
        "alpha": _opt(int, "LoRA scaling alpha."),
        "dropout": _opt(float, "LoRA dropout."),
        "target_modules": _opt(str, "Comma-separated module names (default: PEFT's per-architecture choice, e.g. query,value)."),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "prefix-tuning": ("Prefix tuning (PEFT): trainable key/value prefixes in every layer.", {
        "model": MODEL_OPTION,
        "num_virtual_tokens": _opt(int, "Prefix length."),
        "prefix_projection": _opt(bool, "Reparameterise the prefix through an MLP.", "--prefix-projection/--no-prefix-projection"),
        "encoder_hidden_size": _opt(int, "Hidden size of that MLP."),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "p-tuning": ("P-tuning (PEFT): virtual tokens produced by a small prompt encoder.", {
        "model": MODEL_OPTION,
        "num_virtual_tokens": _opt(int, "Virtual tokens."),
        "encoder_hidden_size": _opt(int, "Prompt encoder hidden size."),
        "encoder_type": _opt(str, "Prompt encoder: MLP or LSTM."),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
    "prompt-tuning": ("Prompt tuning (PEFT): learned virtual-token embeddings.", {
        "model": MODEL_OPTION,
        "num_virtual_tokens": _opt(int, "Virtual tokens."),
        "init_text": _opt(str, "Initialise the virtual tokens from this text (default: random)."),
        "max_length": MAX_LENGTH, "device": DEVICE,
    }),
}


def _make_train_command(strategy: str, help_text: str, options: dict) -> None:
    """Build `adaptlab train STRATEGY` from the shared data options, the strategy's own and the training ones."""
    own = dict(options)
    if strategy != "features":
        own = {**own, **{k: v for k, v in TRAINING_OPTIONS.items() if k not in own}}
    tail = {"config": ConfigOpt, "output": OutputOpt, "as_json": JsonOpt}
    annotations = {**{k: a for k, (a, _) in DATA_OPTIONS.items()}, **own, **tail}
    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                          default=False if name in ("as_json", "resume") else None)
        for name, annotation in annotations.items()
    ]

    def command(**values) -> None:
        data_values = {target: values.pop(name) for name, (_, target) in DATA_OPTIONS.items()}
        config, output, as_json = values.pop("config"), values.pop("output"), values.pop("as_json")
        if not values.get("resume"):
            values.pop("resume", None)
        _run_training(strategy, config, data_values, values, output, as_json)

    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = annotations
    command.__doc__ = help_text
    command.__name__ = f"train_{strategy.replace('-', '_')}"
    train_app.command(strategy)(command)


for _strategy, (_help, _options) in STRATEGY_OPTIONS.items():
    _make_train_command(_strategy, _help, _options)


@app.command()
def compare(
    data: DataOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    id_column: IdCol = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the data split (the same split for every run).")] = None,
    train_size: TrainSize = None,
    val_size: ValSize = None,
    test_size: TestSize = None,
    preset: Annotated[Optional[str], typer.Option(help="quick (default; < 15 min on 2 CPU cores), standard or full: data sizes, epochs, draws.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models (default minilm,smollm2-135m): classifier strategies run on the encoders, prompting on the causal LMs.")] = None,
    strategies: Annotated[Optional[str], typer.Option(help="Comma-separated subset of: zero-shot, few-shot, features-logreg, features-rf, head, last-k, full, lora, prefix-tuning, p-tuning, prompt-tuning, soft-prompt.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Training seeds per strategy (mean ± std; the split stays the same).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs for every gradient-based strategy (default: the preset's).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a strategy parameter: ENTRY.PARAM=VALUE, e.g. lora.r=16, all.batch_size=16.")] = None,
    device: DEVICE = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file describing the comparison; options given here override it.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Directory for runs, results.json and report.html.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every adaptation strategy on one split and rank them: accuracy, cost, a report with plots.

    Re-running the same command skips finished runs and resumes an interrupted one."""
    from adaptlab.compare import compare_plan, run_comparison
    from adaptlab.compare.plan import parse_overrides
    from adaptlab.compare.report import leaderboard_table

    data_values = {"source": data, "text_column": text_column, "label_column": label_column, "id_column": id_column,
                   "seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size}
    options = {"preset": preset, "models": models, "strategies": strategies, "seeds": seeds, "epochs": epochs,
               "device": device, "output": output, "params": parse_overrides(set_ or [])}
    comparison = run_comparison(compare_plan(config, data_values, options))
    if as_json:
        print(json.dumps(comparison.results, indent=2))
        return
    wide = Console(width=max(out.width, 120))  # the leaderboard has eleven columns; let a narrow pipe wrap lines
    wide.print(leaderboard_table(comparison.results))
    for line in comparison.results["recommendation"]:
        out.print(f"• {line}")
    for failure in comparison.results["failures"]:
        out.print(f"[red]failed: {failure['entry']} ({failure['model']}): {failure['errors'][-1]}[/]")
    out.print(f"report: {comparison.report.resolve()}  (results: {comparison.output / 'results.json'})")

StoreOpt = Annotated[str, typer.Option("--store", help="Vector store: a LanceDB directory, or a postgresql:// URL (pgvector).")]


@rag_app.command("index")
def rag_index(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or the named corpus 'wikipedia'.")],
    store: StoreOpt = "rag-store",
    model: Annotated[Optional[str], typer.Option(help="Embedding model (default minilm; fixed once the store exists).")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Chunk length in the embedder's tokens (default 200).")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option(help="Tokens shared by consecutive chunks (default: a fifth of the size, at most 40).")] = None,
    ann: Annotated[bool, typer.Option("--ann", help="Also build an approximate (IVF-PQ) index, for large stores.")] = False,
    device: DEVICE = None,
) -> None:
    """Add, replace and remove documents so the store matches PATHS; unchanged files are skipped."""
    from adaptlab.rag import RagIndex

    index = RagIndex(store, model=model, chunk_size=chunk_size, chunk_overlap=chunk_overlap, device=device)
    report = index.update(paths)
    if ann:
        index.store.build_ann_index()
    out.print(
        f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged, {len(report.failed)} failed; {report.chunks_written} chunks written in "
        f"{report.seconds:.1f} s (embedding {report.embed_seconds:.1f} s, store {report.store_seconds:.1f} s); "
        f"{index.store.count()} chunks in {index.store.location}"
    )
    for source, reason in report.failed:
        out.print(f"[yellow]skipped {source}: {reason}[/]")


@rag_app.command("search")
def rag_search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    store: StoreOpt = "rag-store",
    k: Annotated[int, typer.Option("-k", "--k", help="How many chunks.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Rank chunks by similarity to QUERY; score = (1 + cosine) / 2, in [0, 1]."""
    from adaptlab.rag import RagIndex
    from adaptlab.rag.store import describe

    hits = RagIndex(_existing_store(store), progress=False).search(query, k)
    if as_json:
        for hit in hits:
            print(json.dumps(describe(hit), ensure_ascii=False))
        return
    table = Table()
    for column in ("#", "score", "source", "text"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, hit in enumerate(hits, start=1):
        text = hit.chunk.text if len(hit.chunk.text) <= 200 else hit.chunk.text[:197] + "..."
        table.add_row(str(rank), f"{hit.score:.3f}", _where(hit), text)
    out.print(table)


def _where(hit) -> str:
    chunk = hit.chunk
    locator = f" ({chunk.locator})" if chunk.locator and chunk.locator != chunk.title else ""
    return f"{chunk.title}{locator}\n{chunk.source}" if chunk.title else chunk.source


def _existing_store(store: str) -> str:
    if not store.startswith(("postgresql://", "postgres://")) and not Path(store).is_dir():
        raise AdaptlabError(f"--store '{store}' does not exist; build it with `adaptlab rag index PATH --store {store}`")
    return store


@rag_app.command("ask")
def rag_ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    store: StoreOpt = "rag-store",
    k: Annotated[int, typer.Option("-k", "--k", help="Chunks given to the model as context.")] = 3,
    model: Annotated[str, typer.Option(help="Causal LM that answers.")] = "smollm2-135m",
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Closed-book: answer without any context.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 160,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated.")] = True,
    as_json: JsonOpt = False,
    device: DEVICE = None,
) -> None:
    """Retrieve the top-k chunks, answer QUESTION from them with the decoder, and cite them as [1], [2]."""
    from adaptlab.generation import SamplingOptions
    from adaptlab.rag import Answerer, RagIndex
    from adaptlab.rag.store import describe

    options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature)
    options.check()
    index = None if no_retrieval else RagIndex(_existing_store(store), progress=False, device=device)
    answer, pieces = Answerer(index, model, device).stream(question, 0 if no_retrieval else k, options)
    if as_json or not stream:
        for _ in pieces:
            pass
    else:
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    if as_json:
        print(json.dumps({"question": question, "answer": answer.text, "cited": answer.cited,
                          "sources": [describe(h) for h in answer.sources]}, ensure_ascii=False))
        return
    if not stream:
        print(answer.text)
    for number, hit in enumerate(answer.sources, start=1):
        mark = "*" if number in answer.cited else " "
        out.print(f"{mark}[{number}] {hit.chunk.title} — {hit.chunk.source}{' ' + hit.chunk.locator if hit.chunk.locator else ''} "
                  f"(score {hit.score:.3f})", highlight=False)
    if answer.sources:
        out.print("(* = cited in the answer)", style="dim")


@rag_app.command("eval")
def rag_eval(
    store: Annotated[Optional[str], typer.Option("--store", help="Store to evaluate (with --queries; default rag-store). With --squad: where its paragraphs are indexed (default OUTPUT/store).")] = None,
    squad: Annotated[Optional[Path], typer.Option(help="SQuAD-format JSON: its paragraphs are indexed into --store, its questions asked.")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="JSONL of {question, relevant: [ids], answers?} against an existing --store.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N questions.")] = None,
    answers: Annotated[int, typer.Option(help="Also generate answers for this many sampled questions (RAG and closed-book).")] = 0,
    k: Annotated[int, typer.Option("-k", "--k", help="Chunks of context per answer.")] = 3,
    model: Annotated[str, typer.Option(help="Causal LM for the answers.")] = "smollm2-135m",
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for results.json and results.md.")] = Path("runs/rag-eval"),
    device: DEVICE = None,
) -> None:
    """Retrieval hit@k / recall@k / MRR / nDCG@10, and answer exact match and F1 with vs without retrieval."""
    from adaptlab._io import atomic_file
    from adaptlab.rag import RagIndex
    from adaptlab.rag.evaluate import evaluate, load_queries, load_squad, write_results

    if (squad is None) == (queries is None):
        raise AdaptlabError("give exactly one of --squad FILE or --queries FILE")
    if squad is not None:
        records, query_list = load_squad(squad)
        corpus = output / "squad_paragraphs.jsonl"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(corpus) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        index = RagIndex(store or str(output / "store"), device=device)
        index.update([str(corpus)])
    else:
        query_list = load_queries(queries)
        index = RagIndex(_existing_store(store or "rag-store"), device=device)
    if limit is not None:
        query_list = query_list[:limit]
    result = evaluate(index, query_list, answers=answers, k=k, model=model, device=device)
    write_results(result, output)
    out.print(json.dumps({key: result[key] for key in ("retrieval", "search_ms")} | ({"answers": {m: result["answers"][m] for m in ("rag", "closed_book")}} if "answers" in result else {})))
    out.print(f"results: {output / 'results.json'} and {output / 'results.md'}")



@rlhf_app.command("reward")
def rlhf_reward(
    data: Annotated[str, typer.Option("--data", help="Preference data: pairs, rankings or HH-RLHF dialogues (.jsonl[.gz], .json, .csv) or a Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact directory to write.")],
    model: Annotated[str, typer.Option(help="Backbone: minilm, smollm2-135m, a Hub id or a local directory.")] = "minilm",
    method: Annotated[str, typer.Option(help="lora (default) or full.")] = "lora",
    r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    max_length: Annotated[int, typer.Option(help="Tokens per (prompt, response); the prompt is cut from the left.")] = 256,
    train_size: Annotated[Optional[int], typer.Option(help="Sub-sample the training pairs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the prompt-level split and for training.")] = 0,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Drop invalid rows (counted) instead of stopping at the first.")] = False,
    epochs: _opt(int, "Training epochs (default 2).") = None,
    lr: _opt(float, "Learning rate (default 5e-4 for LoRA, 3e-5 full).") = None,
    batch_size: _opt(int, "Pairs per step.") = None,
    precision: _opt(str, "fp32, bf16 or fp16 (CUDA); auto (default): bf16 on CUDA GPUs that have it, else fp32.") = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    device: DEVICE = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a reward model on human preferences (Bradley-Terry); reports held-out pairwise accuracy."""
    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    pairs, kind = read_preferences(data, skip_invalid)
    split = split_preferences(pairs, data, seed=seed, train_size=train_size)
    training = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size, "precision": precision}.items() if v is not None}
    manifest = train_reward_model(split, output, model=model, method=method, r=r, max_length=max_length, device=device,
                                  seed=seed, resume=resume, **training)
    if as_json:
        print(json.dumps({"artifact": str(output), "metrics": manifest["metrics"], "cost": manifest["cost"]}, indent=2))
        return
    test = manifest["metrics"]["test"]
    out.print(f"reward model ({kind}, {split.describe()['pairs']['train']} training pairs) -> {output}")
    out.print(f"held-out pairwise accuracy {test['pairwise_accuracy']:.4f} on {test['pairs']} pairs "
              f"(val {manifest['metrics']['val']['pairwise_accuracy']:.4f}); mean margin {test['mean_margin']:.3f}; "
              f"{_params(manifest['cost'])} trainable parameters; {manifest['cost']['train_seconds']:.0f} s")


def _read_prompts(source: str, column: str, n: int | None, seed: int) -> list[str]:
    """'imdb' / 'rotten_tomatoes': n (default 512) review openings drawn with ``seed``; otherwise the first n
    prompts of a file (all when n is None)."""
    if source in ("imdb", "rotten_tomatoes"):
        from adaptlab.rlhf.ppo import review_prompts

        return review_prompts(n or 512, seed=seed, source=source)
    from adaptlab.data import read_texts

    return read_texts(source, column)[:n]


@rlhf_app.command("ppo")
def rlhf_ppo(
    reward: Annotated[str, typer.Option(help="A reward-model artifact, a classifier artifact (with --reward-label), or module:function.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Policy artifact directory to write.")],
    prompts: Annotated[str, typer.Option(help="'imdb' (first words of IMDB reviews), or a .txt / .jsonl / .csv file of prompts.")] = "imdb",
    prompt_column: Annotated[str, typer.Option(help="Column of a tabular --prompts file.")] = "prompt",
    reward_label: Annotated[Optional[str], typer.Option(help="For a classifier reward: the label whose log-odds is the reward.")] = None,
    model: Annotated[str, typer.Option(help="Policy: a causal LM.")] = "smollm2-135m",
    method: Annotated[str, typer.Option(help="lora (reference = adapter disabled) or full.")] = "lora",
    steps: Annotated[int, typer.Option(help="PPO steps (one batch of rollouts each).")] = 20,
    batch_size: Annotated[int, typer.Option(help="Prompts per step.")] = 8,
    mini_batch_size: Annotated[int, typer.Option(help="Rollouts per gradient step.")] = 4,
    ppo_epochs: Annotated[int, typer.Option(help="Passes over each batch of rollouts.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per response.")] = 24,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-4,
    init_kl_coef: Annotated[float, typer.Option(help="Initial KL penalty coefficient.")] = 0.2,
    target_kl: Annotated[Optional[float], typer.Option(help="Adaptive KL target (nats per response); 0 = fixed coefficient.")] = 6.0,
    score_norm: Annotated[bool, typer.Option("--score-norm", help="Normalise scores by their running mean and std.")] = False,
    score_clip: Annotated[Optional[float], typer.Option(help="Clip (normalised) scores to +-this value.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    device: DEVICE = None,
) -> None:
    """Optimise a causal LM with PPO against a reward, with a KL penalty to the reference policy."""
    from adaptlab.rlhf.ppo import PPOConfig, load_reward, train_ppo

    prompt_list = _read_prompts(prompts, prompt_column, None, seed)
    config = PPOConfig(steps=steps, batch_size=batch_size, mini_batch_size=mini_batch_size, ppo_epochs=ppo_epochs,
                       max_new_tokens=max_new_tokens, lr=lr, method=method, init_kl_coef=init_kl_coef,
                       target_kl=target_kl or None, score_norm=score_norm, score_clip=score_clip, seed=seed)
    manifest = train_ppo(model, prompt_list, load_reward(reward, reward_label, device), config, output,
                         reward_spec=reward, resume=resume, device=device)
    metrics = manifest["metrics"]
    out.print(f"{metrics['steps']} PPO steps: mean reward {metrics['reward_first_steps']:.3f} (first 3) -> "
              f"{metrics['reward_last_steps']:.3f} (last 3), KL {metrics['kl_last']:.2f}; policy -> {output}")


@rlhf_app.command("eval")
def rlhf_eval(
    policy: Annotated[Path, typer.Argument(help="A policy artifact from `adaptlab rlhf ppo`.")],
    reward: Annotated[str, typer.Option(help="Reward to score with: reward-model or classifier artifact, or module:function.")],
    reward_label: Annotated[Optional[str], typer.Option(help="For a classifier reward: the label whose log-odds is the reward.")] = None,
    prompts: Annotated[str, typer.Option(help="'imdb' (held-out review openings) or a prompts file.")] = "imdb",
    prompt_column: Annotated[str, typer.Option(help="Column of a tabular --prompts file.")] = "prompt",
    n: Annotated[int, typer.Option(help="How many prompts.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per response.")] = 24,
    seed: Annotated[int, typer.Option(help="Sampling seed (the same for base and tuned).")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for results.json and results.md.")] = Path("runs/rlhf-eval"),
    device: DEVICE = None,
) -> None:
    """Base vs tuned policy on held-out prompts: mean reward, win rate, KL to the base, samples."""
    from adaptlab.rlhf.evaluate import evaluate_policy, held_out, write_report
    from adaptlab.rlhf.ppo import load_reward

    # candidates beyond n, so that n remain once the policy's own training prompts are left out
    prompt_list = held_out(policy, _read_prompts(prompts, prompt_column, None if prompts not in ("imdb", "rotten_tomatoes") else 4 * n, 10_000 + seed), n)
    result = evaluate_policy(policy, prompt_list, load_reward(reward, reward_label, device), max_new_tokens=max_new_tokens,
                             seed=seed, device=device)
    write_report(result, output)
    out.print(f"reward {result['reward_base']:.3f} (base) -> {result['reward_tuned']:.3f} (tuned), win rate "
              f"{result['win_rate']:.3f}, KL to base {result['kl_to_base']:.2f}; {output / 'results.md'}")


@rlhf_app.command("dpo")
def rlhf_dpo(
    data: Annotated[str, typer.Option("--data", help="Preference data, as for `rlhf reward`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Policy artifact directory to write.")],
    model: Annotated[str, typer.Option(help="Policy: a causal LM.")] = "smollm2-135m",
    method: Annotated[str, typer.Option(help="lora (default) or full.")] = "lora",
    beta: Annotated[float, typer.Option(help="DPO temperature: how far from the reference the policy may move.")] = 0.1,
    lr: _opt(float, "Learning rate (default 5e-5 LoRA, 5e-7 full).") = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 4,
    max_length: Annotated[int, typer.Option(help="Tokens per prompt + response.")] = 512,
    train_size: Annotated[Optional[int], typer.Option(help="Sub-sample the training pairs.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Drop invalid rows instead of stopping.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: DEVICE = None,
) -> None:
    """Direct preference optimisation (TRL's DPOTrainer) on the same preference data; no reward model."""
    from adaptlab.rlhf import read_preferences, split_preferences
    from adaptlab.rlhf.dpo import train_dpo

    pairs, _ = read_preferences(data, skip_invalid)
    split = split_preferences(pairs, data, seed=seed, train_size=train_size)
    manifest = train_dpo(split, output, model=model, method=method, beta=beta, lr=lr, epochs=epochs, batch_size=batch_size,
                         max_length=max_length, seed=seed, device=device)
    test = manifest["metrics"]["test"]
    out.print(f"DPO on {split.describe()['pairs']['train']} pairs -> {output}; held-out preference accuracy "
              f"{test.get('rewards/accuracies', float('nan')):.3f}, margin {test.get('rewards/margins', float('nan')):.3f}")


@app.command()
def serve(
    artifacts: Annotated[Optional[list[str]], typer.Argument(help="Artifact directories, as PATH or NAME=PATH.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes the server to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    generator: Annotated[Optional[list[str]], typer.Option(help="Causal LM for /v1/generate and /v1/rag/ask (repeatable), e.g. smollm2-135m.")] = None,
    rag_store: Annotated[Optional[str], typer.Option(help="RAG store for /v1/rag/ask (a LanceDB directory or postgresql:// URL).")] = None,
    max_batch: Annotated[int, typer.Option(help="Most texts per forward pass.")] = 32,
    batch_window_ms: Annotated[float, typer.Option(help="How long a lone request waits for company, in ms.")] = 5.0,
    batching: Annotated[bool, typer.Option(help="Dynamic micro-batching (--no-batching: one forward pass per request).")] = True,
    share_lora: Annotated[bool, typer.Option(help="Serve LoRA adapters of the same base on one copy of it.")] = True,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast for passes of 8+ texts where the hardware has native bf16 and a start-up probe shows bf16 leaves the model's answers within 0.01), fp32 or bf16.")] = "auto",
    max_texts: Annotated[int, typer.Option(help="Most texts per classify request.")] = 256,
    max_chars: Annotated[int, typer.Option(help="Longest text accepted, in characters.")] = 20_000,
    device: DEVICE = None,
) -> None:
    """Serve artifacts over HTTP: /v1/classify, /v1/generate, /v1/rag/ask, /v1/models, /health; docs at /docs."""
    import uvicorn

    from adaptlab.runtime import Runtime
    from adaptlab.serve import ServeOptions, create_app, load_registry, parse_artifact_arguments
    from adaptlab.serve.allocator import keep_large_buffers
    from adaptlab.serve.precision import check_serve_precision

    for name, value in (("--max-batch", max_batch), ("--max-texts", max_texts), ("--max-chars", max_chars)):
        if value < 1:
            raise AdaptlabError(f"{name} must be at least 1, not {value}")
    if batch_window_ms < 0:
        raise AdaptlabError(f"--batch-window-ms must be >= 0, not {batch_window_ms}")
    check_serve_precision(precision)
    Runtime(device, precision).resolved_precision()  # a bad device or precision fails before any model loads
    named = parse_artifact_arguments(artifacts or [])
    if not named and not generator and rag_store is None:
        raise AdaptlabError("nothing to serve: give artifact directories, --generator MODEL or --rag-store DIR")
    if rag_store is not None:
        _existing_store(rag_store)
        generator = generator or ["smollm2-135m"]
    keep_large_buffers()  # steady throughput from the first request (see adaptlab.serve.allocator)
    registry = load_registry(named, generator or [], rag_store, device, share_lora)
    options = ServeOptions(max_batch=max_batch, batch_window_ms=batch_window_ms, batching=batching,
                           max_texts=max_texts, max_chars=max_chars, precision=precision)
    Console(stderr=True).print(f"serving {', '.join([*registry.artifacts, *registry.generators]) or 'RAG'} on "
                               f"http://{host}:{port} (docs: /docs)")
    uvicorn.run(create_app(registry, options), host=host, port=port, log_level="warning")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to ask (or a template's text, see --template).")],
    model: Annotated[str, typer.Option(help="Causal LM: smollm2-135m, a Hub id or a local directory.")] = "smollm2-135m",
    system: Annotated[Optional[str], typer.Option(help="System message / instruction.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Format string with {text}; the prompt argument fills it.")] = None,
    examples: Annotated[Optional[Path], typer.Option(help="JSONL of few-shot examples: {\"input\": ..., \"output\": ...}.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send the prompt as is, without the chat template.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stream: Annotated[bool, typer.Option(help="Print tokens as they are generated.")] = True,
    device: DEVICE = None,
) -> None:
    """Generate text with a causal LM, streamed to the terminal."""
    from adaptlab.generation import Generator, SamplingOptions

    if template is not None:
        if "{text}" not in template:
            raise AdaptlabError("--template must contain the {text} placeholder")
        prompt = template.replace("{text}", prompt)
    shots = _read_examples(examples) if examples else []
    options = SamplingOptions(max_new_tokens, temperature, top_p, top_k, seed=seed)
    options.check()
    generator = Generator(model, device)
    text = prompt if raw else generator.render_chat(prompt, system, shots)
    if stream:
        for piece in generator.stream(text, options):
            print(piece, end="", flush=True)
        print()
    else:
        print(generator.generate(text, options))


def _read_examples(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise AdaptlabError(f"--examples file '{path}' does not exist")
    shots = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            shots.append((str(record["input"]), str(record["output"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise AdaptlabError(f"--examples '{path}' line {number}: needs a JSON object with 'input' and 'output'") from None
    return shots


@app.command()
def merge(
    artifact: Annotated[Path, typer.Argument(help="A LoRA artifact.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the merged (full) artifact.")],
) -> None:
    """Fold a LoRA adapter into the base weights: a plain fine-tuned model, no PEFT needed to run it."""
    from adaptlab.merge import merge_lora

    manifest = merge_lora(artifact, output)
    out.print(f"merged {artifact} into {output} ({manifest['size_bytes'] / 2**20:.1f} MiB, strategy 'full')")


def _input_texts(texts: list[str] | None, file: Path | None, text_column: str) -> list[str]:
    from adaptlab.data import read_texts

    if texts and file:
        raise AdaptlabError("give texts as arguments or --file, not both")
    if file:
        return read_texts(file, text_column)
    if texts:
        return texts
    if sys.stdin is None or sys.stdin.isatty():
        raise AdaptlabError("no input: give texts as arguments, --file PATH, or pipe one text per line on stdin")
    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not lines:
        raise AdaptlabError("no input: stdin was empty")
    return lines


@app.command()
def predict(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `adaptlab train`.")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify (or use --file, or stdin).")] = None,
    file: Annotated[Optional[Path], typer.Option(help=".txt (one text per line) or .csv/.jsonl/.parquet file.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a tabular --file.")] = "text",
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: text, label, probabilities.")] = False,
) -> None:
    """Classify texts with a trained artifact; prints each label with its probability."""
    from adaptlab.runner import load_artifact

    model = load_artifact(artifact, device=device, progress=False)
    inputs = _input_texts(texts, file, text_column)
    predictions = model.predict(inputs)
    if as_json:
        for text, prediction in zip(inputs, predictions):
            print(json.dumps({"text": text, **prediction}, ensure_ascii=False))
        return
    table = Table()
    table.add_column("text")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for text, prediction in zip(inputs, predictions):
        shown = text if len(text) <= 80 else text[:77] + "..."
        table.add_row(shown, prediction["label"], f"{prediction['probabilities'][prediction['label']]:.3f}")
    out.print(table)


@app.command()
def embed(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed (or use --file / --data, or stdin).")] = None,
    file: Annotated[Optional[Path], typer.Option(help=".txt (one text per line) or .csv/.jsonl/.parquet file.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Embed every text of a dataset (named, file or Hub id).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a tabular --file or --data.")] = "text",
    model: Annotated[str, typer.Option(help="minilm, smollm2-135m, a Hub id or a local directory.")] = "minilm",
    pooling: Annotated[str, typer.Option(help="mean, cls or last.")] = "mean",
    normalize: Annotated[bool, typer.Option(help="Scale vectors to unit length (for cosine similarity).")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: .npy (matrix) or .parquet (text + vector).")] = Path("embeddings.npy"),
) -> None:
    """Embed texts with a frozen model, using and filling the on-disk embedding cache."""
    import numpy as np

    from adaptlab._io import atomic_file
    from adaptlab.data import read_texts
    from adaptlab.embeddings import Embedder

    if output.suffix not in {".npy", ".parquet"}:
        raise AdaptlabError(f"--output '{output}' must end in .npy or .parquet")
    if data is not None:
        if texts or file:
            raise AdaptlabError("give --data, --file or texts, not several")
        from adaptlab.data import load_data

        path = Path(data)
        inputs = read_texts(path, text_column) if path.exists() else load_data(data, text_column=text_column).texts
    else:
        inputs = _input_texts(texts, file, text_column)
    vectors = Embedder(model, pooling, batch_size=batch_size, precision=precision, normalize=normalize).embed(inputs)
    if output.suffix == ".npy":
        with atomic_file(output, "wb") as handle:
            np.save(handle, vectors)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"text": inputs, "embedding": list(vectors)})
        with atomic_file(output, "wb") as handle:
            pq.write_table(table, handle)
    Console(stderr=True).print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {output}")


@app.command()
def models() -> None:
    """List the models available locally and what each is good for."""
    from adaptlab.models import PACKAGED_MODELS, cache_root

    table = Table(title="packaged models (any Hub id or local directory works too)")
    for column in ("name", "kind", "params", "status", "good for"):
        table.add_column(column)
    for spec in PACKAGED_MODELS.values():
        package_dir = spec.package_dir()
        if package_dir is None:
            status = f"not installed: {spec.install}"
        elif spec.gguf_file:
            converted = (cache_root() / "models" / f"{spec.name}-{spec.package_version()}" / "config.json").exists()
            status = "installed, converted" if converted else "installed (GGUF; converted on first use, ~20 s)"
        else:
            status = "installed"
        table.add_row(spec.name, spec.kind, spec.parameters, status, spec.good_for)
    out.print(table)
    out.print(f"cache: {cache_root()}  (set ADAPTLAB_CACHE to move it)")


@app.command("data")
def describe_data(
    data: DataOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    id_column: IdCol = None,
    seed: Seed = None,
    train_size: TrainSize = None,
    val_size: ValSize = None,
    test_size: TestSize = None,
) -> None:
    """Validate a dataset and show its labels and the train/validation/test split adaptlab would use."""
    from adaptlab.config import DataConfig

    values = {
        "source": data, "text_column": text_column, "label_column": label_column, "id_column": id_column,
        "seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size,
    }
    splits = DataConfig(**{k: v for k, v in values.items() if v is not None}).load()
    table = Table(title=f"{splits.train.source}: stratified split, seed {splits.seed}")
    table.add_column("split")
    table.add_column("examples", justify="right")
    for label in splits.label_names:
        table.add_column(label, justify="right")
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        table.add_row(name, str(len(part)), *map(str, part.class_counts().values()))
    out.print(table)


def main() -> None:
    try:
        app()
    except AdaptlabError as exc:
        print(f"adaptlab: error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
    except KeyboardInterrupt:
        print("adaptlab: interrupted; nothing half-written was kept", file=sys.stderr)
        sys.exit(130)
