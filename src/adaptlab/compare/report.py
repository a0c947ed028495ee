"""The comparison as people read it: a rich leaderboard in the terminal and a self-contained HTML report.

The HTML page embeds its plots as PNG data URIs (one file to mail or attach); every piece of text that comes
from data or options is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from adaptlab._io import atomic_file
from adaptlab.compare.runs import short_model
from adaptlab.compare.stats import count


def _params(entry: dict) -> str:
    fraction = entry["trainable_fraction"]
    shown = count(entry["trainable_params"])
    if fraction is None:
        return shown
    percent = 100 * fraction
    return f"{shown} ({percent:.0f}%)" if percent >= 10 else f"{shown} ({percent:.2g}%)"


def _accuracy(entry: dict) -> str:
    acc = entry["accuracy"]
    std = "" if acc["std"] is None else f" ± {100 * acc['std']:.1f}"
    return f"{100 * acc['mean']:.1f}{std}"


COLUMNS = ("#", "strategy", "model", "acc %", "95% CI", "F1", "trainable", "train s", "stopped", "texts/s", "RSS MB",
           "size MB")
#: how a run's training ended, in a table cell (several seeds: each distinct reason)
STOPPED = {"converged": "converged", "step_cap": "step cap", "time_cap": "time cap"}


def _row(rank: int, entry: dict) -> list[str]:
    low, high = entry["accuracy"]["ci95"]
    return [
        str(rank), entry["entry"], short_model(entry["model"]), _accuracy(entry), f"{100 * low:.1f}-{100 * high:.1f}",
        f"{entry['macro_f1']['mean']:.3f}", _params(entry), _train_time(entry), stopped_cell(entry),
        f"{entry['inference_texts_per_second']:.0f}", f"{entry['peak_rss_mb']:.0f}", f"{entry['artifact_mb']:.2g}",
    ]


def stopped_cell(entry: dict) -> str:
    reasons = [STOPPED[stop] for stop in dict.fromkeys(entry.get("stopped") or []) if stop in STOPPED]
    steps = [n for n in entry.get("steps") or [] if n]
    rates = sorted({lr for lr in entry.get("lr_chosen") or [] if lr})
    searched = f", lr {'/'.join(f'{lr:.2g}' for lr in rates)} (searched)" if rates else ""
    return "-" if not reasons else "/".join(reasons) + (f" @{round(sum(steps) / len(steps))}" if steps else "") + searched


def _train_time(entry: dict) -> str:
    if not entry["train_seconds"]:
        return "none"
    tuning = entry.get("tuning_seconds") or 0
    return f"{entry['train_seconds']:.1f}" + (f" ({tuning:.0f} tuning)" if tuning else "")


def tuning_section(entries: list[dict], esc) -> list[str]:
    """Per tuned entry: the settings chosen on validation and every trial, so the search and its cost are visible."""
    tuned = [e for e in entries if e.get("tuning")]
    if not tuned:
        return []
    parts = ["<h2>Tuning</h2><p class='meta'>Each gradient entry's settings were chosen on the validation split "
             f"({esc(tuned[0]['tuning']['objective'])}; trial 0 is the entry's default; the test split was never "
             "used). Pruned trials stopped early, below the median of earlier trials. Their time is added to the "
             "entry's training time above.</p>"]
    for e in tuned:
        t = e["tuning"]
        best = ", ".join(f"{k}={_value(v)}" for k, v in t["best"].items())
        parts.append(f"<h3>{esc(e['entry'])} ({esc(short_model(e['model']))}): {esc(best)} · "
                     f"{len(t['trials'])} trials, {esc(round(t['seconds']))} s</h3><table><thead><tr>"
                     "<th>trial</th><th class='l'>settings</th><th class='l'>state</th><th>val macro-F1</th>"
                     "<th>val acc %</th><th>seconds</th></tr></thead><tbody>")
        for trial in t["trials"]:
            cls = "best" if trial["number"] == t["best_trial"] else ""
            f1 = "" if trial["val_macro_f1"] is None else f"{trial['val_macro_f1']:.3f}"
            acc = "" if trial["val_accuracy"] is None else f"{100 * trial['val_accuracy']:.1f}"
            settings = ", ".join(f"{k}={_value(v)}" for k, v in trial["params"].items())
            parts.append(f"<tr class='{cls}'><td>{esc(trial['number'])}</td><td class='l'>{esc(settings)}</td>"
                         f"<td class='l'>{esc(trial['state'])}</td><td>{esc(f1)}</td><td>{esc(acc)}</td>"
                         f"<td>{esc(round(trial['seconds'], 1))}</td></tr>")
        parts.append("</tbody></table>")
    return parts


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def leaderboard_table(results: dict):
    from rich.table import Table

    data = results["data"]
    sizes = data.get("sizes", {})
    table = Table(title=f"{data['source']}: {results['preset']} preset, {results['seeds']} seed(s), "
                        f"train/val/test {sizes.get('train')}/{sizes.get('val')}/{sizes.get('test')}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("strategy", "model") else "right")
    for rank, entry in enumerate(results["entries"], start=1):
        style = "bold green" if rank == 1 else ("green" if entry["tied_with_best"] else None)
        table.add_row(*_row(rank, entry), style=style)
    return table


# -- plots -----------------------------------------------------------------------------------------------
def png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)  # not cropped: every plot of a kind keeps its figure size
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def scatter_png(entries: list[dict], x_key: str, pareto_key: str, title: str, xlabel: str, zero_label: str | None,
                quality: str = "accuracy", ylabel: str = "test accuracy (%), 95% bootstrap CI", log: bool = True) -> str:
    """Quality (``entry[quality]``: mean and ci95 in [0, 1], drawn x100) against a cost on a log axis, the
    Pareto front joined up.
    Entries with a cost of zero (prompting has no trainable parameters) sit at a marked position left of
    the smallest non-zero cost, since a log axis has no zero."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    costs = np.array([float(e[x_key] or 0) for e in entries])
    positive = costs[costs > 0]
    zero_at = positive.min() / 10 if len(positive) else 1.0
    xs = np.where(costs > 0, costs, zero_at)
    if not log:
        zero_at, xs = 0.0, costs
    ys = np.array([100 * e[quality]["mean"] for e in entries])
    errors = np.array([[100 * (e[quality]["mean"] - e[quality]["ci95"][0]),
                        100 * (e[quality]["ci95"][1] - e[quality]["mean"])] for e in entries]).T
    front = np.array([e[pareto_key] for e in entries])
    axis.errorbar(xs, ys, yerr=errors, fmt="none", ecolor="#9aa5b1", elinewidth=1, capsize=3, zorder=1)
    axis.scatter(xs[~front], ys[~front], s=46, color="#7b8794", label="dominated", zorder=2)
    axis.scatter(xs[front], ys[front], s=70, color="#d64545", label="Pareto front", zorder=3)
    order = np.argsort(xs[front])
    axis.plot(xs[front][order], ys[front][order], color="#d64545", linewidth=1.2, zorder=2)
    for x, y, e in zip(xs, ys, entries):
        axis.annotate(e["entry"] if len({m["model"] for m in entries}) == 1 else f"{e['entry']} ({short_model(e['model'])})",
                      (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if log:
        axis.set_xscale("log")
        if xs.max() / xs[costs > 0].min(initial=xs.max()) < 10:  # 1, 2 and 5 per decade: a short span still gets labels
            axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
    if log and zero_label and (costs == 0).any():
        axis.axvline(zero_at * 1.8, color="#cbd2d9", linestyle=":", linewidth=1)
        axis.set_xlim(zero_at / 2, xs.max() * 3)
        ticks = [t for t in axis.get_xticks() if zero_at * 3 <= t <= xs.max() * 3]
        axis.set_xticks([zero_at, *ticks])
        axis.set_xticklabels([zero_label, *[f"{t:g}" for t in ticks]])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    return png(figure)


def _accuracy_vs_fraction(entries: list[dict]) -> str:
    """Entries whose model size is unknown (a Hub model not on disk) have no fraction and are left out."""
    known = [dict(e, _percent=100 * e["trainable_fraction"]) for e in entries if e["trainable_fraction"] is not None]
    return scatter_png(known, "_percent", "pareto_params", "Accuracy vs trainable parameters",
                    "trainable parameters (% of the model, log scale)", "0 (none)")


MAX_ANNOTATED_CLASSES = 20


def _confusions(entries: list[dict], labels: list[str]) -> str:
    import matplotlib.pyplot as plt

    columns = min(4, len(entries))
    rows = -(-len(entries) // columns)
    # many classes (150 intents): no per-cell percentages or names and a fixed size; the plot grew with the classes
    # (150 -> a gigapixel figure, 12 GB and many minutes to draw) and its text could not be read anyway
    annotate = len(labels) <= MAX_ANNOTATED_CLASSES
    size = max(2.2, 0.55 * len(labels) + 1.4) if annotate else 4.0
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for axis in axes.flat[len(entries):]:
        axis.axis("off")
    for axis, entry in zip(axes.flat, entries):
        matrix = np.array(entry["confusion_matrix"], dtype=float)
        normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        if annotate:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    axis.text(j, i, f"{100 * normalised[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                              color="white" if normalised[i, j] > 0.6 else "black")
            axis.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30)
            axis.set_yticks(range(len(labels)), labels, fontsize=7)
        else:
            axis.set_xticks([])
            axis.set_yticks([])
        axis.set_title(f"{entry['entry']} ({short_model(entry['model'])})", fontsize=8)
        axis.set_xlabel("predicted", fontsize=7)
        axis.set_ylabel("true", fontsize=7)
    figure.suptitle("Test confusion matrices (row-normalised, summed over seeds)", fontsize=10)
    figure.tight_layout()
    return png(figure)


# -- HTML ------------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;
color:#1f2933;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e4e7eb}
.meta{color:#616e7c;font-size:.9rem}table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}
th,td{padding:.35rem .5rem;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
td.wrap{white-space:normal}th{background:#f5f7fa}
td.l,th.l{text-align:left}tr.best td{background:#e3f9e5;font-weight:600}tr.tied td{background:#f1fbf2}
.rec{background:#f0f4f8;border-left:4px solid #2680c2;padding:.6rem 1rem}.rec li{margin:.25rem 0}
img{max-width:100%;height:auto}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.fail{color:#ab091e}
"""


def render_html(results: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    esc = lambda value: html.escape(str(value))
    entries, labels = results["entries"], results["labels"] or []
    data, hardware = results["data"], results["hardware"]
    sizes = data.get("sizes", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>adaptlab comparison: {esc(data['source'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Which adaptation is worth it on {esc(data['source'])}?</h1>",
        f"<p class='meta'>{esc(results['preset'])} preset · train/val/test {esc(sizes.get('train'))}/"
        f"{esc(sizes.get('val'))}/{esc(sizes.get('test'))} examples (one stratified split, data seed "
        f"{esc(data['seed'])}) · {esc(results['seeds'])} training seed(s) · models {esc(', '.join(results['models']))} · "
        f"{esc(hardware['cpu'])}, {esc(hardware['cpu_threads'])} CPU threads{', GPU ' + esc(hardware['gpu']) if hardware['gpu'] else ''} · "
        f"total wall time {esc(round(results['wall_seconds'] / 60, 1))} min · adaptlab {esc(results['adaptlab_version'])}</p>",
        "<h2>Recommendation</h2><div class='rec'><ul>",
        *[f"<li>{esc(line)}</li>" for line in results["recommendation"]],
        "</ul></div>",
    ]
    if entries:
        parts += leaderboard_html(COLUMNS, [_row(rank, entry) for rank, entry in enumerate(entries, start=1)], entries, esc)
        parts.append("<p class='meta'>acc %: test accuracy, mean ± standard deviation over training seeds. 95% CI: bootstrap over "
                     "test examples. F1: macro-F1. trainable: trained parameters (% of the model). Green rows are "
                     "statistically tied with the best (paired bootstrap). train s: training time in seconds, embedding "
                     "or feature extraction included, and the hyper-parameter search where there was one; stopped: how training ended "
                     "(converged: validation stopped improving, the best epoch kept; step/time cap: the preset's budget "
                     "ran out first) @ optimiser steps, and the learning rate the line search chose where it ran (--lr-search: "
                     "lr/3, lr and 3 lr tried for one epoch or 16 steps each, lowest validation loss kept; its time is in train s); texts/s: inference throughput on up to 64 test texts, batched, "
                     "nothing cached; RSS MB: peak resident memory of the training process (each run has its own); "
                     "size MB: the saved artifact.</p>")
        parts += [
            "<h2>Quality against cost</h2><div class='grid'>",
            f"<img alt='Test accuracy against the fraction of trainable parameters, Pareto front in red' "
            f"src='data:image/png;base64,{_accuracy_vs_fraction(entries)}'>",
            f"<img alt='Test accuracy against training time, Pareto front in red' "
            f"src='data:image/png;base64,{scatter_png(entries, 'train_seconds', 'pareto_time', 'Accuracy vs training time', 'training time (seconds, log scale)', '0 (none)')}'>",
            "</div>",
            "<h2>Where each strategy errs</h2>",
            f"<img alt='Confusion matrix of each strategy on the test split' src='data:image/png;base64,{_confusions(entries, labels)}'>",
        ]
        draws = [e for e in entries if e.get("test_over_draws")]
        if draws:
            parts.append("<h2>Sensitivity to the demonstrations</h2><ul>")
            for e in draws:
                d = e["test_over_draws"]
                parts.append(f"<li>{esc(e['entry'])} ({esc(e['model'])}): test accuracy over {len(d['accuracy'])} demonstration "
                             f"draws {100 * d['mean']:.1f}% ± {100 * d['std']:.1f}; the draw kept was chosen on validation.</li>")
            parts.append("</ul>")
        parts += tuning_section(entries, esc)
        parts += settings_table(entries, esc)
    parts += failures_section(results["failures"], esc)
    parts.append("</body></html>")
    return "\n".join(parts)


def leaderboard_html(columns: tuple[str, ...], rows: list[list[str]], entries: list[dict], esc) -> list[str]:
    """The ranked table: the best row and the rows tied with it highlighted, each entry described."""
    parts = ["<h2>Leaderboard</h2><table><thead><tr>",
             *[f"<th class='{'l' if c in ('strategy', 'model') else ''}' scope='col'>{esc(c)}</th>" for c in columns],
             "<th class='l' scope='col'>what it is</th></tr></thead><tbody>"]
    for rank, (cells, entry) in enumerate(zip(rows, entries), start=1):
        cls = "best" if rank == 1 else ("tied" if entry["tied_with_best"] else "")
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td class='{'l' if i in (1, 2) else ''}'>{esc(c)}</td>" for i, c in enumerate(cells))
                     + f"<td class='l wrap'>{esc(entry['description'])}</td></tr>")
    return [*parts, "</tbody></table>"]


def settings_table(entries: list[dict], esc) -> list[str]:
    """Every entry's parameters and artifact paths (both kinds of report)."""
    parts = ["<h2>Settings</h2><table><thead><tr><th class='l'>strategy</th><th class='l'>model</th>"
             "<th class='l'>parameters</th><th class='l'>artifacts</th></tr></thead><tbody>"]
    for e in entries:
        params = ", ".join(f"{k}={v}" for k, v in sorted(e["params"].items()) if v is not None and k != "model")
        parts.append(f"<tr><td class='l'>{esc(e['entry'])}</td><td class='l'>{esc(e['model'])}</td>"
                     f"<td class='l wrap'>{esc(params)}</td><td class='l wrap'>{esc(', '.join(e['artifacts']))}</td></tr>")
    return [*parts, "</tbody></table>"]


def failures_section(failures: list[dict], esc) -> list[str]:
    if not failures:
        return []
    return ["<h2 class='fail'>Runs that failed</h2><ul>",
            *[f"<li class='fail'>{esc(f['entry'])} ({esc(f['model'])}): {esc('; '.join(f['errors']))}</li>" for f in failures],
            "</ul><p>Re-running the same command retries them and skips everything that finished.</p>"]


def write_page(page: str, path: Path) -> None:
    with atomic_file(path) as handle:
        handle.write(page)


def write_report(results: dict, path: Path) -> None:
    write_page(render_html(results), path)
