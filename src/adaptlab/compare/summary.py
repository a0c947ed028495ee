"""Turn per-run classification results into the comparison: per-entry means, intervals, Pareto fronts, a
recommendation (the statistics, shared with generation, are ``adaptlab.compare.stats``'s; an example's score here
is its correctness averaged over seeds)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from adaptlab.compare.plan import ComparePlan, Run, short_model
from adaptlab.compare.stats import CONFIDENCE, interval, mark_pareto, mark_ties, resamples
from adaptlab.families import Entry

TIME_TOLERANCE = 0.10  # training times this close to the fastest count as equal when choosing the cheapest
UNTUNED_GAP = 0.10  # an untuned gradient entry this far behind the best macro-F1 gets a note to tune it


def summarise(plan: ComparePlan, data, runs: list[Run], output: Path, wall_seconds: float) -> dict:
    entries, failures, labels = [], [], None
    for (entry, model), done, failed, artifacts in collect_runs(runs, output, data):
        if failed:
            failures.append({"entry": entry, "model": model, "errors": failed})
        if done:
            labels = labels or done[0]["labels"]
            entries.append(_entry_summary(plan.entries[entry], model, done, artifacts))
    entries.sort(key=lambda e: -e["accuracy"]["mean"])
    if entries:
        indices = resamples(len(entries[0]["_correct"]))
        for entry in entries:
            entry["accuracy"]["ci95"] = interval(entry["_correct"], indices)
        mark_ties(entries, lambda e: e["_correct"], indices)
        # two fronts: accuracy vs training time, accuracy vs trainable parameters
        mark_pareto(entries, lambda e: e["accuracy"]["mean"], (("train_seconds", "pareto_time"), ("trainable_params", "pareto_params")))
    for entry in entries:
        del entry["_correct"]
    from adaptlab._version import __version__

    return {
        "adaptlab_version": __version__,
        "preset": plan.preset,
        "data": {"source": str(data.source), "seed": data.seed, **_sizes(entries)},
        "labels": labels,
        "seeds": plan.seeds,
        "models": plan.models,
        "hardware": hardware(),
        "wall_seconds": round(wall_seconds, 1),
        "entries": entries,
        "failures": failures,
        "recommendation": recommend(entries),
    }


def collect_runs(runs: list[Run], output: Path, data) -> list[tuple[tuple[str, str], list[dict], list[str], list[str]]]:
    """Per (entry, model), in ladder order: the finished results whose settings match the plan (a stale one,
    from other settings, is ignored), the errors of failed runs, and the finished runs' artifact paths."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.entry, run.model), []).append(run)
    collected = []
    for key, members in groups.items():
        done, failed, artifacts = [], [], []
        for run in members:
            run_dir = output / "runs" / run.key
            if (run_dir / "result.json").exists():
                result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
                if result["spec"] == run.spec(data):
                    done.append(result)
                    artifacts.append(str(run_dir / "artifact"))
            elif (run_dir / "failed.json").exists():
                failed.append(json.loads((run_dir / "failed.json").read_text(encoding="utf-8"))["error"])
        collected.append((key, done, failed, artifacts))
    return collected


def _entry_summary(ladder_entry: Entry, model: str, done: list[dict], artifacts: list[str]) -> dict:
    entry = ladder_entry.name
    accuracy = np.array([r["metrics"]["test"]["accuracy"] for r in done])
    macro_f1 = np.array([r["metrics"]["test"]["macro_f1"] for r in done])
    labels = np.array(done[0]["test_labels"])
    correct = np.mean([np.array(r["test_predictions"]) == labels for r in done], axis=0)
    cost = [r["cost"] for r in done]
    trainable = int(np.mean([c["trainable_params"] for c in cost]))
    total = cost[0].get("total_params")
    first = done[0]
    tuning = first.get("tuning")  # one study per entry, shared by its seeds: its cost counts once
    tuning_seconds = tuning["seconds"] if tuning else 0.0
    # prompting without examples trains and selects nothing (its fit only loads the model): no training time,
    # as in the generation ladder
    final_seconds = 0.0 if not trainable and not first["params"].get("k") else float(np.mean([c["train_seconds"] for c in cost]))
    return {
        "entry": entry,
        "model": model,
        "strategy": first["spec"]["strategy"],
        "description": ladder_entry.description,
        "runs": len(done),
        "seeded": ladder_entry.seeded,
        "accuracy": {"mean": round(float(accuracy.mean()), 4), "std": _std(accuracy), "per_run": accuracy.round(4).tolist()},
        "macro_f1": {"mean": round(float(macro_f1.mean()), 4), "std": _std(macro_f1)},
        "val_accuracy": round(float(np.mean([r["metrics"]["val"]["accuracy"] for r in done])), 4),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_fraction": None if not total else trainable / total,
        "train_seconds": round(final_seconds + tuning_seconds, 2),  # what the entry cost to get: tuning included
        "final_train_seconds": round(final_seconds, 2),
        "tuning_seconds": tuning_seconds,
        "tuning": tuning,
        "inference_texts_per_second": round(float(np.mean([c["inference_texts_per_second"] for c in cost])), 1),
        "peak_rss_mb": round(float(max(c["peak_rss_mb"] for c in cost)), 1),
        "peak_cuda_mb": max((c.get("peak_cuda_mb") or 0) for c in cost) or None,
        "artifact_mb": float(np.mean([r["artifact_bytes"] for r in done])) / 2**20,
        "confusion_matrix": np.sum([r["metrics"]["test"]["confusion_matrix"] for r in done], axis=0).tolist(),
        "test_over_draws": first["metrics"].get("test_over_draws"),
        "stopped": [r.get("stopped") for r in done],  # per run: converged / step_cap / time_cap (None: no training)
        "steps": [r.get("steps") for r in done],
        "lr_chosen": [r.get("lr_chosen") for r in done],
        "params": first["params"],
        "artifacts": artifacts,
        "sizes": first["data"]["sizes"],
        "_correct": correct,
    }


def _std(values: np.ndarray) -> float | None:
    return round(float(values.std(ddof=1)), 4) if len(values) > 1 else None


def _sizes(entries: list[dict]) -> dict:
    return {"sizes": entries[0]["sizes"]} if entries else {}


def recommend(entries: list[dict]) -> list[str]:
    """A few sentences, each derived from the numbers in the table."""
    if not entries:
        return ["No run finished, so there is nothing to recommend yet."]
    best = entries[0]
    name = lambda e: f"{e['entry']} ({short_model(e['model'])})"
    pct = lambda x: f"{100 * x:.1f}%"
    lines = [f"Most accurate: {name(best)} at {pct(best['accuracy']['mean'])} test accuracy "
             f"(95% CI {pct(best['accuracy']['ci95'][0])}-{pct(best['accuracy']['ci95'][1])})."]
    tied = [e for e in entries[1:] if e["tied_with_best"]]
    if tied:
        lines.append(f"Within noise of it (paired bootstrap, {CONFIDENCE:.0%}): " + ", ".join(name(e) for e in tied) + ".")
    lines.append(recommendation(best, tied, name))
    full = next((e for e in entries if e["entry"] == "full"), None)  # the most accurate full fine-tune
    lora = next((e for e in entries if full and e["entry"] == "lora" and e["model"] == full["model"]), None)
    if lora and full and full["accuracy"]["mean"] > 0 and full["trainable_params"] and full["train_seconds"] \
            and converged(lora) and converged(full):  # a ratio of undertrained runs says nothing about the methods
        lines.append(
            f"LoRA reaches {lora['accuracy']['mean'] / full['accuracy']['mean']:.1%} of full fine-tuning's accuracy "
            f"with {lora['trainable_params'] / full['trainable_params']:.2%} of its trainable parameters and "
            f"{lora['train_seconds'] / full['train_seconds']:.0%} of its training time "
            f"({lora['artifact_mb']:.1f} MB artifact vs {full['artifact_mb']:.1f} MB)."
        )
    untrained = [e for e in entries if e["trainable_params"] == 0]
    if untrained:
        top = untrained[0]
        gap = best["accuracy"]["mean"] - top["accuracy"]["mean"]
        lines.append(f"Without any training, {name(top)} gets {pct(top['accuracy']['mean'])} "
                     f"({100 * gap:.1f} points below the best).")
    lines += _untuned_warning(entries) + _capped(entries)
    fastest = max((e for e in entries if best["accuracy"]["mean"] - e["accuracy"]["mean"] <= 0.01),
                  key=lambda e: e["inference_texts_per_second"])
    lines.append(f"Fastest at inference within 1 point of the best: {name(fastest)} "
                 f"({fastest['inference_texts_per_second']:.0f} texts/s).")
    return lines


def converged(entry: dict) -> bool:
    """Every run of the entry stopped because validation stopped improving, not at a cap."""
    return bool(entry.get("stopped")) and all(stop == "converged" for stop in entry["stopped"])


def _capped(entries: list[dict]) -> list[str]:
    """Entries cut off by the step or time cap may not have reached what they can: say so, with the lever."""
    capped = [e for e in entries if any(stop in ("step_cap", "time_cap") for stop in e.get("stopped") or [])]
    if not capped:
        return []
    names = ", ".join(f"{e['entry']} ({short_model(e['model'])}: {', '.join(sorted(set(e['stopped'])))})" for e in capped)
    return [f"Still improving when the budget ran out: {names}; a larger preset (or --set ENTRY.max_steps=N / "
            "max_minutes=M) may change their place."]


def _untuned_warning(entries: list[dict]) -> list[str]:
    """Gradient entries judged on their default settings and far behind: say it may be the settings, not the method."""
    from adaptlab.compare.tuning import TUNED_STRATEGIES

    top = max(e["macro_f1"]["mean"] for e in entries)
    behind = [e for e in entries if e["strategy"] in TUNED_STRATEGIES and not e.get("tuning")
              and top - e["macro_f1"]["mean"] > UNTUNED_GAP]
    if not behind:
        return []
    names = ", ".join(f"{e['entry']} ({short_model(e['model'])})" for e in behind)
    return [f"Untuned: {names} ran with their default learning rate and are more than {100 * UNTUNED_GAP:.0f} "
            "macro-F1 points behind the best; that may be the settings, not the method: `--tune 3` chooses them "
            "on validation first."]


def recommendation(best: dict, tied: list[dict], name) -> str:
    """The cheapest entry statistically tied with the best. Cheaper means less training time; times within
    ``TIME_TOLERANCE`` of the fastest (run-to-run noise on a CPU) count as equal, and among those the entry that
    trains the fewest parameters (so the smaller artifact) wins."""
    contenders = [best, *tied]
    fastest = min(e["train_seconds"] for e in contenders)
    near = [e for e in contenders if e["train_seconds"] <= fastest * (1 + TIME_TOLERANCE) + 1.0]
    chosen = min(near, key=lambda e: (e["trainable_params"] or 0, e["train_seconds"], contenders.index(e)))
    if chosen is best:
        return (f"Recommended: {name(best)}; no entry tied with it trains in clearly less time (by more than "
                f"{TIME_TOLERANCE:.0%}) or as fast with fewer trained parameters.")
    seconds = f"{chosen['train_seconds']:.0f} s of training instead of {best['train_seconds']:.0f} s"
    if chosen["train_seconds"] == 0:
        return f"Recommended: {name(chosen)}: statistically tied with the best, and no training at all."
    if chosen["train_seconds"] * (1 + TIME_TOLERANCE) < best["train_seconds"]:
        return (f"Recommended: {name(chosen)}: statistically tied with the best, {seconds} "
                f"({best['train_seconds'] / chosen['train_seconds']:.1f}x faster).")
    return (f"Recommended: {name(chosen)}: statistically tied with the best, about as fast ({seconds}) and "
            f"{chosen['trainable_params']:,} trained parameters instead of {best['trainable_params']:,}.")


def hardware() -> dict:
    import torch

    from adaptlab.measure import cpu_description

    cpu = cpu_description()
    return {
        "cpu": cpu["cpu_model"],
        "cpu_features": cpu["cpu_features"],
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
