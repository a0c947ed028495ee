"""``adaptlab compare``: every strategy on one split, ranked on quality and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adaptlab.cli.common import (DEVICE, DataOpt, IdCol, JsonOpt, KeepSplits, LabelCol, TestData, TestFraction, TextCol, TrainData,
                                 ValData, ValFraction, out, preflight)


def compare(
    data: DataOpt = None,
    text_column: TextCol = None,
    label_column: LabelCol = None,
    id_column: IdCol = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the data split, the same split for every run (default: 0).")] = None,
    train_size: Annotated[Optional[int], typer.Option(help="Training examples, stratified (default: the preset's).")] = None,
    val_size: Annotated[Optional[int], typer.Option(help="Validation examples (default: the preset's).")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Test examples (default: the preset's).")] = None,
    train_data: TrainData = None,
    val_data: ValData = None,
    test_data: TestData = None,
    keep_splits: KeepSplits = None,
    test_fraction: TestFraction = None,
    val_fraction: ValFraction = None,
    task: Annotated[Optional[str], typer.Option(help="classification or generation (default: generation for prompt/completion or chat data, e.g. wiki-descriptions).")] = None,
    prompt_column: Annotated[Optional[str], typer.Option(help="Generation data: column with the prompt (default prompt).")] = None,
    completion_column: Annotated[Optional[str], typer.Option(help="Generation data: column with the reply (default completion).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="quick (default; < 15 min on 2 CPU cores), standard or full: data sizes, epochs, draws.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models (default minilm,smollm2-135m): classifier strategies run on the encoders, prompting on the causal LMs.")] = None,
    strategies: Annotated[Optional[str], typer.Option(help="Comma-separated subset of the ladder. Classification: zero-shot, few-shot, features-logreg, features-rf, head, last-k, full, lora, prefix-tuning, p-tuning, prompt-tuning, soft-prompt. Generation: zero-shot, few-shot, knn-shot, rag, prompt-tuning, prefix-tuning, lora, last-k, full, dpo.")] = None,
    train_sizes: Annotated[Optional[str], typer.Option(help="Learning curves: the ladder at each training size, e.g. 8,16,32,64,all (examples per class for classification, rows for generation), on one test set; the report draws quality vs size and says which entry to use at which budget.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Training seeds per strategy: mean ± std, the split stays the same (default: 1).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs for every gradient-based strategy (default: the preset's).")] = None,
    tune: Annotated[Optional[int], typer.Option(help="Classification: trials of learning-rate / epochs (/ LoRA rank) search per gradient entry, scored on validation only (default: the preset's: quick 0, standard 4, full 6).")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Generation: rouge_l (default), token_f1 or exact_match ranks the entries and decides ties.")] = None,
    documents: Annotated[Optional[list[str]], typer.Option("--documents", help="Generation: files, folders, wikipedia or an existing store; adds the rag entry.")] = None,
    preferences: Annotated[Optional[str], typer.Option(help="Generation: preference pairs (JSONL/CSV/feedback export); adds dpo after lora.")] = None,
    reward: Annotated[Optional[list[str]], typer.Option("--reward", help="Generation: a reward function for the grpo entry (as rlhf grpo --reward; repeat to combine); adds grpo after lora.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a strategy parameter: ENTRY.PARAM=VALUE, e.g. lora.r=16, all.batch_size=16.")] = None,
    device: DEVICE = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file describing the comparison; options given here override it.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Directory for runs, results.json and report.html (default: runs/<data>-compare).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every adaptation strategy on one split and rank them: quality, cost (and for generation, forgetting),
    a report with plots. Classification data get the classifier ladder, prompt/completion or chat data the
    generation ladder (prompting, retrieval, SFT methods, DPO).

    Re-running the same command skips finished runs and resumes an interrupted one."""
    from adaptlab.compare import compare_plan, run_comparison
    from adaptlab.compare.plan_file import parse_overrides

    data_values = {"source": data, "text_column": text_column, "label_column": label_column, "id_column": id_column,
                   "prompt_column": prompt_column, "completion_column": completion_column,
                   "seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size,
                   "train_data": train_data, "val_data": val_data, "test_data": test_data, "keep_splits": keep_splits,
                   "test_fraction": test_fraction, "val_fraction": val_fraction}
    options = {"task": task, "preset": preset, "models": models, "strategies": strategies, "seeds": seeds, "epochs": epochs,
               "tune": tune, "metric": metric, "documents": documents or None, "preferences": preferences, "reward": reward or None,
               "device": device, "output": output, "params": parse_overrides(set_ or []), "train_sizes": train_sizes}
    plan = compare_plan(config, data_values, options)
    for model in plan.models or []:  # every model checked before the first one loads
        preflight({"model": model, "device": plan.device})
    comparison = run_comparison(plan)
    if as_json:
        print(json.dumps(comparison.results, indent=2))
        if comparison.results["failures"]:
            raise typer.Exit(1)
        return
    from adaptlab.families import resolve

    wide = Console(width=max(out.width, 140))  # the leaderboards have 11-15 columns; let a narrow pipe wrap lines
    if "learning_curves" in comparison.results:
        from adaptlab.compare.curves import curve_table

        wide.print(curve_table(comparison.results))
    else:
        wide.print(resolve(plan.kind.leaderboard)(comparison.results))
    for line in comparison.results["recommendation"]:
        out.print(f"• {line}")
    for failure in comparison.results["failures"]:
        out.print(f"[red]failed: {failure['entry']} ({failure['model']}): {failure['errors'][-1]}[/]")
    out.print(f"report: {comparison.report.resolve()}  (results: {comparison.output / 'results.json'})")
    if comparison.results["failures"]:  # the report is written, but a script must see that runs failed
        raise typer.Exit(1)
