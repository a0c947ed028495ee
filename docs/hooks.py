"""MkDocs hooks (mkdocs.yml `hooks:`): the pages whose content must never be copied by hand are generated here, at
build time, from their sources, so no option, default or figure in them can go stale.

- `reference.md`: every option of every `adaptlab` command with the default `--help` shows, walked from the
  typer/click application itself (`adaptlab.cli.build_app`), and every `param()` field of the job dataclasses the
  command line is built from (the names YAML files and `compare --set ENTRY.PARAM=VALUE` take, with their checks).
- `benchmarks.md`: a table of every `benchmarks/results/*.json` file with the machine it was measured on, and the
  comparison leaderboards, read from the result files.
- `benchmarks/README.md` (the detailed benchmark write-up, kept next to its scripts) is published as the page
  `benchmarks/details.md`, with the result files it links to; a docs page links it as `../benchmarks/README.md`,
  which works on GitHub and is rewritten here for the site.

A placeholder is an HTML comment on a line of its own, `<!-- generated: NAME [ARG] -->`; GitHub shows nothing for it,
so each one sits under a sentence saying what the built site shows there. An unknown placeholder fails the build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import inspect
import json
import re
import sys
import typing
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DETAILS = "benchmarks/details.md"  # where benchmarks/README.md is published in the site
PLACEHOLDER = re.compile(r"^<!--\s*generated:\s*(?P<name>[\w-]+)(?:\s+(?P<arg>\S+))?\s*-->[ \t]*$", re.MULTILINE)
# links a docs page writes as GitHub reads them (relative to docs/) -> where the site has them
SITE_LINKS = [(re.compile(r"\]\(\.\./benchmarks/README\.md"), "](" + DETAILS),
              (re.compile(r"\]\(\.\./benchmarks/results/"), "](benchmarks/results/")]


# --- hooks ------------------------------------------------------------------------------------------------------

def on_files(files, config):
    """Publish benchmarks/README.md and the result files it links to (read at build time, never copied)."""
    files.append(File.generated(config, DETAILS, content=(ROOT / "benchmarks" / "README.md").read_text()))
    for path in sorted(RESULTS.iterdir()):
        if path.is_file() and path.suffix in (".json", ".md"):
            files.append(File.generated(config, f"benchmarks/results/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == DETAILS:
        return markdown
    for pattern, target in SITE_LINKS:
        markdown = pattern.sub(target, markdown)
    return PLACEHOLDER.sub(lambda m: generate(m.group("name"), m.group("arg"), page.file.src_uri), markdown)


def generate(name: str, arg: str | None, where: str) -> str:
    makers = {"cli-reference": cli_reference, "param-fields": param_fields, "results-index": results_index,
              "leaderboard": leaderboard, "defaults-transfer": defaults_transfer,
              "generation-defaults": generation_defaults, "demo": demo, "adaptation-defaults": adaptation_defaults}
    if name not in makers:
        raise ValueError(f"{where}: unknown placeholder 'generated: {name}' (known: {', '.join(makers)})")
    return makers[name](arg) if arg else makers[name]()


# --- the command-line reference ---------------------------------------------------------------------------------

def application():
    """The click command tree `adaptlab` runs, with every lazily loaded group (train, sft, rlhf) loaded."""
    from typer.main import get_command

    from adaptlab import cli

    root = get_command(cli.build_app(["adaptlab"]))
    for group in getattr(cli, "LAZY_GROUPS", {}):
        root.commands[group] = get_command(cli.build_app(["adaptlab", group])).commands[group]
    return root, root.context_class(root, info_name="adaptlab")  # typer's own (vendored) click, not `import click`


def is_group(command) -> bool:
    return hasattr(command, "list_commands")


def commands(command, ctx):
    """(context, command) for the command and every visible subcommand, depth first, in `--help`'s order."""
    yield ctx, command
    if is_group(command):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from commands(sub, sub.context_class(sub, info_name=name, parent=ctx))


def plain(text: str | None) -> str:
    """Help text as `--help` prints it: typer's rich markup resolved, single line breaks joined."""
    if not text:
        return ""
    from rich.errors import MarkupError
    from rich.text import Text

    text = inspect.cleandoc(text)
    with contextlib.suppress(MarkupError):  # not valid rich markup: shown as written
        text = Text.from_markup(text).plain
    return "\n\n".join(" ".join(part.split()) for part in text.split("\n\n"))


def shown_default(param, ctx) -> str:
    """The default `--help` shows for an option: typer's `[default: X]`, else the `(default: X)` that options generated
    from `param()` fields carry in their help text (their click default is None, so a YAML file's value survives)."""
    shown = None
    if hasattr(param, "_extract_default_help_str") and hasattr(param, "_get_default_string"):
        value = param._extract_default_help_str(ctx=ctx)
        as_string = isinstance(param.show_default, str)
        if as_string or (value is not None and (param.show_default or ctx.show_default)):
            shown = param._get_default_string(ctx=ctx, show_default_is_str=as_string, default_value=value) or None
    if shown is None:
        match = re.search(r"\(default:? ([^()]*(?:\([^()]*\)[^()]*)*)\)", param.help or "")
        shown = match.group(1) if match else None
    if shown is None and getattr(param, "required", False):
        return "required"
    return shown if shown is not None else ""


def display_type(param, ctx) -> str:
    shown = param.display_type_rich(ctx=ctx) if hasattr(param, "display_type_rich") else param.type.name
    ranges = param._get_number_range_help_str() if hasattr(param, "_get_number_range_help_str") else None
    return " ".join(part for part in (shown, f"[{ranges}]" if ranges else None) if part)


def option_row(param, ctx) -> str:
    if param.param_type_name == "argument":
        shown = param._rich_display_name() if hasattr(param, "_rich_display_name") else param.name
        names = f"{shown} (argument)"
    else:
        names = ", ".join(param.opts) + ("".join(f" / {o}" for o in param.secondary_opts))
    extra = []
    if getattr(param, "show_envvar", False) and param.envvar:
        extra.append(f"env var: {param.envvar if isinstance(param.envvar, str) else ', '.join(param.envvar)}")
    if getattr(param, "required", False):
        extra.append("required")
    help_text = plain(param.help) + "".join(f" [{e}]" for e in extra)
    kind = display_type(param, ctx)
    cells = [f"<code>{html.escape(names)}</code>", f"<code>{html.escape(kind)}</code>" if kind else "",
             html.escape(shown_default(param, ctx)), html.escape(help_text)]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def cli_reference() -> str:
    root, root_ctx = application()
    out, count = [], 0
    for ctx, command in commands(root, root_ctx):
        path = ctx.command_path
        level = "#" * min(max(2, path.count(" ") + 1), 4)  # adaptlab and its commands ##, subcommands ###
        out.append(f"{level} `{path}`\n")
        description = plain(command.help)
        if description:
            out.append("\n\n".join(html.escape(p) for p in description.split("\n\n")) + "\n")
        out.append(f"```text\n{path} {' '.join(command.collect_usage_pieces(ctx))}\n```\n")
        if is_group(command):
            listed = [name for name in command.list_commands(ctx) if not command.get_command(ctx, name).hidden]
            out.append("Commands: " + ", ".join(f"`{name}`" for name in listed) + ".\n")
        rows = [option_row(p, ctx) for p in command.get_params(ctx)
                if not getattr(p, "hidden", False) and p.name != "help"]
        count += len(rows)
        if rows:
            out.append("<table><thead><tr><th>option</th><th>type</th><th>default</th><th>description</th></tr></thead>"
                       "<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n")
    if count < 100:  # the CLI has hundreds: a walk that finds few has missed the lazily loaded groups
        raise RuntimeError(f"the command-line reference found only {count} options")
    return "\n".join(out)


# --- param() fields ---------------------------------------------------------------------------------------------

def is_param(spec: dataclasses.Field) -> bool:
    return {"help", "runtime", "cli"} <= set(spec.metadata)


def param_classes() -> list[type]:
    """Every dataclass declared with `param()` fields in the modules building the command line imported."""
    application()
    found = []
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("adaptlab.") or module is None:
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and dataclasses.is_dataclass(cls) and any(map(is_param, dataclasses.fields(cls))):
                found.append(cls)
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


def field_default(spec: dataclasses.Field) -> str:
    if spec.default is not dataclasses.MISSING:
        return repr(spec.default)
    if spec.default_factory is not dataclasses.MISSING:
        return repr(spec.default_factory())
    return "required"


def checks(meta: dict) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("above", ">"), ("maximum", "<="), ("below", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sign} {meta[key]:g}" if isinstance(meta[key], float) else f"{sign} {meta[key]}")
    if meta.get("choices") is not None:
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    if meta.get("runtime"):
        parts.append("runtime (not recorded in the manifest)")
    if not meta.get("cli", True):
        parts.append("not a command-line option")
    return "; ".join(parts)


def type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def own_fields(cls: type, classes: list[type]) -> list[dataclasses.Field]:
    """The `param()` fields `cls` declares or changes (default or metadata); the rest it inherits unchanged."""
    inherited = {f.name: f for base in cls.__mro__[1:] if base in classes for f in dataclasses.fields(base)}
    return [f for f in dataclasses.fields(cls) if is_param(f) and not (
        f.name in inherited and field_default(f) == field_default(inherited[f.name]) and f.metadata == inherited[f.name].metadata)]


def anchor(cls: type) -> str:
    return "param-" + cls.__qualname__.lower()


def param_fields() -> str:
    out = []
    classes = param_classes()
    shown = [cls for cls in classes if own_fields(cls, classes) or isinstance(getattr(cls, "name", None), str)]
    for cls in shown:
        hints = typing.get_type_hints(cls)
        name = getattr(cls, "name", None)
        title = f"`{name}` ({cls.__qualname__})" if isinstance(name, str) else f"`{cls.__qualname__}`"
        out.append(f"### {title} {{#{anchor(cls)}}}\n")
        about = getattr(cls, "description", None)
        if not isinstance(about, str) or not about:
            doc = cls.__doc__ or ""
            about = "" if doc.startswith(cls.__name__ + "(") else doc.split("\n\n")[0]  # dataclasses' generated doc
        out.append(f"`{cls.__module__}.{cls.__qualname__}`" + (f": {html.escape(plain(about))}" if about else "") + "\n")
        bases = [base for base in cls.__mro__[1:] if base in shown]
        own = own_fields(cls, classes)
        if bases:
            out.append(("Also every" if own else "Its fields: every") + " field of "
                       + ", ".join(f"[`{b.__qualname__}`](#{anchor(b)})" for b in bases) + (" that is not listed here.\n" if own else ".\n"))
        if not own:
            continue
        rows = []
        for spec in own:
            meta = spec.metadata
            flag = meta.get("flag") or "--" + spec.name.replace("_", "-")
            cells = [f"<code>{spec.name}</code>", f"<code>{html.escape(flag)}</code>" if meta.get("cli", True) else "",
                     f"<code>{html.escape(type_name(hints.get(spec.name, spec.type)))}</code>",
                     f"<code>{html.escape(field_default(spec))}</code>", html.escape(checks(meta)),
                     html.escape(plain(meta.get("help")))]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("<table><thead><tr><th>field</th><th>option</th><th>type</th><th>default</th><th>checked</th>"
                   "<th>description</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n")
    return "\n".join(out)


# --- benchmark tables -------------------------------------------------------------------------------------------

def results() -> list[tuple[Path, dict]]:
    return [(path, json.loads(path.read_text())) for path in sorted(RESULTS.glob("*.json"))]


def cell(value) -> str:
    return "—" if value in (None, "", [], {}) else str(value).replace("|", "\\|")


def results_index() -> str:
    rows = ["| file | benchmark | date | CPU model | CPU features | threads | CUDA | torch | other libraries |",
            "| --- | --- | --- | --- | --- | ---: | --- | --- | --- |"]
    for path, data in results():
        machine = data.get("machine") or {}
        versions = machine.get("versions") or {}
        libraries = ", ".join(f"{k} {v}" for k, v in versions.items() if v and k != "torch")
        rows.append("| " + " | ".join([
            f"[{path.name}](benchmarks/results/{path.name})", cell(data.get("benchmark")), cell(data.get("date")),
            cell(machine.get("cpu_model") or "not recorded"), cell(", ".join(machine.get("cpu_features") or [])),
            cell(machine.get("cpu_threads")), cell(machine.get("cuda") or "none"),
            cell(versions.get("torch") or machine.get("torch")), cell(libraries)]) + " |")
    return "\n".join(rows) + "\n"


def number(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def leaderboard(name: str) -> str:
    path = RESULTS / name
    data = json.loads(path.read_text())
    machine = data.get("machine") or {}
    rows = data["results"]
    caption = (f"From [{name}](benchmarks/results/{name}) ({data.get('date', 'no date')}, "
               f"{machine.get('cpu_model') or 'CPU model not recorded'}, {machine.get('cpu_threads', '?')} threads"
               + (f", {data['wall_seconds'] / 60:.1f} min wall time" if data.get("wall_seconds") else "") + ").\n")
    if any("rouge_l" in row for row in rows):
        head = ["#", "entry", "model", "ROUGE-L", "95% CI", "token F1", "exact match", "test loss", "stopped",
                "general ppl Δ", "RT acc Δ (points)", "trainable", "train s", "tied with best"]
        body = [[str(i), row.get("strategy"), row.get("model"), number(row.get("rouge_l"), 3),
                 "—" if not row.get("rouge_l_ci95") else f"{row['rouge_l_ci95'][0]:.3f}-{row['rouge_l_ci95'][1]:.3f}",
                 number(row.get("token_f1"), 3), number(row.get("exact_match"), 3), number(row.get("eval_loss"), 2),
                 "—" if row.get("stopped") is None else (", ".join(str(s) for s in row['stopped']) if isinstance(row['stopped'], list) else f"{row['stopped'] * 100:.0f}%"),
                 "—" if row.get("forgetting_ppl_relative") is None else f"{row['forgetting_ppl_relative'] * 100:+.1f}%",
                 "—" if row.get("forgetting_rt_accuracy_delta") is None else f"{row['forgetting_rt_accuracy_delta'] * 100:+.1f}",
                 f"{row['trainable_params']:,}" if row.get("trainable_params") is not None else "—",
                 number(row.get("train_seconds"), 0), "yes" if row.get("tied_with_best") else ""]
                for i, row in enumerate(rows, 1)]
    else:
        head = ["#", "entry", "model", "test acc", "95% CI", "macro-F1", "trainable", "train s", "texts/s",
                "peak RSS MB", "size MB", "tied with best"]
        body = [[str(i), row.get("strategy"), row.get("model"), number(row.get("test_accuracy"), 3),
                 "—" if not row.get("ci95") else f"{row['ci95'][0]:.3f}-{row['ci95'][1]:.3f}",
                 number(row.get("macro_f1"), 3),
                 "—" if row.get("trainable_params") is None else
                 f"{row['trainable_params']:,}" + (f" ({row['trainable_percent']:.3g}%)" if row.get("trainable_percent") is not None else ""),
                 number(row.get("train_seconds"), 1), number(row.get("inference_texts_per_second"), 0),
                 number(row.get("peak_rss_mb"), 0), number(row.get("artifact_mb"), 2), "yes" if row.get("tied_with_best") else ""]
                for i, row in enumerate(rows, 1)]
    table = ["| " + " | ".join(head) + " |", "| " + " | ".join("---:" if h in ("#",) else "---" for h in head) + " |"]
    table += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    said = data.get("recommendation") or []
    said = [said] if isinstance(said, str) else list(said)
    summary = "".join(f"- {html.escape(str(line))}\n" for line in said)
    return caption + "\n" + "\n".join(table) + "\n" + (f"\nThe summary it printed:\n\n{summary}" if summary else "")


def source(name: str) -> tuple[dict, str]:
    """A result file and the caption line that says where and on what machine it was measured."""
    data = json.loads((RESULTS / name).read_text())
    machine = data.get("machine") or {}
    features = ", ".join(machine.get("cpu_features") or []) or "no AVX-512/AMX"
    return data, (f"From [{name}](benchmarks/results/{name}) ({data.get('date', 'no date')}, "
                  f"{machine.get('cpu_model') or 'CPU model not recorded'} ({features}), "
                  f"{machine.get('cpu_threads', '?')} threads).\n")


def markdown_table(head: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]) + "\n"


def defaults_transfer() -> str:
    """The untuned quick ladder on three tasks: every entry's accuracy and how it stopped, and the gap target."""
    data, caption = source("defaults_transfer.json")
    tasks = [t["task"] for t in data["tasks"]]
    rows = {(r["task"], r["entry"], r["model"]): r for r in data["rows"]}
    entries = list(dict.fromkeys((r["entry"], r["model"]) for r in data["rows"]))
    body = []
    for entry, model in entries:
        cells = []
        for task in tasks:
            row = rows.get((task, entry, model))
            cells.append("—" if row is None else f"{row['accuracy'] * 100:.1f}"
                         + (f" ({row['stopped']}, {row['steps']} steps)" if row.get("stopped") else ""))
        body.append([entry, model, *cells])
    summary = [["**probe (features-logreg)**", "", *[f"{t['probe_accuracy'] * 100:.1f}" for t in data["tasks"]]],
               ["**worst of head / last-k / full / lora**", "",
                *[f"{t['worst_gradient_entry']}: gap {t['worst_gradient_gap_to_probe'] * 100:+.1f} points"
                  f" ({'met' if t['target_met'] else 'missed'})" for t in data["tasks"]]],
               ["**wall time**", "", *[f"{t['wall_seconds'] / 60:.1f} min" for t in data["tasks"]]]]
    return caption + "\n" + markdown_table(["entry", "model", *[f"{t} test acc %" for t in tasks]], body + summary)


def generation_defaults() -> str:
    data, caption = source("generation_defaults.json")
    body = [[e["entry"], "yes" if e["sft"] else "", number(e["eval_loss"], 3),
             "—" if e["general_ppl_ratio"] is None else f"{e['general_ppl_ratio']:.2f}x",
             "—" if e.get("lr_chosen") is None else f"{e['lr_chosen']:.2g}", number(e["train_seconds"], 0)]
            for e in data["entries"]]
    verdict = (f"Zero-shot test loss {data['zero_shot_eval_loss']:.3f}; every SFT entry at or below it: "
               f"{'yes' if data['all_sft_loss_at_or_below_zero_shot'] else 'no'}; general-text perplexity within 1.5x "
               f"of the base's: {'yes' if data['general_ppl_within_1_5x'] else 'no'} (largest "
               f"{data['max_general_ppl_ratio']:.2f}x).\n")
    return caption + "\n" + markdown_table(["entry", "SFT", "test loss", "general ppl vs base", "lr chosen", "train s"],
                                           body) + "\n" + verdict


def adaptation_defaults() -> str:
    """The adaptation layer's one defaults table (``adaptlab.adapt.defaults.TASKS``), every task and method."""
    from adaptlab.adapt.defaults import TASKS, rates_text

    def lora(task) -> list[str]:
        if task.lora is None:
            return ["—"] * 4
        targets = task.lora.target_modules or "attention query/value (PEFT's map)"
        return [str(task.lora.r), "2 x r" if task.lora.alpha is None else str(task.lora.alpha), f"{task.lora.dropout:g}", targets]

    body = [[f"`{name}`", task.used_by, rates_text(name), *lora(task), task.peft_task_type]
            for name, task in TASKS.items()]
    return markdown_table(["task", "used by", "learning rate per method", "LoRA r", "alpha", "dropout", "targets",
                           "PEFT task type"], body)


def demo() -> str:
    data, caption = source("compare_quick_demo.json")
    body = [[str(i), r["entry"], r["model"], f"{r['accuracy'] * 100:.1f}",
             "—" if not r.get("ci95") else f"{r['ci95'][0] * 100:.1f}-{r['ci95'][1] * 100:.1f}",
             number(r["macro_f1"], 3), r.get("stopped") or "—", number(r["train_seconds"], 0),
             number(r.get("run_seconds"), 0)] for i, r in enumerate(data["leaderboard"], 1)]
    return (caption + f"\n`{data['command']}`: {data['wall_seconds'] / 60:.1f} min wall time "
            f"(target {data['target_seconds'] / 60:.0f} min: {'met' if data['target_met'] else 'missed'}).\n\n"
            + markdown_table(["#", "entry", "model", "test acc %", "95% CI", "macro-F1", "stopped", "train s", "run s"], body))

