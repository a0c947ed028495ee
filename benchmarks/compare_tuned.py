"""A fair comparison: the ladder with and without `compare --tune`, side by side in one run.

The ladder's defaults were chosen on binary sentiment. On `wiki-topics` (the packaged Wikipedia openings -> one of
11 topics) the quick preset runs the encoder ladder on minilm twice in one go: untuned (every entry's defaults)
and with `--tune N` (each gradient entry's learning rate, epochs and LoRA rank chosen on validation before its
run is trained and tested once). Rows: strategy, tuned, test accuracy, macro-F1, final training seconds and
tuning seconds (apart; the comparison's own train time adds them). Target: with tuning, every gradient entry's
macro-F1 within 10 points of the best entry.

On Rotten Tomatoes, where the defaults were chosen, tuning should change nothing that matters: `--data
rotten_tomatoes --presets quick,standard` runs both presets with and without tuning and checks that every tuned
entry's test accuracy lies within (or above) the untuned entry's 95% interval (`compare_tuned_rotten_tomatoes.json`).

    python benchmarks/compare_tuned.py [--trials 3] [--data wiki-topics] [--presets quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

TARGET_GAP = 0.10  # with tuning, every gradient entry's macro-F1 within 10 points of the best entry
QUICK_TRIALS = 3  # the quick preset runs untuned by default; here it gets the suggested 3 trials


def compare(data: str, preset: str, tune: int, output: str) -> dict:
    from adaptlab.compare import ComparePlan, run_comparison
    from adaptlab.config import DataConfig

    plan = ComparePlan(data=DataConfig(source=data), preset=preset, models=["minilm"], tune=tune, output=output)
    return run_comparison(plan).results


def rows_of(results: dict, preset: str, comparison: str) -> list[dict]:
    return [{
        "preset": preset, "comparison": comparison, "strategy": e["entry"], "model": e["model"], "tuned": bool(e.get("tuning")),
        "test_accuracy": e["accuracy"]["mean"], "ci95": e["accuracy"]["ci95"], "macro_f1": e["macro_f1"]["mean"],
        "train_seconds": e["final_train_seconds"], "tuning_seconds": e["tuning_seconds"],
        "chosen": e["tuning"]["best"] if e.get("tuning") else None,
        "trials": [{k: t[k] for k in ("params", "state", "val_macro_f1", "val_accuracy", "seconds")}
                   for t in e["tuning"]["trials"]] if e.get("tuning") else None,
    } for e in results["entries"]]


def run_summary(results: dict) -> dict:
    return {k: results[k] for k in ("wall_seconds", "failures", "recommendation", "data")}


def gap_target(rows: list[dict]) -> dict:
    """Every tuned entry within TARGET_GAP macro-F1 of the best entry of its preset's tuned comparison."""
    best = {}
    for r in rows:
        if r["comparison"] == "tuned":
            best[r["preset"]] = max(best.get(r["preset"], 0.0), r["macro_f1"])
    behind = [f"{r['preset']}/{r['strategy']}" for r in rows if r["tuned"] and best[r["preset"]] - r["macro_f1"] > TARGET_GAP]
    return {"gap": TARGET_GAP, "best_macro_f1_with_tuning": best,
            "gradient_strategies": sorted({r["strategy"] for r in rows if r["tuned"]}),
            "more_than_gap_behind": behind, "met": not behind}


def interval_target(rows: list[dict]) -> dict:
    """Every tuned entry's test accuracy at or above the lower end of its untuned run's 95% interval."""
    untuned = {(r["preset"], r["strategy"]): r for r in rows if not r["tuned"]}
    checks = []
    for r in rows:
        if r["tuned"]:
            base = untuned[(r["preset"], r["strategy"])]
            checks.append({"preset": r["preset"], "strategy": r["strategy"], "untuned": base["test_accuracy"],
                           "untuned_ci95": base["ci95"], "tuned": r["test_accuracy"],
                           "within_or_above": r["test_accuracy"] >= base["ci95"][0]})
    return {"rule": "tuned test accuracy >= lower end of the untuned entry's 95% interval", "checks": checks,
            "met": all(c["within_or_above"] for c in checks)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=None,
                        help=f"trials per gradient entry (default: quick {QUICK_TRIALS}, otherwise the preset's own)")
    parser.add_argument("--data", default="wiki-topics")
    parser.add_argument("--presets", default="quick", help="comma-separated: quick, standard")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "adaptlab-tuned-bench"))
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    from adaptlab.compare.plan import PRESETS
    from adaptlab.compare.tuning import TUNED_STRATEGIES

    presets = args.presets.split(",")
    several = len(presets) > 1
    rows, runs, trials = [], {}, {}
    for preset in presets:
        trials[preset] = args.trials or (QUICK_TRIALS if preset == "quick" else PRESETS[preset].tune)
        for tuned in (False, True):
            name = ("tuned" if tuned else "untuned") if not several else f"{preset}-{'tuned' if tuned else 'untuned'}"
            results = compare(args.data, preset, trials[preset] if tuned else 0, os.path.join(args.workdir, name))
            runs[name] = run_summary(results)
            rows += rows_of(results, preset, "tuned" if tuned else "untuned")
    setup = {"data": args.data, "preset": presets[0] if not several else presets, "models": ["minilm"],
             "trials": trials[presets[0]] if not several else trials, "tuned_strategies": list(TUNED_STRATEGIES),
             "objective": "validation macro-F1",
             "search_space": "lr: a tenth to ten times the entry's default (log); epochs: the planned count to three "
                             "times it; LoRA r: 4 to 16",
             "start": "trial 0: the entry's own settings; trials 1-2: lr halfway (log) to each bound; then TPE",
             "pruning": "median of earlier trials at the same epoch, from half the entry's planned epochs on"}
    # both targets for any data; the one the issue sets: the gap on wiki-topics, the intervals on Rotten Tomatoes
    targets = {"gap": gap_target(rows), "interval": interval_target(rows)}
    name = "compare_tuned" if args.data == "wiki-topics" else f"compare_tuned_{args.data}"
    save(name, {"setup": setup, "runs": runs, "results": rows, "target": targets["gap" if args.data == "wiki-topics" else "interval"],
                "targets": targets})


if __name__ == "__main__":
    main()
