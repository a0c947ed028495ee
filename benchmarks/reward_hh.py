"""Reward models on Anthropic HH-RLHF (harmless-base test file, 2,312 human-labelled pairs): held-out pairwise
accuracy per backbone, method and context length, trained on the same prompt-level split in one run.

Rows are ``backbone:method:max_length[:option=value...]`` (options: ``epochs``, ``batch`` pairs per pass,
``accum`` passes per optimiser step, ``lr``, and the flag ``checkpointing``). Each row trains in its own process,
so its ``peak_rss_mb`` is its own; finished rows are kept in --workdir and a rerun reuses them. Each row reports
the held-out pairwise accuracy with its prompt-bootstrap 95% interval, its peak memory and how many held-out
sequences its ``max_length`` cuts. The "longer response wins" rule is reported beside them. SmolLM2 comes from
the packaged Q4_1 GGUF, de-quantised to float.

    python benchmarks/reward_hh.py [--epochs 2] [--rows minilm:lora:256,smollm2-135m:lora:384:batch=4:accum=8:checkpointing]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import save

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_test.jsonl.gz"
ROWS = "minilm:lora:256,minilm:full:256,smollm2-135m:lora:384:epochs=1:batch=2:accum=8:checkpointing"
TARGETS = {"pairwise_accuracy": 0.60, "peak_rss_mb": 3000}


def truncated_share(pairs, backbone: str, max_length: int, chat: bool | None) -> float:
    """Share of held-out sequences, framed as the reward model frames them, longer than max_length tokens."""
    from adaptlab.models.loading import load_tokenizer, resolve_model
    from adaptlab.rlhf.pairs import encode, pair_template

    tokenizer = load_tokenizer(resolve_model(backbone))
    template = pair_template(tokenizer, chat)
    lengths = np.array([len(encode(tokenizer, p.prompt, response, 10**9, template))
                        for p in pairs for response in (p.chosen, p.rejected)])
    return round(float((lengths > max_length).mean()), 3)


def longer_wins(pairs) -> float:
    """Accuracy of "the longer response is the chosen one" (ties count half)."""
    wins = [1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0 for p in pairs]
    return round(float(np.mean(wins)), 4)


ROW_OPTIONS = {"epochs": ("epochs", int), "batch": ("batch_size", int), "accum": ("grad_accum", int), "lr": ("lr", float),
               "checkpointing": ("gradient_checkpointing", bool)}


def row_params(spec: str, epochs: int) -> dict:
    """``backbone:method:max_length[:option=value...]`` -> train_reward_model's keyword arguments."""
    backbone, method, max_length, *options = spec.split(":")
    params = {"model": backbone, "method": method, "max_length": int(max_length), "epochs": epochs}
    for option in options:
        key, _, value = option.partition("=")
        name, kind = ROW_OPTIONS[key]
        params[name] = True if kind is bool else kind(value)
    return params


def train_row(spec: str, epochs: int, out: Path) -> None:
    """One row, in this (fresh) process: its peak memory is its own."""
    import json

    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    pairs, _ = read_preferences(str(HH), skip_invalid=True)
    split = split_preferences(pairs, str(HH), seed=0)
    params = row_params(spec, epochs)
    manifest = train_reward_model(split, Path(tempfile.mkdtemp()) / "rm", progress=False, **params).manifest.to_json()
    test = manifest["metrics"]["test"]
    chat = manifest["params"].get("chat")
    row = {"spec": spec, "backbone": params["model"], "method": params["method"], "max_length": params["max_length"],
           "chat": chat, "epochs": params["epochs"], "batch_size": manifest["params"]["batch_size"],
           "grad_accum": manifest["params"]["grad_accum"], "gradient_checkpointing": manifest["params"]["gradient_checkpointing"],
           "pairwise_accuracy": test["pairwise_accuracy"], "ci95": test["ci95"], "pairs": test["pairs"],
           "mean_margin": test["mean_margin"], "val_pairwise_accuracy": manifest["metrics"]["val"]["pairwise_accuracy"],
           "truncated_share": truncated_share(split.test, params["model"], params["max_length"], chat),
           "trainable_params": manifest["cost"]["trainable_params"], "train_seconds": manifest["cost"]["train_seconds"],
           "peak_rss_mb": manifest["cost"]["peak_rss_mb"], "lr": manifest["params"]["lr"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps(row))
    out.with_suffix(".tmp").rename(out)


def main() -> None:
    import json
    import subprocess
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2, help="for rows that do not set their own")
    parser.add_argument("--rows", default=ROWS, help="comma-separated backbone:method:max_length[:option=value...]")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adaptlab-reward-hh")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not HH.exists():
        raise SystemExit(f"{HH} is not here")
    os.environ.setdefault("ADAPTLAB_CACHE", str(args.workdir / "cache"))
    specs = args.rows.split(",")
    for spec in specs:
        row_params(spec, args.epochs)  # a bad spec fails here, before any training
    path = lambda spec: args.workdir / "rows" / (spec.replace(":", "_").replace("=", "-") + f"_e{args.epochs}.json")
    if args.row:
        return train_row(args.row, args.epochs, path(args.row))
    from adaptlab.rlhf import read_preferences, split_preferences

    rows = []
    for spec in specs:  # one process per row, one after the other (two would share the 2 cores)
        if not path(spec).exists():
            subprocess.run([sys.executable, __file__, "--row", spec, "--epochs", str(args.epochs),
                            "--workdir", str(args.workdir)], check=True)
        rows.append(json.loads(path(spec).read_text()))
        print(rows[-1], flush=True)
    pairs, kind = read_preferences(str(HH), skip_invalid=True)
    split = split_preferences(pairs, str(HH), seed=0)
    best = max(rows, key=lambda row: row["pairwise_accuracy"])
    save("reward_model_hh_rlhf", {
        "data": {"file": HH.name, "valid_pairs": len(pairs), "format": kind, **split.describe()},
        "results": rows, "chance": 0.5, "longer_response_wins": longer_wins(split.test),
        "best": {key: best[key] for key in ("spec", "backbone", "method", "max_length", "pairwise_accuracy", "ci95", "peak_rss_mb")},
        "targets": TARGETS,
        "meets_targets": best["pairwise_accuracy"] >= TARGETS["pairwise_accuracy"] and best["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "weights_note": "smollm2-135m is the packaged Q4_1 GGUF de-quantised to float",
        "peak_rss_note": "each row trained in its own process: ru_maxrss of that process",
    })


if __name__ == "__main__":
    main()
