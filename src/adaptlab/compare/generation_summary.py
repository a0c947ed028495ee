"""A generation comparison's results: per-entry quality with intervals, cost, forgetting, ties, a recommendation.

As for classification (``adaptlab.compare.summary``), uncertainty is reported twice: over training seeds
(mean ± std) and over test examples (95% bootstrap interval of the primary metric, each example's score
averaged over seeds). An entry is *tied* with the best when a paired bootstrap on the same resampled test
examples has the best ahead in fewer than 95% of resamples; the cheapest tied entry (training time) is
recommended, with a sentence on what it forgets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.compare.plan import ComparePlan, Run, short_model
from adaptlab.compare.stats import CONFIDENCE, interval, mark_pareto, mark_ties, resamples
from adaptlab.compare.summary import collect_runs, hardware, recommendation
from adaptlab.families import Entry

LABELS = {"rouge_l": "ROUGE-L", "token_f1": "token F1", "exact_match": "exact match"}


def summarise(plan: ComparePlan, data, runs: list[Run], output: Path, wall_seconds: float) -> dict:
    entries, failures = [], []
    for (entry, model), done, failed, artifacts in collect_runs(runs, output, data):
        if failed:
            failures.append({"entry": entry, "model": model, "errors": failed})
        if done:  # prompting entries write no artifact
            entries.append(_entry_summary(plan.entries[entry], model, done, [a for a, r in zip(artifacts, done) if r["artifact_bytes"]]))
    metric = plan.metric
    entries.sort(key=lambda e: -e[metric]["mean"])
    if entries:
        _intervals_and_ties(entries, metric)
        _mark_pareto(entries, metric)
    samples = _side_by_side(entries)
    for entry in entries:
        del entry["_scores"]
    from adaptlab._version import __version__

    sizes = entries[0]["sizes"] if entries else {}
    return {
        "adaptlab_version": __version__, "task": "generation", "metric": metric, "preset": plan.preset,
        "data": {"source": str(data.source), "seed": data.seed, "sizes": sizes},
        "seeds": plan.seeds, "models": plan.models, "hardware": hardware(), "wall_seconds": round(wall_seconds, 1),
        "entries": entries, "failures": failures, "samples": samples, "recommendation": recommend(entries, metric),
    }


def _entry_summary(ladder_entry: Entry, model: str, done: list[dict], artifacts: list[str]) -> dict:
    entry = ladder_entry.name
    def stat(values) -> dict:
        values = np.asarray([v for v in values if v is not None], dtype=float)
        if not len(values):
            return {"mean": None, "std": None}
        return {"mean": round(float(values.mean()), 4), "std": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None}

    tests = [r["metrics"]["test"] for r in done]
    n = min(len(r["per_example"]["rouge_l"]) for r in done)
    scores = {m: np.mean([np.asarray(r["per_example"][m][:n], dtype=float) for r in done], axis=0) for m in LABELS}
    cost = [r["cost"] for r in done]
    trainable = int(np.mean([c["trainable_params"] for c in cost]))
    total = cost[0].get("total_params")
    forgetting = [r["forgetting"] for r in done]
    summary = {
        "entry": entry, "model": model, "strategy": done[0]["spec"]["strategy"],
        "description": ladder_entry.description, "runs": len(done), "seeded": ladder_entry.seeded,
        **{m: {**stat([t[m] for t in tests]), "per_run": [t[m] for t in tests]} for m in LABELS},
        "eval_loss": stat([t.get("loss") for t in tests]), "perplexity": stat([t.get("perplexity") for t in tests]),
        # the share of replies that ended by themselves (end-of-turn before max_new_tokens); "stopped" below is how
        # training stopped, as in the classification results
        "replies_ended": stat([t.get("stopped") for t in tests]), "mean_length": stat([t.get("mean_length") for t in tests]),
        "val_loss": stat([r["metrics"].get("val", {}).get("loss") for r in done])["mean"],
        "forgetting_ppl_delta": stat([f["general_ppl_delta"] for f in forgetting])["mean"],
        "forgetting_ppl_relative": stat([f["general_ppl_relative"] for f in forgetting])["mean"],
        "forgetting_rt_accuracy_delta": stat([f["rt_accuracy_delta"] for f in forgetting])["mean"],
        "forgetting_before": forgetting[0].get("before"),
        "trainable_params": trainable, "total_params": total,
        "trainable_fraction": None if not total else trainable / total,
        "train_seconds": round(float(np.mean([c["train_seconds"] for c in cost])), 2),
        "generated_tokens_per_second": stat([c.get("generated_tokens_per_second") for c in cost])["mean"],
        "peak_rss_mb": round(float(max(c["peak_rss_mb"] for c in cost)), 1),
        "artifact_mb": float(np.mean([r["artifact_bytes"] for r in done])) / 2**20,
        "test_over_draws": done[0]["metrics"].get("test_over_draws"),
        "params": done[0]["spec"]["params"], "artifacts": artifacts, "sizes": done[0]["data"]["sizes"],
        "samples": done[0]["samples"], "resumed_from_epoch": done[0].get("resumed_from_epoch"),
        "stopped": [r.get("stopped") for r in done], "steps": [r.get("steps") for r in done],
        "lr_chosen": [r.get("lr_chosen") for r in done],
        "scored_examples": n,
        "_scores": scores,
    }
    return summary


def _intervals_and_ties(entries: list[dict], metric: str) -> None:
    n = min(len(e["_scores"][metric]) for e in entries)
    indices = resamples(n)
    for entry in entries:
        for name in LABELS:
            entry[name]["ci95"] = interval(entry["_scores"][name][:n], indices)
    mark_ties(entries, lambda e: e["_scores"][metric][:n], indices)


def _mark_pareto(entries: list[dict], metric: str) -> None:
    """Quality vs training time, vs trainable parameters, and vs forgetting (general-text perplexity increase)."""
    mark_pareto(entries, lambda e: e[metric]["mean"], (("train_seconds", "pareto_time"), ("trainable_params", "pareto_params"),
                                                       ("forgetting_ppl_delta", "pareto_forgetting")))


def _side_by_side(entries: list[dict]) -> list[dict]:
    """The first test prompts with every entry's output (every entry keeps the same first prompts)."""
    if not entries:
        return []
    rows = []
    for i, sample in enumerate(entries[0]["samples"]):
        outputs = {f"{e['entry']} ({short_model(e['model'])})": e["samples"][i]["output"]
                   for e in entries if i < len(e["samples"]) and e["samples"][i]["prompt"] == sample["prompt"]}
        rows.append({"prompt": sample["prompt"], "reference": sample["reference"], "outputs": outputs})
    return rows


def recommend(entries: list[dict], metric: str) -> list[str]:
    """A few sentences, each read off the table."""
    if not entries:
        return ["No run finished, so there is nothing to recommend yet."]
    label = LABELS[metric]
    name = lambda e: f"{e['entry']} ({short_model(e['model'])})"
    best = entries[0]
    low, high = best[metric]["ci95"]
    lines = [f"Best {label}: {name(best)} at {best[metric]['mean']:.3f} (95% CI {low:.3f}-{high:.3f})."]
    tied = [e for e in entries[1:] if e["tied_with_best"]]
    if tied:
        lines.append(f"Within noise of it (paired bootstrap, {CONFIDENCE:.0%}): " + ", ".join(name(e) for e in tied) + ".")
    lines.append(recommendation(best, tied, name))
    n = best["scored_examples"]
    if n < 100 and len(tied) >= max(2, len(entries) // 2):
        lines.append(f"With {n} test examples most entries are within noise of each other; a larger --test-size "
                     "(or --preset standard) separates them.")
    by_entry = {e["entry"]: e for e in reversed(entries)}  # each entry's best model
    forgetting = [f"{n} {_forgetting_phrase(by_entry[n])}" for n in ("lora", "full") if n in by_entry]
    if forgetting:
        lines.append("Forgetting: " + "; ".join(forgetting) + ".")
    untrained = [e for e in entries if e["trainable_params"] == 0]
    if untrained and untrained[0] is not best:
        gap = best[metric]["mean"] - untrained[0][metric]["mean"]
        lines.append(f"Without training, {name(untrained[0])} gets {untrained[0][metric]['mean']:.3f} ({gap:.3f} below the best).")
    return lines


def _forgetting_phrase(entry: dict) -> str:
    relative, rt = entry["forgetting_ppl_relative"] or 0.0, entry["forgetting_rt_accuracy_delta"] or 0.0
    change = "keeps general-text perplexity within {:.1%} of the base" if abs(relative) < 0.02 else (
        "raises general-text perplexity by {:.1%}" if relative > 0 else "lowers general-text perplexity by {:.1%}")
    return change.format(abs(relative)) + f" and moves zero-shot Rotten Tomatoes accuracy by {100 * rt:+.1f} points"
