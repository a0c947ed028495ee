"""``adaptlab feedback ...``: create a ranking or thumbs project, add annotators, serve the app, export the data.

Wired into the main CLI as a sub-app, so ``AdaptlabError`` raised here becomes the usual one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adaptlab.errors import AdaptlabError

feedback_app = typer.Typer(help="Human feedback: people rank model outputs (or give each a thumbs up/down) in a browser; "
                                "export pairs for `rlhf reward`/`rlhf dpo` (or KTO rows for `rlhf kto`).",
                           no_args_is_help=True)
Project = Annotated[Path, typer.Argument(help="Project directory (holds feedback.sqlite).")]


@feedback_app.command("new")
def new(
    project: Project,
    prompts: Annotated[Path | None, typer.Option(help="JSONL of prompts: {\"prompt\": ...} per line.")] = None,
    candidates: Annotated[Path | None, typer.Option(help="Import candidates instead of sampling: JSONL of {\"prompt\", \"responses\": [...]} or {\"prompt\", \"response\", \"source\"}.")] = None,
    model: Annotated[str, typer.Option(help="Causal LM that samples the candidates.")] = "smollm2-135m",
    n: Annotated[int, typer.Option("-n", "--n", max=2**31 - 1, help="Candidates sampled per prompt.")] = 4,
    overlap: Annotated[int, typer.Option(max=1000, help="How many annotators rank each item (above 1 measures agreement).")] = 1,
    mode: Annotated[str, typer.Option(help="rank: annotators order each prompt's candidates (exports pairs); thumbs: they give "
                                           "each candidate a thumbs up or down (exports KTO rows).")] = "rank",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per candidate.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 would give identical candidates).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the first candidate; candidate i uses seed + i.")] = 0,
) -> None:
    """Create a ranking (or thumbs) project with sampled (or imported) candidates for each prompt."""
    from adaptlab.feedback.db import MODES
    from adaptlab.feedback.project import new_project
    from adaptlab.sampling import SamplingOptions

    if mode not in MODES:  # before any model loads
        raise AdaptlabError(f"--mode must be one of {', '.join(MODES)}, not '{mode}'")
    sampling = SamplingOptions(max_new_tokens, temperature, top_p, top_k, seed=seed)
    sampling.check()  # even when candidates are imported: a wrong value is a mistake either way
    if not model.strip():
        raise AdaptlabError("--model is empty; name a causal LM, e.g. smollm2-135m")
    if candidates is None:  # the model samples the candidates: checked before it loads
        from adaptlab.cli.common import preflight

        preflight({"model": model}, decoder=True)
    summary = new_project(project, prompts, model, n, sampling, candidates, overlap, mode)
    print(json.dumps(summary))


@feedback_app.command("add-annotator")
def add_annotator(
    project: Project,
    name: Annotated[str, typer.Argument(help="The annotator's name (unique in the project).")],
    admin: Annotated[bool, typer.Option("--admin", help="May see progress and agreement and export.", metavar="")] = False,
    base_url: Annotated[str, typer.Option(help="Where the app is served, for the printed link.")] = "http://127.0.0.1:8000",
) -> None:
    """Add an annotator and print their login link (shown once; only a hash of the token is stored)."""
    from urllib.parse import urlparse

    from adaptlab.feedback.project import add_annotator as add

    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise AdaptlabError(f"--base-url must look like http://HOST:PORT, not '{base_url}'")
    token = add(project, name, admin)
    print(f"{base_url.rstrip('/')}/login?token={token}")


@feedback_app.command("serve")
def serve(
    project: Project,
    host: Annotated[str, typer.Option(help="Interface to bind; the default is reachable from this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    lease_seconds: Annotated[int, typer.Option(help="How long an item shown to an annotator stays reserved for them, so others "
                                                    "are shown other items (a later submission is still taken while the item "
                                                    "needs judgements).")] = 300,  # db.LEASE_SECONDS
) -> None:
    """Serve the ranking (or thumbs) app for the annotators."""
    from adaptlab.feedback.db import check_lease_seconds, connect

    if not 1 <= port <= 65535:
        raise AdaptlabError(f"--port must be from 1 to 65535, not {port}")
    check_lease_seconds(lease_seconds)
    from adaptlab.cli.common import check_can_listen

    check_can_listen(host, port)
    connect(project).close()  # not a project: one line, before the web stack loads
    import uvicorn

    from adaptlab.feedback.app import create_app

    app = create_app(project, lease_seconds)
    typer.echo(f"serving {project} on http://{host}:{port} (annotators open their login link)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@feedback_app.command("export")
def export(
    project: Project,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    format: Annotated[str | None, typer.Option("--format", help="A ranking project: pairs (the default; ties give no pair) or "
                                                            "rankings (tie-free submissions only). A thumbs project: kto "
                                                            "(the default): {prompt, completion, label} rows.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace a file already at --output.")] = False,
) -> None:
    """Write the ranked submissions as preference JSONL that `adaptlab rlhf reward --data` reads (a thumbs project:
    KTO rows that `adaptlab rlhf kto --data` reads)."""
    from adaptlab._io import atomic_file
    from adaptlab.feedback import db
    from adaptlab.feedback.project import check_format, export_rows
    from adaptlab.jobs import check_output

    check_output(output, overwrite, inputs=[project])  # never over (or inside) the project itself

    conn = db.connect(project)
    try:
        format = check_format(conn, format)
        rows = export_rows(conn, format)
    finally:
        conn.close()
    if not rows:
        raise AdaptlabError(f"'{project}' has no {'judged' if format == 'kto' else 'ranked'} submissions to export as {format} yet")
    with atomic_file(output) as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(json.dumps({"output": str(output), "format": format, "rows": len(rows)}))
