"""Prompting with smollm2-135m on Rotten Tomatoes: zero-shot, 4-shot (random, kNN, calibrated), soft prompt;
label scoring vs generate-and-parse; shared-prefix KV cache vs recomputing every prompt. One run.

Demonstrations come from a 500-sentence training pool; 50 validation sentences choose the draw; accuracy
on 200 test sentences (mean and std over 5 demonstration draws where demonstrations are sampled).

    python benchmarks/prompting.py [--test-size 200] [--draws 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import save


def soft_prompt_row(adaptlab, splits) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        soft = adaptlab.train("soft-prompt", splits, f"{workdir}/soft", epochs=2, batch_size=8,
                              init_text="Classify the sentiment of this review", progress=False)
        soft_seconds = time.perf_counter() - start
        model = adaptlab.load_artifact(f"{workdir}/soft", progress=False)
        start = time.perf_counter()
        model.predict_proba(splits.test.texts)
        row = {
            "method": "soft prompt (20 virtual tokens, 2 epochs on the 500-sentence pool)",
            "test_accuracy_mean": round(soft.metrics["accuracy"], 4), "test_accuracy_std": None, "draws": 1,
            "chosen_draw_test_accuracy": round(soft.metrics["accuracy"], 4),
            "queries_per_second": round(len(splits.test) / (time.perf_counter() - start), 1),
            "train_seconds": round(soft_seconds, 1),
            "trainable_params": soft.manifest["cost"]["trainable_params"],
        }
        print(row, flush=True)
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-size", type=int, default=500)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--part", choices=["all", "speed"], default="all",
                        help="speed: only the scoring / prefix-cache / generate comparison, merged into the saved JSON")
    args = parser.parse_args()

    import adaptlab
    from adaptlab.methods.icl import InContextClassifier

    splits = adaptlab.load_splits("rotten_tomatoes", train_size=args.train_size, val_size=50, test_size=args.test_size, seed=0)
    test = splits.test
    configs = {
        "zero-shot": {"k": 0},
        "4-shot random": {"k": 4, "selection": "random", "draws": args.draws},
        "4-shot kNN": {"k": 4, "selection": "knn"},
        "4-shot balanced + calibration": {"k": 4, "selection": "balanced", "draws": args.draws, "calibrate": True},
    }
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, params in (configs.items() if args.part == "all" else []):
            result = adaptlab.train("icl", splits, f"{workdir}/{len(rows)}", progress=False, **params)
            model = adaptlab.load_artifact(f"{workdir}/{len(rows)}", progress=False)
            start = time.perf_counter()
            model.predict_proba(test.texts)
            rate = len(test) / (time.perf_counter() - start)
            draws = result.manifest["metrics"].get("test_over_draws")
            rows.append({
                "method": name,
                "test_accuracy_mean": round(draws["mean"] if draws else result.metrics["accuracy"], 4),
                "test_accuracy_std": round(draws["std"], 4) if draws else None,
                "draws": len(draws["accuracy"]) if draws else 1,
                "chosen_draw_test_accuracy": round(result.metrics["accuracy"], 4),
                "queries_per_second": round(rate, 1),
            })
            print(rows[-1], flush=True)
    if args.part == "all":
        rows.append(soft_prompt_row(adaptlab, splits))

    # The same 4-shot prompts (draw 0), three ways.
    sample = test.texts[:100]
    labels = test.labels[:100]
    icl = InContextClassifier(k=4, selection="random", draws=1, progress=False).fit(splits, Path(tempfile.mkdtemp()))
    timings = {}
    for label, mode, reuse in (("score, shared-prefix KV cache", "score", True), ("score, full prompt recomputed", "score", False),
                               ("generate and parse", "generate", True)):
        icl.mode, icl.scorer_.reuse_prefix = mode, reuse
        start = time.perf_counter()
        proba = icl.predict_proba(sample)
        seconds = time.perf_counter() - start
        timings[label] = {"queries_per_second": round(len(sample) / seconds, 2),
                          "accuracy": round(float((proba.argmax(1) == labels).mean()), 4)}
        print(label, timings[label], flush=True)
    base = timings["score, shared-prefix KV cache"]["queries_per_second"]
    if args.part == "speed":
        import json

        from _common import RESULTS

        rows = json.loads((RESULTS / "prompting_smollm2_rotten_tomatoes.json").read_text())["results"]
    save("prompting_smollm2_rotten_tomatoes", {
        "setup": {"model": "smollm2-135m", "train_pool": len(splits.train), "val": len(splits.val), "test": len(test),
                  "template": "chat turns, 'Review: {text} / Sentiment: {label}'", "label_words": ["negative", "positive"]},
        "results": rows,
        "same_prompts_4_shot": timings,
        "scoring_vs_generate_speedup": round(base / timings["generate and parse"]["queries_per_second"], 2),
        "prefix_cache_speedup": round(base / timings["score, full prompt recomputed"]["queries_per_second"], 2),
    })


if __name__ == "__main__":
    main()
