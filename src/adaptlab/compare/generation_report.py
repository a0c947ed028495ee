"""A generation comparison as people read it: the terminal leaderboard and a self-contained HTML report.

The report has the recommendation, the leaderboard, three plots (quality against trainable parameters,
training time and forgetting) and a side-by-side table of every entry's reply to the same test prompts.
Model output is untrusted text: everything shown is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

from adaptlab.compare.generation_summary import LABELS
from adaptlab.compare.runs import short_model
from adaptlab.compare.stats import count
from adaptlab.compare.report import (STYLE, failures_section, leaderboard_html, scatter_png, settings_table, stopped_cell,
                                     write_page)

COLUMNS = ("#", "strategy", "model", "ROUGE-L", "95% CI", "F1", "EM", "loss", "ended %", "forget ppl", "RT Δ",
           "trainable", "train s", "stopped", "tok/s", "RSS MB", "size MB")


def _number(value, digits: int = 3, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}")


def _row(rank: int, entry: dict, metric: str) -> list[str]:
    low, high = entry[metric]["ci95"]
    std = entry["rouge_l"]["std"]
    return [
        str(rank), entry["entry"], short_model(entry["model"]),
        _number(entry["rouge_l"]["mean"]) + ("" if std is None else f" ± {std:.3f}"), f"{low:.3f}-{high:.3f}",
        _number(entry["token_f1"]["mean"]), _number(entry["exact_match"]["mean"]), _number(entry["eval_loss"]["mean"]),
        _number(None if (entry.get("replies_ended") or {}).get("mean") is None else 100 * entry["replies_ended"]["mean"], 0),
        _percent(entry["forgetting_ppl_relative"]), _number(None if entry["forgetting_rt_accuracy_delta"] is None
                                                            else 100 * entry["forgetting_rt_accuracy_delta"], 1, True),
        count(entry["trainable_params"]), f"{entry['train_seconds']:.0f}" if entry["train_seconds"] else "none", stopped_cell(entry), _number(entry["generated_tokens_per_second"], 0),
        f"{entry['peak_rss_mb']:.0f}", f"{entry['artifact_mb']:.2g}",
    ]


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def leaderboard_table(results: dict):
    from rich.table import Table

    sizes, metric = results["data"].get("sizes", {}), results["metric"]
    table = Table(title=f"{results['data']['source']}: {results['preset']} preset, {results['seeds']} seed(s), "
                        f"train/val/test {sizes.get('train')}/{sizes.get('val')}/{sizes.get('test')}, ranked by {LABELS[metric]}")
    for column in COLUMNS:
        table.add_column(column.replace("95% CI", f"{LABELS[metric]} CI"), justify="left" if column in ("strategy", "model") else "right")
    for rank, entry in enumerate(results["entries"], start=1):
        style = "bold green" if rank == 1 else ("green" if entry["tied_with_best"] else None)
        table.add_row(*_row(rank, entry, metric), style=style)
    return table


LEGEND = ("ROUGE-L ± std over training seeds; CI: 95% bootstrap interval over test examples of the ranking metric; "
          "F1: token F1 and EM: exact match (SQuAD normalisation); loss: held-out loss on the reference replies; forget "
          "ppl: change of perplexity on held-out general text (Wikipedia summaries no entry trains on); RT Δ: change of "
          "zero-shot Rotten Tomatoes accuracy in points; green rows are tied with the best (paired bootstrap); train s: "
          "training time (for rag: building the index; for dpo: the lora run included); tok/s: generated tokens per "
          "second on the test prompts; RSS MB: peak memory of the run's process; size MB: the saved artifact.")


def render_html(results: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    esc = lambda value: html.escape(str(value))
    entries, metric, data = results["entries"], results["metric"], results["data"]
    sizes, hardware = data.get("sizes", {}), results["hardware"]
    label = LABELS[metric]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>adaptlab generation comparison: {esc(data['source'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Which adaptation is worth it on {esc(data['source'])}?</h1>",
        f"<p class='meta'>generation · {esc(results['preset'])} preset · train/val/test {esc(sizes.get('train'))}/"
        f"{esc(sizes.get('val'))}/{esc(sizes.get('test'))} examples (data seed {esc(data['seed'])}) · "
        f"{esc(results['seeds'])} training seed(s) · ranked by {esc(label)} · models {esc(', '.join(results['models']))} · "
        f"{esc(hardware['cpu'])}, {esc(hardware['cpu_threads'])} CPU threads{', GPU ' + esc(hardware['gpu']) if hardware['gpu'] else ''} · "
        f"total wall time {esc(round(results['wall_seconds'] / 60, 1))} min · adaptlab {esc(results['adaptlab_version'])}</p>",
        "<h2>Recommendation</h2><div class='rec'><ul>", *[f"<li>{esc(line)}</li>" for line in results["recommendation"]],
        "</ul></div>",
    ]
    if entries:
        parts += leaderboard_html(COLUMNS, [_row(rank, entry, metric) for rank, entry in enumerate(entries, start=1)], entries, esc)
        parts.append(f"<p class='meta'>{esc(LEGEND)}</p>")
        ylabel = f"test {label} (x100), 95% bootstrap CI"
        known = [dict(e, _percent=100 * e["trainable_fraction"]) for e in entries if e["trainable_fraction"] is not None]
        known += [dict(e, _percent=0.0) for e in entries if e["trainable_fraction"] is None and not e["trainable_params"]]
        plots = [
            ("quality against the fraction of trainable parameters",
             scatter_png(known, "_percent", "pareto_params", f"{label} vs trainable parameters",
                         "trainable parameters (% of the model, log scale)", "0 (none)", metric, ylabel)),
            ("quality against training time",
             scatter_png(entries, "train_seconds", "pareto_time", f"{label} vs training time",
                         "training time (seconds, log scale)", "0 (none)", metric, ylabel)),
            ("quality against forgetting",
             scatter_png(entries, "forgetting_ppl_delta", "pareto_forgetting", f"{label} vs forgetting",
                         "general-text perplexity change (after - before)", None, metric, ylabel, log=False)),
        ]
        parts.append("<h2>Quality against cost and forgetting</h2><div class='grid'>")
        parts += [f"<img alt='{esc(alt)}, Pareto front in red' src='data:image/png;base64,{image}'>" for alt, image in plots]
        parts.append("</div>")
        parts += _samples(results["samples"], esc)
        parts += _draws(entries, esc)
        parts += settings_table(entries, esc)
    parts += failures_section(results["failures"], esc)
    parts.append("</body></html>")
    return "\n".join(parts)


def _samples(samples: list[dict], esc) -> list[str]:
    if not samples:
        return []
    names = list(samples[0]["outputs"])
    parts = ["<h2>Side by side</h2><p class='meta'>The same test prompts; greedy replies of every entry.</p>",
             "<table><thead><tr><th class='l'>prompt</th><th class='l'>reference</th>",
             *[f"<th class='l'>{esc(n)}</th>" for n in names], "</tr></thead><tbody>"]
    for row in samples:
        cells = [row["prompt"], row["reference"], *[row["outputs"].get(n, "") for n in names]]
        parts.append("<tr>" + "".join(f"<td class='l wrap'>{esc(c)}</td>" for c in cells) + "</tr>")
    return [*parts, "</tbody></table>"]


def _draws(entries: list[dict], esc) -> list[str]:
    draws = [e for e in entries if e.get("test_over_draws")]
    if not draws:
        return []
    parts = ["<h2>Sensitivity to the demonstrations</h2><ul>"]
    for e in draws:
        d = e["test_over_draws"]
        parts.append(f"<li>{esc(e['entry'])} ({esc(e['model'])}): test ROUGE-L over {len(d['rouge_l'])} demonstration draws "
                     f"{d['mean']:.3f} ± {d['std']:.3f}; the draw kept was chosen on validation loss.</li>")
    return [*parts, "</ul>"]


def write_report(results: dict, path: Path) -> None:
    write_page(render_html(results), path)
