"""What `make demo` measured: the quick comparison's wall time and leaderboard, stamped with the machine it ran on.

`make demo` runs ``adaptlab compare --data rotten_tomatoes --preset quick`` and then this script on its output, so
the README's demo table is always the last demo's, with its CPU (``cpu_model``, the flags that change CPU timings)
and library versions. ``wall_seconds`` is the comparison's own clock (every process start, model load, training,
evaluation and report; not the install); ``run_seconds`` per entry is its worker process's wall time.

    python benchmarks/compare_quick_demo.py [runs/demo-compare]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import cpu, save

TARGET_SECONDS = 600


def run_seconds(output: Path) -> dict[tuple[str, str], float]:
    """Worker wall time per (entry, model), summed over its seeds."""
    seconds: dict[tuple[str, str], float] = {}
    for path in output.glob("runs/*/*/seed-*/result.json"):
        result = json.loads(path.read_text(encoding="utf-8"))
        key = (path.parts[-3], path.parts[-4].rsplit("-", 1)[0])
        seconds[key] = seconds.get(key, 0.0) + result["wall_seconds"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", nargs="?", default="runs/demo-compare", help="the comparison's output directory")
    args = parser.parse_args()
    output = Path(args.output)
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    per_run = run_seconds(output)
    leaderboard = [{"entry": e["entry"], "model": e["model"], "accuracy": e["accuracy"]["mean"],
                    "ci95": e["accuracy"].get("ci95"), "macro_f1": e["macro_f1"]["mean"],
                    "train_seconds": e["train_seconds"], "run_seconds": per_run.get((e["entry"], e["model"])),
                    "stopped": (e.get("stopped") or [None])[0], "lr_chosen": (e.get("lr_chosen") or [None])[0]}
                   for e in results["entries"]]
    save("compare_quick_demo", {
        "command": "adaptlab compare --data rotten_tomatoes --preset quick",
        "cpu_model": cpu()["cpu_model"],
        "wall_seconds": results["wall_seconds"],
        "wall_minutes": round(results["wall_seconds"] / 60, 1),
        "target_seconds": TARGET_SECONDS,
        "target_met": results["wall_seconds"] <= TARGET_SECONDS,
        "sizes": results["data"].get("sizes"),
        "leaderboard": leaderboard,
        "failures": results["failures"],
        "recommendation": results["recommendation"],
    })


if __name__ == "__main__":
    main()
