"""Feedback projects: create one (sampled or imported candidates), add annotators, export, measure agreement.

A ranking project (mode ``rank``) exports the pair and ranking formats ``adaptlab.rlhf.read_preferences`` reads,
so the result goes straight into ``adaptlab rlhf reward`` (or ``rlhf dpo``); a thumbs project (mode ``thumbs``)
exports ``{prompt, completion, label}`` rows, the unpaired data ``adaptlab rlhf kto`` reads. The collection loop
needs no conversion step.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab._io import atomic_directory
from adaptlab.errors import AdaptlabError
from adaptlab.feedback import db

if TYPE_CHECKING:  # generation imports torch: the web app and export do not need it
    from adaptlab.sampling import SamplingOptions

FORMATS = ("pairs", "rankings", "kto")
MODE_FORMATS = {"rank": ("pairs", "rankings"), "thumbs": ("kto",)}  # the first is the mode's default


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line, with one-line errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise AdaptlabError(f"'{path}' does not exist")
    from adaptlab.data.files import read_jsonl  # with the file: the data package loads numpy

    rows = read_jsonl(path)
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise AdaptlabError(f"'{path}' line {number}: expected an object with a non-empty 'prompt'")
    if not rows:
        raise AdaptlabError(f"'{path}' holds no rows")
    return rows


def read_prompts(path: Path) -> list[str]:
    return list(dict.fromkeys(row["prompt"] for _, row in _jsonl(path)))


def read_candidates(path: Path) -> dict[str, list[tuple[str, str]]]:
    """prompt -> [(response, source)] from ``{"prompt", "responses": [...]}`` or ``{"prompt", "response", "source"}`` rows."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for number, row in _jsonl(path):
        responses = row.get("responses", [row["response"]] if "response" in row else None)
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise AdaptlabError(f"'{path}' line {number}: expected 'responses' (a list of strings) or 'response' (a string)")
        found[row["prompt"]] += [(r, str(row.get("source", "import"))) for r in responses]
    return found


def _sample(prompts: list[str], model: str, n: int, options: SamplingOptions) -> dict[str, list[tuple[str, str]]]:
    """n completions per prompt, each with its own seed so sampled candidates differ."""
    from dataclasses import replace

    from adaptlab.generation import Generator

    options.check()
    generator = Generator(model)
    return {prompt: [(generator.generate(generator.render_chat(prompt), replace(options, seed=options.seed + i)), model)
                     for i in range(n)] for prompt in prompts}


def _distinct(responses: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Non-blank responses, first occurrence of each text kept (with its source)."""
    seen: dict[str, str] = {}
    for text, source in responses:
        if text.strip():
            seen.setdefault(text, source)
    return list(seen.items())


def new_project(directory: Path, prompts_path: Path | None = None, model: str = "smollm2-135m", n: int = 4,
                options: SamplingOptions | None = None, candidates_path: Path | None = None, overlap: int = 1,
                mode: str = "rank") -> dict:
    """Create the project; returns a summary. Duplicate or blank candidates are dropped (a pair of identical
    responses teaches nothing and ``read_preferences`` rejects it); in a ``rank`` project, prompts left with fewer
    than two are skipped (one candidate cannot be ranked; in a ``thumbs`` project it can be judged)."""
    if mode not in db.MODES:
        raise AdaptlabError(f"--mode must be one of {', '.join(db.MODES)}, not '{mode}'")
    least = 2 if mode == "rank" else 1
    if overlap < 1:
        raise AdaptlabError(f"--overlap must be at least 1, not {overlap}")
    if (Path(directory) / db.DB_NAME).exists():  # checked before sampling, which can take a while
        raise AdaptlabError(f"'{directory}' already holds a feedback project")
    from adaptlab.jobs import check_output_directory

    check_output_directory(directory, [prompts_path, candidates_path, model], name="project")
    if Path(directory).exists() and (not Path(directory).is_dir() or any(Path(directory).iterdir())):
        raise AdaptlabError(f"'{directory}' exists and is not an empty directory; give a new directory for the project")
    if candidates_path is None and prompts_path is None:
        raise AdaptlabError("give --prompts (to sample candidates) or --candidates (to import them)")
    if candidates_path is not None:
        candidates = read_candidates(candidates_path)
        if prompts_path is not None:
            wanted = read_prompts(prompts_path)
            unknown = set(candidates) - set(wanted)
            if unknown:
                raise AdaptlabError(f"'{candidates_path}' has candidates for a prompt not in '{prompts_path}': {min(unknown)!r}")
            candidates = {p: candidates.get(p, []) for p in wanted}
        model_name = None
    else:
        if n < least:
            raise AdaptlabError(f"-n must be at least 2 candidates to rank, not {n}" if mode == "rank"
                                else f"-n must be at least 1 candidate to judge, not {n}")
        from adaptlab.sampling import SamplingOptions

        candidates, model_name = _sample(read_prompts(prompts_path), model, n, options or SamplingOptions(temperature=1.0)), model
    kept = {p: c for p, c in ((p, _distinct(c)) for p, c in candidates.items()) if len(c) >= least}
    if not kept:
        raise AdaptlabError("no prompt has two distinct, non-empty candidates to rank" if mode == "rank"
                            else "no prompt has a non-empty candidate to judge")
    with atomic_directory(Path(directory)) as building:  # killed midway: no half-made project is left behind
        conn = db.connect(building, create=True)
        try:
            with db.transaction(conn):
                conn.execute("INSERT INTO project (id, overlap, k, model, created, mode) VALUES (1, ?, ?, ?, ?, ?)",
                             (overlap, max(map(len, kept.values())), model_name, time.time(), mode))
                for prompt, responses in kept.items():
                    prompt_id = conn.execute("INSERT INTO prompts (text) VALUES (?)", (prompt,)).lastrowid
                    conn.executemany("INSERT INTO candidates (prompt_id, text, source) VALUES (?, ?, ?)",
                                     [(prompt_id, text, source) for text, source in responses])
        finally:
            conn.close()
    return {"project": str(directory), "prompts": len(kept), "skipped_prompts": len(candidates) - len(kept),
            "candidates": sum(map(len, kept.values())), "overlap": overlap, "mode": mode}


def add_annotator(directory: Path, name: str, admin: bool = False) -> str:
    """The new annotator's login token (shown once: only its SHA-256 is stored)."""
    if not name.strip():
        raise AdaptlabError("the annotator name is empty")
    if any(not character.isprintable() for character in name) or len(name) > 100:
        raise AdaptlabError(f"annotator name {name!r} must be at most 100 printable characters (no newlines or tabs)")
    conn = db.connect(directory)
    try:
        return db.add_annotator(conn, name.strip(), admin)
    finally:
        conn.close()


def _ranked(conn) -> list[tuple[str, str, list[list[str]]]]:
    """(annotator, prompt, ranking as groups of candidate texts, best first) for live ranked submissions."""
    texts = {r["id"]: r["text"] for r in conn.execute("SELECT id, text FROM candidates")}
    prompts = {r["id"]: r["text"] for r in conn.execute("SELECT id, text FROM prompts")}
    return [(s["annotator"], prompts[s["prompt_id"]], [[texts[c] for c in group] for group in json.loads(s["ranking"])])
            for s in db.live_submissions(conn) if s["status"] == "ranked"]


def _judged(conn) -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(annotator, prompt, [(candidate text, thumbs up)] in candidate order) for live judged submissions."""
    texts = {r["id"]: r["text"] for r in conn.execute("SELECT id, text FROM candidates")}
    prompts = {r["id"]: r["text"] for r in conn.execute("SELECT id, text FROM prompts")}
    found = []
    for s in db.live_submissions(conn):
        if s["status"] == "judged":
            thumbs = json.loads(s["thumbs"])
            labels = {c: True for c in thumbs["up"]} | {c: False for c in thumbs["down"]}
            found.append((s["annotator"], prompts[s["prompt_id"]], [(texts[c], labels[c]) for c in sorted(labels)]))
    return found


def check_format(conn, fmt: str | None) -> str:
    """The format to export (``None``: the project mode's own, pairs or kto); one line when the mode has no such
    export. A ranking project does not invent thumbs: its pairs are what ``rlhf kto`` reads (chosen up, rejected
    down); a thumbs project has no order to make pairs or rankings of."""
    mode = db.mode(conn)
    if fmt is None:
        return MODE_FORMATS[mode][0]
    if fmt not in FORMATS:
        raise AdaptlabError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if fmt not in MODE_FORMATS[mode]:
        if mode == "rank":
            raise AdaptlabError("this is a ranking project: export it with --format pairs (or rankings); "
                                "`adaptlab rlhf kto` reads pairs as thumbs (chosen up, rejected down)")
        raise AdaptlabError(f"this is a thumbs project: export it with --format kto (it has no rankings to make {fmt} of)")
    return fmt


def export_rows(conn, fmt: str | None = None) -> list[dict]:
    fmt = check_format(conn, fmt)
    if fmt == "kto":  # one row per judged candidate per annotator: two annotators' judgements are two rows
        return [{"prompt": prompt, "completion": text, "label": up} for _, prompt, judged in _judged(conn) for text, up in judged]
    rows = []
    for _, prompt, groups in _ranked(conn):
        if fmt == "rankings":
            if all(len(g) == 1 for g in groups):
                rows.append({"prompt": prompt, "responses": [g[0] for g in groups]})
            continue
        for better, worse in combinations(groups, 2):  # ties (same group) give no pair
            rows += [{"prompt": prompt, "chosen": c, "rejected": r} for c in better for r in worse]
    return rows


def export(directory: Path, fmt: str | None = None) -> list[dict]:
    """Rows from every live submission that holds a judgement. A ranking project: all strictly ordered pairs
    (``pairs``, the default) or tie-free rankings (``rankings``); a thumbs project: ``kto`` rows, one
    ``{prompt, completion, label}`` per candidate per annotator who judged it."""
    conn = db.connect(directory)
    try:
        return export_rows(conn, fmt)
    finally:
        conn.close()


def thumbs_agreement(conn) -> dict:
    """For a thumbs project: over every two annotators who judged the same candidate, the share that gave it the
    same thumb (``rate``, None with no such comparison), and on how many candidates."""
    by_candidate: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for _, prompt, judged in _judged(conn):
        for text, up in judged:
            by_candidate[(prompt, text)].append(up)
    same = [a == b for labels in by_candidate.values() for a, b in combinations(labels, 2)]
    return {"rate": sum(same) / len(same) if same else None, "comparisons": len(same),
            "candidates": sum(len(labels) > 1 for labels in by_candidate.values())}


def agreement(conn) -> dict:
    """Kendall's tau-b between every two annotators who ranked the same item, averaged (ties count as ties).
    Comparisons where tau is undefined (a ranking that ties everything) are left out."""
    from scipy.stats import kendalltau

    by_prompt: dict[str, list[tuple[str, dict[str, int]]]] = defaultdict(list)
    for annotator, prompt, groups in _ranked(conn):
        by_prompt[prompt].append((annotator, {t: rank for rank, g in enumerate(groups) for t in g}))
    per_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for rankings in by_prompt.values():
        for (a, ra), (b, rb) in combinations(sorted(rankings), 2):
            keys = sorted(ra)
            tau = kendalltau([ra[k] for k in keys], [rb[k] for k in keys]).statistic
            if not math.isnan(tau):
                per_pair[(a, b)].append(float(tau))
    taus = [t for values in per_pair.values() for t in values]
    return {"mean_tau": sum(taus) / len(taus) if taus else None, "comparisons": len(taus),
            "items": sum(len(r) > 1 for r in by_prompt.values()),
            "pairs": [{"annotators": list(k), "tau": sum(v) / len(v), "items": len(v)} for k, v in sorted(per_pair.items())]}
