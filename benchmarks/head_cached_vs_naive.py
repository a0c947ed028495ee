"""Head-only training: cached backbone features vs the naive loop (backbone forward every step), 5 epochs.

Same data, same head initialisation, same batches and dropout, so both must reach the same accuracy; the
cached run pays for one backbone pass, the naive run for one per epoch (plus validation passes).

    python benchmarks/head_cached_vs_naive.py [--train-size 4000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.environ["ADAPTLAB_CACHE"] = tempfile.mkdtemp(prefix="adaptlab-bench-")  # cold embedding cache

    import adaptlab

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=args.train_size, seed=0)
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, cached in (("naive loop", False), ("cached features", True)):
            start = time.perf_counter()
            result = adaptlab.train("head", splits, f"{workdir}/{name}", model="minilm", epochs=args.epochs,
                                    batch_size=32, cache_features=cached, progress=False)
            rows[name] = {
                "train_seconds": round(result.manifest["cost"]["train_seconds"], 1),
                "wall_seconds_including_evaluation": round(time.perf_counter() - start, 1),
                "test_accuracy": result.metrics["accuracy"],
                "val_accuracy": result.manifest["metrics"]["val"]["accuracy"],
            }
    save("head_cached_vs_naive", {
        "setup": {"model": "minilm", "epochs": args.epochs, "batch_size": 32, "train": len(splits.train),
                  "val": len(splits.val), "test": len(splits.test), "precision": "32"},
        "results": rows,
        "speedup": round(rows["naive loop"]["train_seconds"] / rows["cached features"]["train_seconds"], 2),
    })


if __name__ == "__main__":
    main()
