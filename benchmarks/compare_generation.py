"""The generation ladder through `adaptlab compare` on wiki-descriptions with SmolLM2-135M-Instruct.

`--preset quick` (the default ladder: zero-shot, few-shot, knn-shot, prompt tuning, prefix tuning, LoRA,
last-k, full) must finish in 15 minutes on 2 CPU threads: `wall_seconds` is the whole comparison, every
worker process's start, model load, training, generation and forgetting probe included. `--preset standard`
runs the same ladder on more data with 3 few-shot draws. Each comparison's results.json and report.html stay
in `--workdir`; the leaderboard goes to `results/compare_generation_<preset>.json`.

The packaged SmolLM2 is the Q4_1 GGUF de-quantized to float: every figure here is for that model.

    python benchmarks/compare_generation.py [--preset quick|standard] [--seeds 1] [--documents wikipedia]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

QUICK_BUDGET_SECONDS = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick", choices=("quick", "standard", "full"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--documents", help="also run the rag entry on these documents (e.g. wikipedia)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "adaptlab-compare-generation"))
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))

    from adaptlab.compare import ComparePlan, run_comparison
    from adaptlab.config import GenerationDataConfig

    plan = ComparePlan(data=GenerationDataConfig("wiki-descriptions"), task="generation", preset=args.preset,
                       seeds=args.seeds, documents=[args.documents] if args.documents else None,
                       output=os.path.join(args.workdir, args.preset))
    comparison = run_comparison(plan)
    results = comparison.results
    rows = [{
        "strategy": e["entry"], "model": e["model"],
        "rouge_l": e["rouge_l"]["mean"], "rouge_l_std": e["rouge_l"]["std"], "rouge_l_ci95": e["rouge_l"]["ci95"],
        "token_f1": e["token_f1"]["mean"], "exact_match": e["exact_match"]["mean"], "eval_loss": e["eval_loss"]["mean"],
        "stopped": e["stopped"]["mean"],
        "forgetting_ppl_delta": e["forgetting_ppl_delta"], "forgetting_ppl_relative": e["forgetting_ppl_relative"],
        "forgetting_rt_accuracy_delta": e["forgetting_rt_accuracy_delta"],
        "trainable_params": e["trainable_params"], "train_seconds": e["train_seconds"],
        "generated_tokens_per_second": e["generated_tokens_per_second"], "peak_rss_mb": e["peak_rss_mb"],
        "artifact_mb": round(e["artifact_mb"], 2), "tied_with_best": e["tied_with_best"], "params": e["params"],
    } for e in results["entries"]]
    save(f"compare_generation_{args.preset}", {
        "model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions",
        "setup": {"preset": results["preset"], "data": results["data"], "seeds": results["seeds"], "metric": results["metric"]},
        "wall_seconds": results["wall_seconds"],
        **({"within_15_minutes": results["wall_seconds"] <= QUICK_BUDGET_SECONDS} if args.preset == "quick" else {}),
        "results": rows, "failures": results["failures"], "recommendation": results["recommendation"],
        "forgetting_before": next((e["forgetting_before"] for e in results["entries"] if e["forgetting_before"]), None),
        "samples": results["samples"][:3],
    })
    print(f"report: {comparison.report}")


if __name__ == "__main__":
    main()
