"""Learning curves: the same ladder at several training sizes, on one test set, to see how many labels are worth it.

``compare --train-sizes 8,16,32,64,all`` runs the comparison once per size (examples per class for classification,
rows for generation; ``all`` is the whole training split) into ``size-<N>/`` of the output directory: each is an
ordinary comparison, so a rerun skips what is done, resumes what was interrupted, and reuses every size it already
has when more sizes are asked for. The test set is the same at every size (splits cut the test pool first), and so
is the validation set (the preset's size), so the points differ only in how much the entries trained on.

``results.json`` then holds one row per entry and size (``entry``, ``model``, ``train_size``, the quality with its
95% interval, ``train_seconds``), the **crossovers** (two entries whose order changes between consecutive sizes,
reported with both intervals at the later size: a crossover inside the noise is visible as one), and a
recommendation per budget; ``report.html`` draws the curves (quality vs size, log x, one line per entry) and links
every size's own report.
"""

from __future__ import annotations

import dataclasses
import html
from itertools import combinations
from pathlib import Path

import numpy as np

from adaptlab._io import write_json
from adaptlab.errors import AdaptlabError

ALL = "all"


def parse_train_sizes(value) -> list[int | str] | None:
    """``"8,16,all"`` or a list -> ``[8, 16, "all"]``, ascending, ``all`` last; one-line errors."""
    if value is None:
        return None
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
    sizes = []
    for item in items:
        if item == ALL or (isinstance(item, str) and item.lower() == ALL):
            sizes.append(ALL)
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            sizes.append(item)
        elif isinstance(item, str) and item.isdigit() and int(item) >= 1:
            sizes.append(int(item))
        else:
            raise AdaptlabError(f"--train-sizes: {item!r} is not a whole number of at least 1 or 'all' "
                                "(e.g. --train-sizes 8,16,32,64,all)")
    if len(set(sizes)) != len(sizes) or len(sizes) < 2:
        raise AdaptlabError(f"--train-sizes needs at least two different sizes, not {value!r}")
    return sorted((s for s in sizes if s != ALL)) + ([ALL] if ALL in sizes else [])


def quality_key(results: dict) -> str:
    return results.get("metric", "accuracy")


def run_learning_curves(plan, run_one) -> tuple[Path, dict]:
    """Every size's comparison (``run_one(sub_plan)``, which returns its ``results.json`` content), then the curves:
    ``(output directory, the curves' results)``."""
    output = Path(plan.output or f"runs/{Path(str(plan.data.source)).stem}-compare")
    per_class = plan.task == "classification"
    whole = dataclasses.replace(plan.data, train_size=None, **({"train_per_class": None} if per_class else {}))
    full = len(whole.load().train) if ALL in plan.train_sizes else None  # the whole training split, not the preset's
    per_size = {}
    for size in plan.train_sizes:
        if per_class:
            data = dataclasses.replace(plan.data, train_per_class=None if size == ALL else size,
                                       train_size=full if size == ALL else None)
        else:
            data = dataclasses.replace(plan.data, train_size=full if size == ALL else size)
        sub = dataclasses.replace(plan, data=data, train_sizes=None, output=str(output / f"size-{size}"))
        per_size[size] = run_one(sub)
    results = curve_results(per_size, per_class)
    write_json(output / "results.json", results)
    write_curve_report(results, output / "report.html")
    return output, results


def curve_results(per_size: dict, per_class: bool) -> dict:
    first = next(iter(per_size.values()))
    metric = quality_key(first)
    rows = []
    for size, results in per_size.items():
        for entry in results["entries"]:
            rows.append({"entry": entry["entry"], "model": entry["model"], "train_size": size,
                         "train_examples": entry.get("sizes", {}).get("train"), metric: entry[metric]["mean"],
                         "ci95": entry[metric]["ci95"], "train_seconds": entry.get("train_seconds")})
    return {"task": first.get("task", "classification"), "metric": metric,
            "size_unit": "examples per class" if per_class else "training rows",
            "sizes": list(per_size), "data": first["data"], "learning_curves": rows,
            "crossovers": crossovers(rows, metric), "recommendation": budget_advice(rows, metric, per_class),
            "failures": [f for results in per_size.values() for f in results["failures"]],
            "reports": {str(size): f"size-{size}/report.html" for size in per_size}}


def _lines(rows: list[dict]) -> dict[tuple[str, str], dict]:
    lines: dict[tuple[str, str], dict] = {}
    for row in rows:
        lines.setdefault((row["entry"], row["model"]), {})[row["train_size"]] = row
    return lines


def crossovers(rows: list[dict], metric: str) -> list[dict]:
    """Pairs of entries whose order changes between two consecutive sizes both were measured at."""
    found = []
    lines = _lines(rows)
    for (a, line_a), (b, line_b) in combinations(lines.items(), 2):
        common = [size for size in line_a if size in line_b]
        for before, after in zip(common, common[1:]):
            was = line_a[before][metric] - line_b[before][metric]
            now = line_a[after][metric] - line_b[after][metric]
            if was * now < 0:
                leader = a if now > 0 else b
                found.append({"entries": [_name(a), _name(b)], "between": [before, after], "ahead_from": after,
                              "ahead": _name(leader), "ci95_at": {_name(a): line_a[after]["ci95"], _name(b): line_b[after]["ci95"]}})
    return found


def budget_advice(rows: list[dict], metric: str, per_class: bool) -> list[str]:
    """Which entry is best at each size, consecutive sizes with the same winner merged: "with <= 16 labels per
    class: features-logreg (minilm) ...", "from 64: lora (minilm) ..."."""
    unit = "labels per class" if per_class else "training rows"
    sizes = list(dict.fromkeys(row["train_size"] for row in rows))
    best = {size: max((r for r in rows if r["train_size"] == size), key=lambda r: r[metric]) for size in sizes}
    groups: list[list] = []
    for size in sizes:
        if groups and _key(best[groups[-1][0]]) == _key(best[size]):
            groups[-1].append(size)
        else:
            groups.append([size])
    advice = []
    for number, group in enumerate(groups):
        if len(groups) == 1:
            span = f"at every size ({group[0]} to {group[-1]} {unit})"
        elif number == 0:
            span = f"with <= {group[-1]} {unit}"
        elif number == len(groups) - 1:
            span = f"from {group[0]} {unit}"
        else:
            span = f"from {group[0]} to {group[-1]} {unit}"
        winner = best[group[-1]]
        advice.append(f"{span}: {_name(_key(winner))} ({100 * winner[metric]:.1f} at {group[-1]}, 95% CI "
                      f"{100 * winner['ci95'][0]:.1f}-{100 * winner['ci95'][1]:.1f})")
    return advice


def _key(row: dict) -> tuple[str, str]:
    return row["entry"], row["model"]


def _name(key: tuple[str, str]) -> str:
    from adaptlab.compare.runs import short_model

    return f"{key[0]} ({short_model(key[1])})"


def curve_table(results: dict):
    """The command line's view: one row per entry, one column per size."""
    from rich.markup import escape
    from rich.table import Table

    metric = results["metric"]
    table = Table(title=f"test {metric.replace('_', ' ')} (%) by {results['size_unit']}")
    table.add_column("entry")
    for size in results["sizes"]:
        table.add_column(str(size), justify="right")
    for key, line in _lines(results["learning_curves"]).items():
        table.add_row(escape(_name(key)), *(f"{100 * line[s][metric]:.1f}" if s in line else "" for s in results["sizes"]))
    return table


def curve_png(results: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptlab.compare.report import png

    metric, sizes = results["metric"], results["sizes"]
    positions = {size: i for i, size in enumerate(sizes)}  # "all" gets the last place on the axis
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for key, line in _lines(results["learning_curves"]).items():
        xs = [positions[s] for s in line]
        ys = np.array([100 * r[metric] for r in line.values()])
        errors = np.array([[100 * (r[metric] - r["ci95"][0]), 100 * (r["ci95"][1] - r[metric])] for r in line.values()]).T
        axis.errorbar(xs, ys, yerr=errors, marker="o", markersize=4, capsize=3, linewidth=1.2, label=_name(key))
    axis.set_xticks(range(len(sizes)), [str(s) for s in sizes])  # equal steps: the sizes are usually doubling
    axis.set_xlabel(f"{results['size_unit']} (log scale)")
    axis.set_ylabel(f"test {metric.replace('_', ' ')} (%), 95% CI")
    axis.set_title("Learning curves")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    return png(figure)


def write_curve_report(results: dict, path: Path) -> None:
    from adaptlab.compare.report import write_page

    esc = html.escape
    metric = results["metric"]
    header = "".join(f"<th>{esc(str(s))}</th>" for s in results["sizes"])
    body = []
    for key, line in _lines(results["learning_curves"]).items():
        cells = "".join(f"<td>{100 * line[s][metric]:.1f}</td>" if s in line else "<td></td>" for s in results["sizes"])
        body.append(f"<tr><td>{esc(_name(key))}</td>{cells}</tr>")
    links = " ".join(f"<a href='{esc(link)}'>{esc(size)}</a>" for size, link in results["reports"].items())
    page = "\n".join([
        "<!doctype html><meta charset='utf-8'><title>adaptlab learning curves</title>",
        f"<h1>Learning curves on {esc(str(results['data']['source']))}</h1>",
        "<h2>Recommendation</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in results["recommendation"]) + "</ul>",
        f"<img alt='Test {esc(metric)} against training size, one line per entry' src='data:image/png;base64,{curve_png(results)}'>",
        f"<h2>Test {esc(metric)} (%) by {esc(results['size_unit'])}</h2>",
        f"<table><tr><th>entry</th>{header}</tr>{''.join(body)}</table>",
        "<h2>Crossovers</h2><ul>" + "".join(
            f"<li>{esc(c['ahead'])} is ahead from {esc(str(c['ahead_from']))} ({esc(' vs '.join(c['entries']))})</li>"
            for c in results["crossovers"]) + "</ul>" if results["crossovers"] else "<p>No crossovers.</p>",
        f"<p>Each size's full report: {links}</p>",
    ])
    write_page(page, path)
