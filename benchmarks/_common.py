"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu() -> dict:
    """The processor model and the vector extensions that change CPU timings (AMX, AVX-512 bf16, AVX2): figures
    taken on different CPUs must never be divided by each other."""
    from adaptlab.measure import cpu_description

    return cpu_description()


def versions() -> dict:
    """The libraries whose speed a figure depends on (None where one is not installed)."""
    import importlib.metadata

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "sentence-transformers", "lightning"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict:
    """Stamped into every result file: a ratio is only ever computed between rows of one run on one machine."""
    return {
        **cpu(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "versions": versions(),
    }


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path
