"""Single commands: generate, predict, embed, merge, models, data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from adaptlab.cli.common import (DEVICE, DataOpt, IdCol, KeepSplits, LabelCol, OverwriteOpt, Seed, TestData, TestFraction, TestSize,
                                 TextCol, TrainData, TrainSize, ValData, ValFraction, ValSize, out, preflight)
from adaptlab.errors import AdaptlabError


def generate(
    prompt: Annotated[str, typer.Argument(help="What to ask (or a template's text, see --template).")],
    model: Annotated[str, typer.Option(help="Causal LM: smollm2-135m, a Hub id or a local directory.")] = "smollm2-135m",
    system: Annotated[Optional[str], typer.Option(help="System message / instruction.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Format string with {text}; the prompt argument fills it.")] = None,
    examples: Annotated[Optional[Path], typer.Option(help="JSONL of few-shot examples: {\"input\": ..., \"output\": ...}.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Send the prompt as is, without the chat template.", metavar="")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stream: Annotated[bool, typer.Option(help="Print tokens as they are generated.", metavar="")] = True,
    json_schema: Annotated[Optional[Path], typer.Option(help="A JSON Schema file: the reply is JSON valid under it (constrained decoding).")] = None,
    device: DEVICE = None,
) -> None:
    """Generate text with a causal LM, streamed to the terminal."""
    from adaptlab.sampling import SamplingOptions, read_examples
    from adaptlab.structured import read_schema

    if not prompt.strip():  # refused before the model loads
        raise AdaptlabError("the prompt is empty or only whitespace; give the text to generate from")
    preflight({"device": device, "model": model}, decoder=True)
    if template is not None:
        if "{text}" not in template:
            raise AdaptlabError("--template must contain the {text} placeholder")
        prompt = template.replace("{text}", prompt)
    shots = read_examples(examples) if examples else []
    options = SamplingOptions(max_new_tokens, temperature, top_p, top_k, seed=seed)
    options.check()
    schema = read_schema(json_schema) if json_schema is not None else None
    from adaptlab.generation import Generator  # torch: imported once every option is checked

    generator = Generator(model, device)
    text = prompt if raw else generator.render_chat(prompt, system, shots)
    if stream:
        for piece in generator.stream(text, options, json_schema=schema):
            print(piece, end="", flush=True)
        print()
    else:
        print(generator.generate(text, options, json_schema=schema))


def merge(
    artifact: Annotated[Path, typer.Argument(help="A LoRA artifact.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the merged (full) artifact.")],
    overwrite: OverwriteOpt = False,
) -> None:
    """Fold a LoRA adapter into the base weights: a plain fine-tuned model, no PEFT needed to run it."""
    from adaptlab.merge import merge_lora

    manifest = merge_lora(artifact, output, overwrite=overwrite)
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


def predict(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `adaptlab train`.")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify (or use --file, or stdin).")] = None,
    file: Annotated[Optional[Path], typer.Option(help=".txt (one text per line) or .csv/.jsonl/.parquet file.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a tabular --file.")] = "text",
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: text, label, probabilities.", metavar="")] = False,
) -> None:
    """Classify texts with a trained artifact; prints each label with its probability."""
    from adaptlab.runner import load_artifact

    inputs = _input_texts(texts, file, text_column)  # a bad input file is refused before the model loads
    model = load_artifact(artifact, device=device, progress=False)
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


def embed(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed (or use --file / --data, or stdin).")] = None,
    file: Annotated[Optional[Path], typer.Option(help=".txt (one text per line) or .csv/.jsonl/.parquet file.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Embed every text of a dataset (named, file or Hub id).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a tabular --file or --data.")] = "text",
    model: Annotated[str, typer.Option(help="minilm, smollm2-135m, a Hub id or a local directory.")] = "minilm",
    pooling: Annotated[str, typer.Option(help="mean, cls or last.")] = "mean",
    normalize: Annotated[bool, typer.Option(help="Scale vectors to unit length (for cosine similarity).", metavar="")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: .npy (matrix) or .parquet (text + vector).")] = Path("embeddings.npy"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Embed texts with a frozen model, using and filling the on-disk embedding cache."""
    import numpy as np

    from adaptlab._io import atomic_file
    from adaptlab.data import read_texts
    from adaptlab.embeddings import Embedder

    from adaptlab.jobs import check_output

    if output.suffix not in {".npy", ".parquet"}:
        raise AdaptlabError(f"--output '{output}' must end in .npy or .parquet")
    preflight({"model": model, "precision": precision})
    check_output(output, overwrite, inputs=[p for p in (file, data) if p is not None])
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


def describe_data(
    data: DataOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    id_column: IdCol = None,
    seed: Seed = None,
    train_size: TrainSize = None,
    val_size: ValSize = None,
    test_size: TestSize = None,
    train_data: TrainData = None,
    val_data: ValData = None,
    test_data: TestData = None,
    keep_splits: KeepSplits = None,
    test_fraction: TestFraction = None,
    val_fraction: ValFraction = None,
) -> None:
    """Validate a dataset and show its labels and the train/validation/test split adaptlab would use."""
    from adaptlab.config import DataConfig

    values = {
        "source": data, "text_column": text_column, "label_column": label_column, "id_column": id_column,
        "seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size, "train_data": train_data,
        "val_data": val_data, "test_data": test_data, "keep_splits": keep_splits, "test_fraction": test_fraction,
        "val_fraction": val_fraction,
    }
    splits = DataConfig(**{k: v for k, v in values.items() if v is not None}).load()
    how = "your own splits" if splits.train.origins else f"stratified split, seed {splits.seed}"
    table = Table(title=f"{splits.train.source}: {how}")
    table.add_column("split")
    table.add_column("examples", justify="right")
    for label in splits.label_names:
        table.add_column(label, justify="right")
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        table.add_row(name, str(len(part)), *map(str, part.class_counts().values()))
    out.print(table)
