"""The generation ladder through `adaptlab compare` on wiki-descriptions with SmolLM2-135M-Instruct.

`--preset quick` (the default ladder: zero-shot, few-shot, knn-shot, prompt tuning, prefix tuning, LoRA,
last-k, full) must finish in 15 minutes on 2 CPU threads: `wall_seconds` is the whole comparison, every
worker process's start, model load, training, generation and forgetting probe included. `--preset standard`
runs the same ladder on more data with 3 few-shot draws. Each comparison's results.json and report.html stay
in `--workdir`; the leaderboard goes to `results/compare_generation_<preset>.json`.

The quick preset also writes `results/generation_defaults.json`, the check that every SFT entry's defaults hold
on this task: each SFT entry's test loss at or below the zero-shot entry's, and no entry's general-text
perplexity above 1.5x the base model's (forgetting bounded).

The packaged SmolLM2 is the Q4_1 GGUF de-quantized to float: every figure here is for that model.

    python benchmarks/compare_generation.py [--preset quick|standard] [--seeds 1] [--documents wikipedia]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import save

QUICK_BUDGET_SECONDS = 15 * 60
SFT_ENTRIES = ("prompt-tuning", "prefix-tuning", "lora", "last-k", "full")
MAX_PPL_RATIO = 1.5


def defaults_check(results: dict, rows: list[dict]) -> dict:
    """generation_defaults.json: do the SFT entries' defaults beat prompting without forgetting?"""
    zero_shot = next(r["eval_loss"] for r in rows if r["strategy"] == "zero-shot")
    entries = []
    for row, entry in zip(rows, results["entries"]):
        ratio = None if row["forgetting_ppl_relative"] is None else round(1 + row["forgetting_ppl_relative"], 4)
        entries.append({"entry": row["strategy"], "sft": row["strategy"] in SFT_ENTRIES, "eval_loss": row["eval_loss"],
                        "general_ppl_ratio": ratio, "stopped": row["stopped"],
                        "lr": row["params"].get("lr"), "lr_chosen": (entry.get("lr_chosen") or [None])[0],
                        "train_seconds": row["train_seconds"]})
    sft = [e for e in entries if e["sft"]]
    ratios = [e["general_ppl_ratio"] for e in entries if e["general_ppl_ratio"] is not None]
    loss_ok = all(e["eval_loss"] <= zero_shot for e in sft)
    ppl_ok = all(r <= MAX_PPL_RATIO for r in ratios)
    return {"zero_shot_eval_loss": zero_shot, "max_general_ppl_ratio": max(ratios) if ratios else None,
            "all_sft_loss_at_or_below_zero_shot": loss_ok, "general_ppl_within_1_5x": ppl_ok,
            "target_met": loss_ok and ppl_ok, "entries": entries}


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
        "stopped": e["stopped"],  # per run: converged, step_cap or time_cap
        "replies_ended": (e.get("replies_ended") or {}).get("mean"),  # share of replies ending by themselves
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
    if args.preset == "quick":
        save("generation_defaults", {
            "model": "smollm2-135m (Q4_1 GGUF de-quantized to float)", "task": "wiki-descriptions", "preset": "quick",
            "wall_seconds": results["wall_seconds"],
            "forgetting_before": next((e["forgetting_before"] for e in results["entries"] if e["forgetting_before"]), None),
            **defaults_check(results, rows)})
    print(f"report: {comparison.report}")


if __name__ == "__main__":
    main()
