"""What every command module shares: the consoles, common option types, and options generated from the
parameter dataclasses (``adaptlab.params``), so help text and defaults are written once, next to the field."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from adaptlab.errors import AdaptlabError
from adaptlab.params import base_type, option_name, type_hints

out = Console()
err = Console(stderr=True)


def opt(kind, help: str, *flags: str):
    """An option that is None unless given; flags show as flags (no ``<bool>`` value in the help)."""
    return Annotated[Optional[kind], typer.Option(*flags, help=help, **({"metavar": ""} if kind is bool else {}))]


DataOpt = opt(str, "Named dataset (rotten_tomatoes, imdb, wiki-topics), a .csv/.jsonl/.parquet file, or a Hub dataset id.", "--data")
TextCol = opt(str, "Column holding the text (default: text).")
LabelCol = opt(str, "Column holding the label, strings or integers (default: label).")
IdCol = opt(str, "Optional column of unique example ids.")
Seed = opt(int, "Seed for the split and for training (default: 0).")
TrainSize = opt(int, "Sub-sample the training split to this many examples, stratified (default: all).")
ValSize = opt(int, "Sub-sample the validation split (default: all).")
TestSize = opt(int, "Sub-sample the test split (default: all).")
TrainData = opt(str, "Your own training split (a file, named dataset, Hub id or Hub NAME:SPLIT); needs --test-data.")
ValData = opt(str, "Your own validation split (default: cut from --train-data, --val-fraction of it).")
TestData = opt(str, "Your own test split, kept exactly as given (never trained on, never used for selection).")
KeepSplits = opt(bool, "Keep a Hub dataset's own train/validation/test splits instead of cutting adaptlab's.", "--keep-splits")
TestFraction = opt(float, "Share of the data cut as the test split (default: 0.2).")
ValFraction = opt(float, "Share of the data cut as the validation split (default: 0.1; of --train-data when that is given).")
ConfigOpt = opt(Path, "YAML file describing the run; options given here override it.", "--config")
OutputOpt = opt(str, "Artifact directory to write (default: runs/<data>-<strategy>).", "--output", "-o")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.", metavar="")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the artifact or file already at --output (refused otherwise).", metavar="")]
DEVICE = opt(str, "cpu, cuda, cuda:1 ... (default: cuda if available).")

# name -> (annotation, DataConfig field); None unless given, so YAML values survive.
DATA_OPTIONS = {
    "data": (DataOpt, "source"), "text_column": (TextCol, "text_column"), "label_column": (LabelCol, "label_column"),
    "id_column": (IdCol, "id_column"), "seed": (Seed, "seed"), "train_size": (TrainSize, "train_size"),
    "val_size": (ValSize, "val_size"), "test_size": (TestSize, "test_size"), "train_data": (TrainData, "train_data"),
    "val_data": (ValData, "val_data"), "test_data": (TestData, "test_data"), "keep_splits": (KeepSplits, "keep_splits"),
    "test_fraction": (TestFraction, "test_fraction"), "val_fraction": (ValFraction, "val_fraction"),
}


def dataclass_options(cls: type, exclude: tuple[str, ...] = (), first: tuple[type, ...] = ()) -> dict[str, Any]:
    """One ``typer`` option per command-line field of ``cls``, in declaration order: the command's own, then the
    adaptation methods' (``adaptlab.adapt.options``), then the fields of ``first`` (e.g. the shared training options),
    and runtime options last. Defaults are shown in the help, but every option's value is None unless given, so a
    YAML file's values are not overridden by defaults."""
    from adaptlab.adapt.options import METHOD_OPTIONS

    hints = type_hints(cls)
    adaptation = {f.name for base in METHOD_OPTIONS.values() if base and issubclass(cls, base) for f in dataclasses.fields(base)}
    later = {f.name for base in first for f in dataclasses.fields(base)}
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in exclude]
    # own, adaptation, shared, runtime
    group = lambda f: 3 if f.metadata.get("runtime") else (2 if f.name in later else (1 if f.name in adaptation else 0))
    fields = sorted(fields, key=group)
    options = {}
    for spec in fields:
        kind = base_type(hints[spec.name])
        cli_type = kind if kind in (int, float, bool) else str
        flag = spec.metadata.get("flag") or option_name(spec.name)
        flags = (f"{flag}/--no-{flag[2:]}",) if cli_type is bool else (flag,)
        default = spec.default if spec.default is not dataclasses.MISSING else None
        shown = "" if default is None or cli_type is bool and not default else f" (default: {default})"
        options[spec.name] = opt(cli_type, spec.metadata.get("help", "") + shown, *flags)
    return options


def command(name: str, doc: str, annotations: dict[str, Any], run: Callable[[dict], None], decoder: bool = False) -> Callable:
    """A typer command whose keyword options are ``annotations`` (defaulting to None, or False for plain flags
    such as ``--json``); ``run`` receives the values as a dict, after ``preflight`` (``decoder``: its --model
    must be a causal LM)."""
    flag = lambda annotation: typing.get_args(annotation)[:1] == (bool,)
    parameters = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                    default=False if flag(annotation) else None)
                  for key, annotation in annotations.items()]

    def function(**values) -> None:
        preflight(values, decoder)
        run(values)

    function.__signature__ = inspect.Signature(parameters)
    function.__annotations__ = dict(annotations)
    function.__doc__ = doc
    function.__name__ = name
    return function


def preflight(values: dict, decoder: bool = False) -> None:
    """The checks of options many commands share (--device, --precision, --model), run before a command imports
    torch or transformers (~3 s), so that a wrong value is one line at once."""
    from adaptlab.models.loading import check_model
    from adaptlab.runtime import Runtime

    if values.get("device") is not None or values.get("precision") is not None:
        Runtime(values.get("device"), values.get("precision") or "auto")
    if values.get("model") is not None:
        check_model(values["model"], decoder)


def default_output(output: str | Path | None, source: str | Path, what: str) -> str | Path:
    """``output`` if the user gave one (an empty one too: the output guard refuses it), else where a command writes
    when ``-o/--output`` is not given, the same rule everywhere: ``runs/<data>-<what>`` (``runs/rotten_tomatoes-lora``,
    ``runs/wiki-descriptions-sft-lora``, ``runs/prefs-reward-model``)."""
    return f"runs/{Path(str(source)).stem}-{what}" if output is None else output


STOP_REASONS = {"converged": "converged (validation stopped improving)", "step_cap": "stopped at the step/epoch cap",
                "time_cap": "stopped at the time cap (--max-minutes)"}


def stop_reason(training: dict) -> str:
    """How a run ended, in words (older artifacts do not record it)."""
    return STOP_REASONS.get(training.get("stopped"), "stop reason not recorded")


def given(values: dict) -> dict:
    """The options the user set (None means not given)."""
    return {k: v for k, v in values.items() if v is not None}


def format_params(cost: dict) -> str:
    trainable, total = cost["trainable_params"], cost.get("total_params")
    if not total:
        return f"{trainable:,}"
    return f"{trainable:,} ({100 * trainable / total:.3g}%)"


def check_can_listen(host: str, port: int) -> None:
    """Bind the address once before loading any model, so a port in use or an unknown host is one line (exit 2),
    not uvicorn's own message and exit code 3 after the models have loaded."""
    import socket

    if not host.strip():
        raise AdaptlabError("--host is empty; give an interface such as 127.0.0.1 (this machine) or 0.0.0.0 (the network)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise AdaptlabError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None
