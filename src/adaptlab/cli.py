"""The ``adaptlab`` command line: a thin layer over the Python API.

Bad input raises ``AdaptlabError`` anywhere below; ``main`` prints it as one line and exits with code 2.
"""

from __future__ import annotations

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


def _data_values(data, text_column, label_column, id_column, seed, train_size, val_size, test_size) -> dict:
    return {
        "source": data, "text_column": text_column, "label_column": label_column, "id_column": id_column,
        "seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size,
    }


def _run_training(strategy: str, config_path, data_values: dict, params: dict, output, as_json: bool) -> None:
    from adaptlab.config import train_config
    from adaptlab.runner import train

    config = train_config(strategy, config_path, data_values, params, output)
    output = config.output or f"runs/{Path(str(config.data.source)).stem}-{strategy}"
    splits = config.data.load()
    result = train(strategy, splits, output, **config.params)
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


def _params(cost: dict) -> str:
    trainable, total = cost["trainable_params"], cost.get("total_params")
    if not total:
        return f"{trainable:,}"
    return f"{trainable:,} ({100 * trainable / total:.3g}%)"


@train_app.command("features")
def train_features(
    data: DataOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    id_column: IdCol = None,
    seed: Seed = None,
    train_size: TrainSize = None,
    val_size: ValSize = None,
    test_size: TestSize = None,
    model: Annotated[Optional[str], typer.Option(help="Frozen model: minilm, smollm2-135m, a Hub id or a local directory.")] = None,
    pooling: Annotated[Optional[str], typer.Option(help="mean, cls or last (last real token; for decoders).")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="logreg or random-forest.")] = None,
    c: Annotated[Optional[float], typer.Option("--C", help="Logistic regression C; chosen on the validation split if omitted.")] = None,
    n_estimators: Annotated[Optional[int], typer.Option(help="Trees in the random forest.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Texts per embedding batch.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Truncate texts to this many tokens (default: the model's).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 where the hardware has it), fp32 or bf16.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Frozen model embeddings -> scikit-learn classifier (logistic regression or random forest)."""
    params = {
        "model": model, "pooling": pooling, "classifier": classifier, "C": c, "n_estimators": n_estimators,
        "batch_size": batch_size, "max_length": max_length, "precision": precision, "device": device,
    }
    values = _data_values(data, text_column, label_column, id_column, seed, train_size, val_size, test_size)
    _run_training("features", config, values, params, output, as_json)


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

    values = _data_values(data, text_column, label_column, id_column, seed, train_size, val_size, test_size)
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
