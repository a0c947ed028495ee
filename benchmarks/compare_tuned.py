"""A fair comparison on a many-class task: the quick ladder with and without `compare --tune`, side by side.

The ladder's defaults were chosen on binary sentiment. On `wiki-topics` (the packaged Wikipedia openings -> one of
11 topics) the quick preset runs the encoder ladder on minilm twice in one go: untuned (every entry's defaults)
and with `--tune N` (each gradient entry's learning rate, epochs and LoRA rank chosen on validation before its
run is trained and tested once). Rows: strategy, tuned, test accuracy, macro-F1, final training seconds and
tuning seconds (apart; the comparison's own train time adds them).

    python benchmarks/compare_tuned.py [--trials 3] [--data wiki-topics] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

TARGET_GAP = 0.10  # with tuning, every gradient entry's macro-F1 within 10 points of the best entry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--data", default="wiki-topics")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "adaptlab-tuned-bench"))
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))

    from adaptlab.compare import ComparePlan, run_comparison
    from adaptlab.compare.tuning import TUNED_STRATEGIES
    from adaptlab.config import DataConfig

    rows, runs, tuned_entries = [], {}, []
    for tuned in (False, True):
        plan = ComparePlan(data=DataConfig(source=args.data), preset="quick", models=["minilm"],
                           tune=args.trials if tuned else 0, output=os.path.join(args.workdir, "tuned" if tuned else "untuned"))
        results = run_comparison(plan).results
        tuned_entries = results["entries"]  # the last comparison run is the tuned one
        runs["tuned" if tuned else "untuned"] = {"wall_seconds": results["wall_seconds"], "failures": results["failures"],
                                                 "recommendation": results["recommendation"], "data": results["data"]}
        for e in results["entries"]:
            rows.append({
                "strategy": e["entry"], "model": e["model"], "tuned": bool(e.get("tuning")),
                "test_accuracy": e["accuracy"]["mean"], "ci95": e["accuracy"]["ci95"], "macro_f1": e["macro_f1"]["mean"],
                "train_seconds": e["final_train_seconds"], "tuning_seconds": e["tuning_seconds"],
                "chosen": e["tuning"]["best"] if e.get("tuning") else None,
                "trials": [{k: t[k] for k in ("params", "state", "val_macro_f1", "val_accuracy", "seconds")}
                           for t in e["tuning"]["trials"]] if e.get("tuning") else None,
            })
    # the best entry of the tuned comparison (its untuned entries, features + logistic regression..., ran as is)
    best = max(e["macro_f1"]["mean"] for e in tuned_entries)
    behind = [r["strategy"] for r in rows if r["tuned"] and best - r["macro_f1"] > TARGET_GAP]
    gradient = sorted({r["strategy"] for r in rows if r["tuned"]})
    save("compare_tuned", {
        "setup": {"data": args.data, "preset": "quick", "models": ["minilm"], "trials": args.trials,
                  "tuned_strategies": list(TUNED_STRATEGIES), "objective": "validation macro-F1",
                  "search_space": "lr: a tenth to ten times the entry's default (log); epochs: 3 to 9; LoRA r: 4 to 16"},
        "runs": runs,
        "results": rows,
        "target": {"gap": TARGET_GAP, "best_macro_f1_with_tuning": best, "gradient_strategies": gradient,
                   "more_than_gap_behind": behind, "met": not behind},
    })


if __name__ == "__main__":
    main()
