"""How long the command line takes to answer before any model work: a validation error, --help, `models`.

Each command runs as a fresh process (what a user types), 7 times; the median is reported. The baselines run
side by side in the same script: a bare interpreter (`python -c pass`, the floor) and `python -c "import torch"`
(what every command paid before the model libraries were imported lazily). Target: under 2 s each.

    python benchmarks/startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import save

RUNS = 7
COMMANDS = {
    "validation_error_seconds": ["train", "features", "--data", "missing.csv"],
    "help_seconds": ["--help"],
    "models_seconds": ["models"],
    "train_help_seconds": ["train", "lora", "--help"],
    "sft_validation_error_seconds": ["sft", "train", "--data", "missing.jsonl"],
    "rlhf_validation_error_seconds": ["rlhf", "reward", "--data", "missing.jsonl", "-o", "rm"],
    "predict_missing_artifact_seconds": ["predict", "no-such-artifact", "text"],
    "serve_missing_artifact_seconds": ["serve", "no-such-artifact"],
}


def median_seconds(argv: list[str], cwd: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    cwd = tempfile.mkdtemp(prefix="adaptlab-startup-")
    adaptlab = str(Path(sys.executable).with_name("adaptlab"))
    baseline = {"python_seconds": median_seconds([sys.executable, "-c", "pass"], cwd),
                "import_torch_seconds": median_seconds([sys.executable, "-c", "import torch"], cwd)}
    measured = {name: median_seconds([adaptlab, *argv], cwd) for name, argv in COMMANDS.items()}
    slowest = max(measured.values())
    save("startup", {
        "runs_per_command": RUNS, "commands": {name: " ".join(["adaptlab", *argv]) for name, argv in COMMANDS.items()},
        **measured, **baseline,
        "slowest_seconds": slowest, "slowest_vs_import_torch": round(slowest / baseline["import_torch_seconds"], 2),
        "within_2_seconds": slowest < 2.0,
    })


if __name__ == "__main__":
    main()
