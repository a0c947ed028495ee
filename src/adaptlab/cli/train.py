"""``adaptlab train STRATEGY``: the classifier family's commands, one per strategy (built-in or a registered PEFT
method), its options generated from the strategy's parameter fields (help text and defaults live next to the field,
in ``adaptlab.methods``)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from adaptlab.cli.common import (DATA_OPTIONS, ConfigOpt, JsonOpt, OutputOpt, OverwriteOpt, command, dataclass_options,
                                 default_output, format_params, given, out, stop_reason)
from adaptlab.methods import all_strategies
from adaptlab.training.options import TrainingOptions

def run_training(strategy: str, values: dict) -> None:
    from adaptlab.config import train_config
    from adaptlab.jobs import check_output

    data_values = {target: values.pop(name) for name, (_, target) in DATA_OPTIONS.items()}
    config_path, output, as_json, overwrite = values.pop("config"), values.pop("output"), values.pop("as_json"), values.pop("overwrite")
    config = train_config(strategy, config_path, data_values, given(values), output)
    output = default_output(config.output, config.data.source, strategy)
    check_output(output, overwrite, inputs=[config.data.source, config.params.get("model")], trains=True)
    splits = config.data.load()  # bad data is reported before the model libraries load

    from adaptlab.runner import train

    result = train(strategy, splits, output, overwrite=overwrite, **config.params)
    if not result.manifest:  # a secondary process of multi-process training: rank 0 reports
        return
    if as_json:
        print(json.dumps({"artifact": str(result.artifact), **{k: result.manifest[k] for k in ("metrics", "cost")}}, indent=2))
        return
    print_result(result)


def print_result(result) -> None:
    manifest = result.manifest
    test, cost, sizes = manifest["metrics"]["test"], manifest["cost"], manifest["data"]["sizes"]
    table = Table(title=f"{manifest['strategy']} on {manifest['data']['source']} ({manifest['base_model']['name']})")
    for column in ("test acc", "macro-F1", "val acc", "trainable params", "train time", "peak RSS", "size"):
        table.add_column(column, justify="right")
    table.add_row(f"{test['accuracy']:.4f}", f"{test['macro_f1']:.4f}", f"{manifest['metrics']['val']['accuracy']:.4f}",
                  format_params(cost), f"{cost['train_seconds']:.1f} s", f"{cost['peak_rss_mb']:.0f} MB",
                  f"{manifest['size_bytes'] / 1024:.0f} KiB")
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
        best = "" if training["best_epoch"] is None else (f", best epoch {training['best_epoch'] + 1}" if training["best_epoch"] >= 0
                                                          else ", kept the starting weights") + f" (val acc {training['best_val_acc']:.4f})"
        resumed = "" if training["resumed_from_epoch"] is None else f", resumed at epoch {training['resumed_from_epoch'] + 1}"
        out.print(f"trained {manifest['strategy']}: {training['epochs_run']} epochs, {training['steps']} steps{best}{resumed}, "
                  f"{training['samples_per_second']:.0f} samples/s, {training['seconds']:.1f} s; {stop_reason(training)}")


def add_commands(app: typer.Typer) -> None:
    """``train NAME`` for every classifier strategy."""
    for name, cls in all_strategies().items():
        # --seed is the data option (it seeds the split and, by default, training)
        own = dataclass_options(cls, exclude=("seed",), first=(TrainingOptions,))
        annotations = {**{k: a for k, (a, _) in DATA_OPTIONS.items()}, **own,
                       "config": ConfigOpt, "output": OutputOpt, "overwrite": OverwriteOpt, "as_json": JsonOpt}
        app.command(name)(command(f"train_{name.replace('-', '_')}", cls.description, annotations,
                                  lambda values, name=name: run_training(name, values), decoder=cls.needs_decoder))
