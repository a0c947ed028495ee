"""``adaptlab compare``: every strategy on one split, ranked on quality and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adaptlab.cli.common import DEVICE, DataOpt, IdCol, JsonOpt, LabelCol, TestSize, TextCol, TrainSize, ValSize, out


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
