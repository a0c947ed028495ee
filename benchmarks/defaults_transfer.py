"""Do the comparison's defaults hold on tasks they were not chosen on? The untuned quick ladder on minilm, trained to
its budget and started from the probe (LP-FT), on three classification tasks:

- Rotten Tomatoes (binary sentiment; the quick preset as `make demo` runs it, both default models, so its wall time
  is the demo's);
- wiki-topics (the packaged Wikipedia openings, 11 topics);
- CLINC150 (150 intents, 10 labelled examples per class drawn from its train split, 5 per class from its validation
  split, tested on its own 4,500-query in-scope test split; `../shared/data/clinc150_data_full.json.gz`).

Per task, `worst_gradient_gap_to_probe` = features-logreg accuracy minus the worst of head / last-k / full / lora:
fine-tuning that starts from the probe must not end below it by more than noise (target <= 0.02).

    python benchmarks/defaults_transfer.py [--tasks rotten_tomatoes,wiki-topics,clinc150] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile
from pathlib import Path

from _common import RESULTS, save

TARGET_GAP = 0.02
GRADIENT = ("head", "last-k", "full", "lora")
CLINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinc150_data_full.json.gz"


def clinc_file(workdir: Path, per_class: int = 10, val_per_class: int = 5, seed: int = 0) -> Path:
    """CLINC150 in-scope as one CSV with its own splits (a `split` column): few labels per class to train on."""
    import pandas as pd

    data = json.loads(gzip.decompress(CLINC.read_bytes()))
    rng, rows = random.Random(seed), []
    for split, take in (("train", per_class), ("val", val_per_class), ("test", None)):
        by_intent: dict[str, list[str]] = {}
        for text, intent in data[split]:
            by_intent.setdefault(intent, []).append(text)
        for intent, texts in sorted(by_intent.items()):
            chosen = texts if take is None else rng.sample(texts, take)
            rows += [{"text": t, "label": intent, "split": split} for t in chosen]
    path = workdir / "clinc150-10-per-class.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


TASKS = {  # task -> (data source maker, sizes, models)
    "rotten_tomatoes": (lambda w: "rotten_tomatoes", {}, ["minilm", "smollm2-135m"]),
    "wiki-topics": (lambda w: "wiki-topics", {}, ["minilm"]),
    "clinc150": (clinc_file, {"train_size": 1500, "val_size": 750, "test_size": 4500}, ["minilm"]),
}


def run_task(task: str, workdir: Path) -> tuple[list[dict], dict]:
    from adaptlab.compare import ComparePlan, run_comparison
    from adaptlab.config import DataConfig

    make, sizes, models = TASKS[task]
    plan = ComparePlan(data=DataConfig(source=str(make(workdir)), **sizes), preset="quick", models=models,
                       output=str(workdir / task))
    results = run_comparison(plan).results
    rows = [{"task": task, "entry": e["entry"], "model": e["model"], "accuracy": e["accuracy"]["mean"],
             "ci95": e["accuracy"]["ci95"], "macro_f1": e["macro_f1"]["mean"],
             "stopped": (e.get("stopped") or [None])[0], "steps": (e.get("steps") or [None])[0],
             "train_seconds": e["train_seconds"]} for e in results["entries"]]
    minilm = {r["entry"]: r for r in rows if r["model"] == "minilm"}
    worst = min(GRADIENT, key=lambda name: minilm[name]["accuracy"])
    summary = {"task": task, "sizes": results["data"]["sizes"], "wall_seconds": results["wall_seconds"],
               "probe_accuracy": minilm["features-logreg"]["accuracy"], "worst_gradient_entry": worst,
               "worst_gradient_gap_to_probe": round(minilm["features-logreg"]["accuracy"] - minilm[worst]["accuracy"], 4),
               "failures": results["failures"], "recommendation": results["recommendation"]}
    summary["target_met"] = summary["worst_gradient_gap_to_probe"] <= TARGET_GAP
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--workdir", help="keep (and resume) the comparisons here (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="adaptlab-defaults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "defaults_transfer.json"
    earlier = json.loads(out.read_text()) if out.exists() else {"rows": [], "tasks": []}
    rows, tasks = [], []
    for task in args.tasks.split(","):
        task_rows, summary = run_task(task.strip(), workdir)
        rows += task_rows
        tasks.append(summary)
    done = {t["task"] for t in tasks}  # a run of some tasks keeps the stored others (each says when it ran)
    rows = [r for r in earlier["rows"] if r["task"] not in done] + rows
    tasks = [t for t in earlier["tasks"] if t["task"] not in done] + tasks
    rt = next((t for t in tasks if t["task"] == "rotten_tomatoes"), None)
    from adaptlab.compare.plan import PRESETS

    quick = PRESETS["quick"]
    save("defaults_transfer", {
        "setup": {"preset": "quick", "tuned": False, "head_start": "probe (LP-FT)", "target_gap": TARGET_GAP,
                  "threads": os.environ.get("OMP_NUM_THREADS", "all"),
                  "budget": {k: getattr(quick, k) for k in ("max_steps", "patience", "max_minutes", "max_epochs")}},
        "rows": rows, "tasks": tasks,
        "all_targets_met": all(t["target_met"] for t in tasks),
        "rotten_tomatoes_quick_wall_minutes": None if rt is None else round(rt["wall_seconds"] / 60, 1),
    })


if __name__ == "__main__":
    main()
