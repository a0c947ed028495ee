"""The whole ladder through `adaptlab compare` on Rotten Tomatoes and on an IMDB subsample.

Rotten Tomatoes runs the `standard` preset as is (19 minutes on 2 CPU threads). IMDB reviews are ~10x longer
(capped at 256 tokens for the encoder), so on a CPU its subsample is smaller (500 train / 125 val / 250 test)
and the prompting entries are left out: SmolLM2 scores whole reviews (no cap; up to ~2,500 tokens) at about
one review per second here, which alone took over 15 minutes for zero-shot. On a GPU pass `--full` to run
both datasets at full size with every entry. Each comparison's results.json and report.html stay in
`--workdir`; the leaderboards go to `results/compare_<dataset>.json`, next to published numbers for context.

    python benchmarks/compare_presets.py [--datasets rotten_tomatoes,imdb] [--seeds 1] [--full]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

# A published run of this ladder for context: DistilBERT on IMDB (25k train / 25k test), on a GPU.
# Different model (66M parameters vs minilm's 22.7M), data size and hardware: not a like-for-like comparison.
PUBLISHED_IMDB_DISTILBERT = {
    "source": "published run quoted in issue #5: DistilBERT on IMDB, GPU (not re-run here)",
    "features-logreg (CLS embedding)": 0.8795,
    "last-k (last 2 layers)": 0.8663,
    "full": 0.9214,
}
CPU_SIZES = {
    "rotten_tomatoes": {"preset": "standard"},
    "imdb": {"preset": "standard", "train_size": 500, "val_size": 125, "test_size": 250,
             "strategies": ["features-logreg", "features-rf", "head", "last-k", "full", "lora", "prefix-tuning",
                            "p-tuning", "prompt-tuning"]},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="rotten_tomatoes,imdb")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="full preset at full size (for a GPU)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "adaptlab-compare-bench"))
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))

    from adaptlab.compare import ComparePlan, run_comparison
    from adaptlab.config import DataConfig

    for dataset in args.datasets.split(","):
        settings = {"preset": "full"} if args.full else dict(CPU_SIZES[dataset])
        params = settings.pop("params", {})
        preset, strategies = settings.pop("preset"), settings.pop("strategies", None)
        plan = ComparePlan(data=DataConfig(source=dataset, **settings), preset=preset, seeds=args.seeds, strategies=strategies,
                           params=params, output=os.path.join(args.workdir, dataset))
        comparison = run_comparison(plan)
        results = comparison.results
        rows = [{
            "strategy": e["entry"], "model": e["model"],
            "test_accuracy": e["accuracy"]["mean"], "accuracy_std": e["accuracy"]["std"], "ci95": e["accuracy"]["ci95"],
            "macro_f1": e["macro_f1"]["mean"], "trainable_params": e["trainable_params"],
            "trainable_percent": None if e["trainable_fraction"] is None else round(100 * e["trainable_fraction"], 4),
            "train_seconds": e["train_seconds"], "inference_texts_per_second": e["inference_texts_per_second"],
            "peak_rss_mb": e["peak_rss_mb"], "artifact_mb": e["artifact_mb"],
            "tied_with_best": e["tied_with_best"], "pareto_time": e["pareto_time"],
        } for e in results["entries"]]
        save(f"compare_{dataset}", {
            "setup": {"preset": results["preset"], "data": results["data"], "seeds": results["seeds"],
                      "models": results["models"], "strategies": strategies or "default ladder", "overrides": params},
            "wall_seconds": results["wall_seconds"],
            "results": rows,
            "failures": results["failures"],
            "recommendation": results["recommendation"],
            **({"published_for_context": PUBLISHED_IMDB_DISTILBERT} if dataset == "imdb" else {}),
        })
        print(f"report: {comparison.report}")


if __name__ == "__main__":
    main()
