"""``adaptlab sft``: supervised fine-tuning of causal LMs (``train``, options generated from ``SFTJob``) and
prompting baselines on the same task and metrics (``eval``: zero-shot, k-shot, or any generator artifact)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from adaptlab.cli.common import (JsonOpt, OverwriteOpt, TestData, TrainData, ValData, command, preflight, dataclass_options,
                                 default_output, format_params, given, opt, out, stop_reason)
from adaptlab.sft.job import SFTJob
from adaptlab.training.options import TrainingOptions

# name -> (annotation, GenerationDataConfig field); None unless given, so YAML values survive
DATA_OPTIONS = {
    "data": opt(str, "wiki-descriptions, wikipedia, a .jsonl/.csv/.parquet/.txt file, a folder of .txt, or a Hub id.", "--data"),
    "prompt_column": opt(str, "Column holding the prompt (default prompt)."),
    "completion_column": opt(str, "Column holding the completion (default completion)."),
    "messages_column": opt(str, "Column holding chat messages (default messages)."),
    "text_column": opt(str, "Column holding plain text (default text)."),
    "system": opt(str, "System message put before every prompt/completion example."),
    "seed": opt(int, "Seed for the split and for training (default: 0)."),
    "train_size": opt(int, "Sub-sample the training split (default: all)."),
    "val_size": opt(int, "Sub-sample the validation split (default: all)."),
    "test_size": opt(int, "Sub-sample the test split (default: all)."),
    "train_data": TrainData, "val_data": ValData, "test_data": TestData,
    "test_fraction": opt(float, "Share of the example groups cut as the test split (default: 0.1)."),
    "val_fraction": opt(float, "Share cut as the validation split (default: 0.1; of --train-data when that is given)."),
}
CONFIG = opt(str, "YAML file with data/params/output sections; options given here override it.", "--config")
OUTPUT = opt(str, "Artifact directory to write (default: runs/<data>-sft-<method>).", "--output", "-o")


def train(values: dict) -> None:
    from adaptlab.config import sft_config
    from adaptlab.jobs import check_output
    from adaptlab.sft import train_sft

    data = {name: values.pop(name) for name in DATA_OPTIONS}
    config_path, output, as_json, overwrite = values.pop("config"), values.pop("output"), values.pop("as_json"), values.pop("overwrite")
    config = sft_config(config_path, data, given(values), output)
    SFTJob(**config.params)  # a bad option fails before the data is read
    output = default_output(config.output, config.data.source, f"sft-{config.params.get('method', 'lora')}")
    check_output(output, overwrite, inputs=[config.data.source, config.params.get("model")], trains=True)
    splits = config.data.load()
    manifest = train_sft(splits, output, overwrite=overwrite, **config.params).manifest
    if not manifest:  # a secondary process of multi-process training: rank 0 reports
        return
    if as_json:
        print(json.dumps({"artifact": str(output), **{k: manifest[k] for k in ("metrics", "cost")}}, indent=2))
        return
    print_generation_result(manifest, str(output))


def print_generation_result(manifest: dict, artifact: str | None) -> None:
    """The metrics table, forgetting, and a few samples (model output is escaped: it is untrusted text)."""
    metrics, cost = manifest["metrics"], manifest.get("cost") or {}
    test = metrics["test"]
    title = f"{manifest['strategy']} {manifest['params'].get('method', '')} on {manifest['data']['source']} ({manifest['base_model']['name']})"
    table = Table(title=escape(title))
    columns = [("test loss", "loss", "{:.4f}"), ("perplexity", "perplexity", "{:.2f}"), ("ROUGE-L", "rouge_l", "{:.4f}"),
               ("token F1", "token_f1", "{:.4f}"), ("exact match", "exact_match", "{:.4f}"),
               ("mean length", "mean_length", "{:.1f}"), ("stopped", "stopped", "{:.0%}")]
    shown = [(header, key, fmt) for header, key, fmt in columns if test.get(key) is not None]
    for header, _, _ in shown:
        table.add_column(header, justify="right")
    extra = [("trainable params", format_params(cost)), ("train time", f"{cost['train_seconds']:.1f} s")] if cost.get("train_seconds") is not None else []
    for header, _ in extra:
        table.add_column(header, justify="right")
    table.add_row(*[fmt.format(test[key]) for _, key, fmt in shown], *[value for _, value in extra])
    out.print(table)
    forgetting = metrics.get("forgetting")
    if forgetting:
        before, after = forgetting["before"], forgetting["after"]
        out.print(f"forgetting: general-text perplexity {before['general_ppl']:.2f} -> {after['general_ppl']:.2f} "
                  f"({forgetting['general_ppl_relative']:+.1%}); zero-shot Rotten Tomatoes accuracy "
                  f"{before['rt_accuracy']:.3f} -> {after['rt_accuracy']:.3f} ({forgetting['rt_accuracy_delta']:+.3f})")
    samples = (manifest.get("details") or {}).get("samples") or []
    if samples:
        sample_table = Table(title="samples (test)")
        for column in ("prompt", "reference", "output"):
            sample_table.add_column(column, overflow="fold")
        for row in samples:
            prompt = row["prompt"] if len(row["prompt"]) <= 90 else row["prompt"][:87] + "..."
            sample_table.add_row(escape(prompt), escape(row["reference"]), escape(row["output"]))
        out.print(sample_table)
    training = manifest.get("training")
    if training:
        tokens = f", {training['tokens_per_second']:.0f} tokens/s" if training.get("tokens_per_second") else ""
        best = "kept the starting weights" if (training["best_epoch"] or 0) < 0 else f"best epoch {(training['best_epoch'] or 0) + 1}"
        out.print(f"trained {training['epochs_run']} epochs, {training['steps']} steps, {best} "
                  f"(val loss {training['best_val_loss']:.4f}){tokens}; {stop_reason(training)}")
    if artifact:
        out.print(f"artifact: {escape(artifact)}  (generate with: adaptlab generate --model {escape(artifact)} \"...\")")


def evaluate(
    data: Annotated[Optional[str], typer.Option("--data", help="The task, as for `sft train`.")] = None,
    model: Annotated[str, typer.Option(help="Causal LM or generator artifact to evaluate.")] = "smollm2-135m",
    shots: Annotated[int, typer.Option(help="Demonstrations from the training split, given as earlier chat turns.")] = 0,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed for the split and the demonstration draw.")] = 0,
    test_size: Annotated[Optional[int], typer.Option(help="Sub-sample the test split.")] = None,
    max_new_tokens: Annotated[int, typer.Option(max=4096, help="Most tokens per reply.")] = 48,
    system: Annotated[Optional[str], typer.Option(help="System message for prompt/completion data.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda ... (default: cuda if available).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a model without training it (zero-shot or k-shot prompting) on a task's test split, with the
    metrics `sft train` reports: the baseline every fine-tuning run should beat."""
    from adaptlab.errors import AdaptlabError
    from adaptlab.sft.prompting import evaluate_prompting

    if data is None:
        raise AdaptlabError("--data is required (e.g. --data wiki-descriptions)")
    if shots < 0 or max_new_tokens < 1:
        raise AdaptlabError("--shots must be >= 0 and --max-new-tokens >= 1")
    preflight({"device": device, "model": model}, decoder=True)
    from adaptlab.data.generation import load_generation_splits

    splits = load_generation_splits(data, seed=seed, test_size=test_size, system=system)
    result = evaluate_prompting(model, splits, shots=shots, seed=seed, max_new_tokens=max_new_tokens, device=device)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print_generation_result(result, None)


def add_train(app: typer.Typer) -> None:
    """The sft family's command: ``sft train``."""
    own = dataclass_options(SFTJob, exclude=("seed",), first=(TrainingOptions,))
    annotations = {**DATA_OPTIONS, **own, "config": CONFIG, "output": OUTPUT, "overwrite": OverwriteOpt, "as_json": JsonOpt}
    doc = ("Fine-tune a causal LM (full, last-k, LoRA, prefix or prompt tuning) and measure replies, perplexity and "
           "forgetting; writes an artifact that `generate`, `serve`, `rag ask`, `merge` and `rlhf` accept.")
    app.command("train")(command("sft_train", doc, annotations, train, decoder=True))


def add_tools(app: typer.Typer) -> None:
    """The group's own command: ``sft eval`` (prompting baselines and any generator artifact)."""
    app.command("eval")(evaluate)
