"""The project's own sweep of bad input over every command, option and input file, one fresh process per case.

The cases come from ``sweep_cases.py``: every command of the typer app, every value-taking option and argument,
each with the generic bad values (``-1``, ``0``, ``nan``, ``x``, empty), values just outside its ``param()``
bounds and choices, a wrong type and huge values; every input file with its schema faults (valid JSON/JSONL/CSV/
parquet/YAML with missing or wrong-typed fields), corrupt stores, artifacts, models and projects; every output
under a regular file, equal to an input, over a user's folder, and the ``<output>.work`` collisions.

Each case runs on its own copy of the workspace entries it names (tiny random-weight models, small files, a
trained artifact, a feedback project, a RAG store), plus the user folders its setup makes. A case is:

- a clean refusal: exit 2, at most two lines on stderr, no traceback;
- a traceback: "Traceback" on stderr (target 0);
- damaged: a file that was there before the case (an input, a user's folder) changed or went (target 0);
- accepted: exit 0, or still running at the timeout (a server, a run that started; the process group is killed).
  Right for some values ("x" is a fine --system prompt): ``RULES`` says why, and one without a rule is printed
  for review (one whose one-line error came only after the timeout is marked ``late_refusal``);
- other: any other exit code or a longer message.

    python benchmarks/bad_input_sweep.py [--jobs 2] [--timeout 8] [--commands data,predict [--update]]
                                         [--kinds generic,schema] [--limit N] [--count] [--check-bases]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sweep_cases
from _common import RESULTS, save
from sweep_cases import DIR, GENERIC, Case

ADAPTLAB = str(Path(sys.executable).with_name("adaptlab"))
OUTCOMES = ("clean_refusal", "traceback", "damaged", "accepted", "other")
GENERIC_TEXT = r"-1|0|nan|x|"
#: kinds of case watched past the timeout (--observe): faults found only once a model or file is loaded
OBSERVED_KINDS = {"corrupt", "wrong-kind", "schema", "config", "path", "output", "collision", "huge"}

#: (command, option, value) regular expressions -> why accepting that value is right (first match wins). A value
#: is matched as the row shows it: workspace paths as {w}/NAME, 2**70 as its digits.
HUGE = re.escape(sweep_cases.HUGE)
RULES = [
    # text that is free-form by design
    (r".*", r"--system|--init-text|--instruction|--forgetting-text", r".*", "any text is a valid system message, instruction or initialisation text"),
    (r"rag (search|ask)", r"query|question", r"-1|0|nan|x", "any text is a valid query"),
    (r"generate", r"prompt", r"-1|0|nan|x", "any text is a valid prompt"),
    (r"predict|embed", r"texts", GENERIC_TEXT, "any text, even empty, is a valid text to classify or embed"),
    (r"feedback add-annotator", r"name", r"-1|0|nan|x", "any non-empty name is a valid annotator name"),
    (r".*", r"--api-key", r".+", "any string is a valid API key"),
    (r".*", r"--api-key", r"", "an empty --api-key means no key, as when ADAPTLAB_API_KEY is unset"),
    # zero means off, none or greedy
    (r".*", r"--seed", r"0", "0 is a valid seed"),
    (r".*", r"--temperature", r"0", "0 means greedy decoding"),
    (r".*", r"--top-k", r"0", "0 turns top-k sampling off"),
    (r".*", r"--weight-decay", r"0", "0 means no weight decay"),
    (r".*", r"--warmup-ratio", r"0", "0 means no warm-up"),
    (r".*", r"--dropout|--lora-dropout", r"0", "0 means no dropout"),
    (r".*", r"--dense-weight|--bm25-weight", r"0", "a zero weight leaves that ranking out of the fusion"),
    (r"rlhf ppo", r"--init-kl-coef|--target-kl|--vf-coef|--gamma|--lam|--cliprange|--cliprange-value|--missing-eos-penalty|--score-clip",
     r"0", "0 is within the declared range (no KL penalty, no KL target, no value loss, no discounting, no clipping)"),
    (r"rag index", r"--chunk-overlap", r"0", "0 means chunks share no tokens"),
    (r"compare", r"--tune", r"0", "0 means no tuning"),
    (r"serve", r"--batch-window-ms", r"0", "0 means a lone request does not wait for company"),
    (r"sft eval", r"--shots", r"0", "0 means zero-shot"),
    (r"rag eval", r"--answers", r"0", "0 means retrieval only"),
    # a huge value within the declared range that means "no limit"
    (r".*", r"--patience|--max-minutes", HUGE + r"|inf", "no upper bound is declared: a huge value means never stop early"),
    (r".*", r"--grad-clip|--max-grad-norm", HUGE + r"|inf", "a huge clipping norm means no clipping"),
    (r".*", r"--batch-size|--mini-batch-size|--max-batch|--max-texts|--max-chars|--max-concurrent|--generation-batch",
     HUGE, "no upper bound is declared: a batch larger than the data holds all of it"),
    (r".*", r"--dense-weight|--bm25-weight", HUGE + r"|inf", "fusion weights are relative: a huge one ranks by that list alone"),
    (r".*", r"--limit|--n|--answers", HUGE, "a count above the number of questions or prompts takes them all"),
    (r".*", r"--max-steps", HUGE, "a step cap above what the epochs take is no cap"),
    # outputs
    (r".*", r"--output|project", r"-1|0|nan|x", "a relative name is a valid output path (written under the working directory)"),
    (r"rag index", r"--store", r"-1|0|nan|x", "a new store at a relative path is created"),
    (r"compare", r"--output", r"\{w\}/user", "compare resumes in an existing directory; the user's file in it is kept (checked)"),
    (r"compare", r"--output", r"\{w\}/run",
     "compare keeps its runs inside --output and makes no <output>.work: the user's run.work is left as it was (checked)"),
    (r"serve|feedback serve", r"--host", r"0", "'0' resolves to 0.0.0.0, a valid interface"),
    # options the base invocation does not read
    (r"predict|embed", r"--text-column", r".*", "not read: the texts are given as arguments"),
    (r"sft train", r"--messages-column|--text-column", r".*", "not read: the data are prompt/completion pairs"),
    (r"rag eval", r"--model|--k", r".*", "not read: the reader runs only with --answers above 0"),
    (r"rag (search|ask|eval)", r"--rerank-depth", r".*", "not read without --rerank"),
    (r"feedback new", r"--model|--n|--top-p|--max-new-tokens|--temperature", r".*", "not read: the candidates are imported, not sampled"),
    (r"rlhf ppo", r"--prompt-column", r".*", "not read: the prompts are a .txt file"),
    (r"rlhf (ppo|eval)", r"--reward-label", r".*", "not read: the reward is a reward model, not a classifier"),
    (r"train lora", r"--target-modules", r"", "an empty list means the default target modules"),
    (r"train .*|sft train|compare", r"--config", r"\{w\}/bad-config-empty\.yaml", "an empty YAML file sets nothing: the options given run"),
    # a model of another kind that works
    (r"train (lora|full|last-k|head|features|prefix-tuning|p-tuning|prompt-tuning)", r"--model", r"\{w\}/tiny-llama",
     "a causal LM with a classification head is a valid encoder"),
    (r"compare", r"--models", r"\{w\}/tiny-llama", "a causal LM runs the classifier entries too (last-token pooling)"),
    (r"embed|serve|rag index", r"--model|--embedder", r"\{w\}/tiny-llama", "a causal LM embeds too (mean-pooled states)"),
    (r"rag train-retriever|rlhf reward", r"--model", r"\{w\}/tiny-llama",
     "a causal LM is a valid retriever encoder or reward-model backbone (SmolLM2 is measured as one)"),
    (r"merge", r"artifact", r"\{w\}/sft", "an SFT LoRA artifact folds into its base like a classifier's"),
    # inputs a command reads only in part
    (r"embed", r"--data", r"\{w\}/bad-data-(no-label|one-class|label-blank|label-list|one-object)\.(csv|jsonl|json)",
     "embed reads only the texts: labels are not needed, a one-object JSON file is one text"),
    (r"rag index|compare", r"paths|--documents", r"\{w\}/docs", "a folder of documents is valid (indexed recursively)"),
    (r"rlhf eval", r"--prompt-column", r".*", "not read: the prompts are a .txt file"),
    (r"train icl", r"--embedding-model", r".*", "not read: demonstrations are drawn by class, not by similarity "
     "(--selection nearest reads it)"),
    (r"train (icl|soft-prompt)", r"--label-words", r"", "an empty --label-words means the label names themselves"),
    (r"train icl", r"--k", r"0", "0 demonstrations is zero-shot"),
    (r"rlhf reward", r"--center-rewards", r"0", "0 means no centring term"),
    (r"train lora", r"--target-modules", r"-1|0|nan|x",
     "module names are checked against the loaded model: refused once it loads (late), nothing written"),
    # huge values inside the declared range that mean "all", "none" or "no limit"
    (r".*", r"--train-size|--val-size|--test-size|--generate-limit", HUGE,
     "a sub-sample or limit larger than the data takes all of it"),
    (r".*", r"--top-k", HUGE, "a top-k above the vocabulary keeps every token (no truncation)"),
    (r"train features", r"--C", HUGE, "a huge C means no regularisation (the probe picks C on validation otherwise)"),
    (r"rlhf ppo", r"--cliprange|--cliprange-value|--score-clip|--ratio-threshold|--kl-horizon|--target-kl", HUGE,
     "a huge clip range, threshold or horizon means none (KL control off for --target-kl and --kl-horizon)"),
    (r"rlhf ppo", r"--init-kl-coef|--vf-coef|--missing-eos-penalty", HUGE,
     "within the declared range: that term dominates the loss or reward; the run completes"),
    (r"feedback new", r"--top-k", r".*", "not read: the candidates are imported, not sampled"),
]


def justification(row: dict) -> str | None:
    for command, option, value, why in RULES:
        if re.fullmatch(command, row["command"]) and re.fullmatch(option, row["option"]) and re.fullmatch(value, row["value"]):
            return why
    return None


def snapshot(root: Path) -> dict[str, str]:
    """Every file (content hash), link (target) and folder under ``root``; SQLite's -wal/-shm are left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in dirs:
            path = base / name
            found[str(path.relative_to(root))] = f"link:{os.readlink(path)}" if path.is_symlink() else "dir"
        for name in files:
            path = base / name
            if name.endswith(("-wal", "-shm", "-journal")):
                continue
            if path.is_symlink():
                found[str(path.relative_to(root))] = f"link:{os.readlink(path)}"
            else:
                found[str(path.relative_to(root))] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_group(process: subprocess.Popen) -> None:
    """Stop the case's whole process group (servers, workers), politely first."""
    for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + wait
        while time.time() < deadline and process.poll() is None:
            time.sleep(0.05)


def prepare(case: Case, w: Path, pristine: Path) -> None:
    """Copy the workspace entries the case names into its own ``w``, then make its setup (user folders)."""
    entries = {token.split("{w}/", 1)[1].split("/")[0] for token in case.argv if "{w}/" in token}
    for entry in sorted(entries):
        source = pristine / entry
        if source.is_dir():
            shutil.copytree(source, w / entry, symlinks=True)
        elif source.exists():
            shutil.copy2(source, w / entry)
    for relative, content in case.setup.items():
        path = w / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == DIR:
            path.mkdir(exist_ok=True)
        elif isinstance(content, tuple):
            path.symlink_to(w / content[1], target_is_directory=True)
        else:
            sweep_cases.write_content(path, content)


def run_case(number: int, case: Case, root: Path, timeout: float, observe: float, env: dict) -> dict:
    folder = root / "cases" / str(number)
    w, cwd = folder / "w", folder / "cwd"
    w.mkdir(parents=True)
    cwd.mkdir()
    prepare(case, w, root / "in")
    port = str(free_port()) if any("{port}" in token for token in case.argv) else ""
    argv = [token.replace("{w}", str(w)).replace("{out}", str(folder / "out")).replace("{port}", port) for token in case.argv]
    before = snapshot(w)
    started = time.perf_counter()
    process = subprocess.Popen([ADAPTLAB, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # still running: a server that started, or work that began
        timed_out = True
        try:  # a fault case is watched a while longer: how it ends (a traceback after loading a model) is reported
            _, stderr = process.communicate(timeout=max(observe - timeout, 0) if case.kind in OBSERVED_KINDS else 0)
        except subprocess.TimeoutExpired:
            kill_group(process)
            _, stderr = process.communicate()
    code = process.returncode if process.returncode is not None and process.returncode >= 0 else None
    seconds = round(time.perf_counter() - started, 2)
    kill_group(process)  # anything the case left running in its group
    stderr = stderr.decode(errors="replace")
    after = snapshot(w)
    changed = sorted(path for path, digest in before.items() if after.get(path) != digest)
    if code in (0, None) and all(path.split("/")[0] in case.writes for path in changed):
        changed = []  # the command's own data, written by a run that was accepted (add-annotator)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    late = timed_out and code == 2 and 1 <= len(lines) <= 2  # a one-line refusal, but only after the timeout
    if changed:
        outcome = "damaged"
    elif "Traceback" in stderr:
        outcome = "traceback"
    elif code == 2 and 1 <= len(lines) <= 2 and not timed_out:
        outcome = "clean_refusal"
    elif code in (0, None) or late:
        outcome = "accepted"
    else:
        outcome = "other"
    message = (lines[-1] if lines else "")[:300]
    if changed:
        message = f"changed or removed: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} | {message}"
    elif outcome == "traceback":  # the exception's line (the last one not indented), after where it was raised
        raised = [line for line in lines if not line[:1].isspace()]
        message = " | ".join(dict.fromkeys([lines[-1].strip(), *raised[-1:]]))[:300] if lines else ""
    shutil.rmtree(folder, ignore_errors=True)
    late = late or code is None and any(line.startswith("adaptlab: error:") for line in lines)
    return {"command": case.command, "option": case.target, "value": case.value, "kind": case.kind, "note": case.note,
            "outcome": outcome, "exit": code, "seconds": seconds, "timed_out": timed_out, "late_refusal": late, "message": message,
            "argv": " ".join(json.dumps(token) if not token or " " in token else token for token in case.argv)}


def summary(results: list[dict], seconds: float) -> dict:
    counts = {key: sum(r["outcome"] == key for r in results) for key in OUTCOMES}
    commands = sorted({r["command"] for r in results})
    refusals = sorted((r for r in results if r["outcome"] == "clean_refusal" and r.get("seconds") is not None),
                      key=lambda r: -r["seconds"])
    accepted = [{**r, "justification": justification(r)} for r in results if r["outcome"] == "accepted"]
    return {
        "cases": len(results), "commands": len(commands), "bad_values": list(GENERIC),
        "clean_refusals": counts["clean_refusal"], "tracebacks": counts["traceback"], "damaged": counts["damaged"],
        "accepted": counts["accepted"], "other": counts["other"], "seconds": seconds,
        "slowest_error_seconds": refusals[0]["seconds"] if refusals else None,
        "needs_review": sum(r["justification"] is None for r in accepted),
        "late_refusals": sum(bool(r.get("late_refusal")) for r in results),
        "by_command": {c: {k: sum(r["command"] == c and r["outcome"] == k for r in results) for k in OUTCOMES} for c in commands},
        "by_kind": {k: sum(r.get("kind") == k for r in results) for k in sorted({r.get("kind") for r in results}, key=str)},
        "slowest_refusals": [{k: r[k] for k in ("command", "option", "value", "seconds", "message")} for r in refusals[:10]],
        "problems": [r for r in results if r["outcome"] in ("traceback", "damaged", "other")],
        "accepted_cases": accepted,
        "rows": results,
    }


def select(cases: list[Case], args) -> list[Case]:
    if args.kinds:
        kinds = {k.strip() for k in args.kinds.split(",")}
        cases = [c for c in cases if c.kind in kinds]
    if args.options:
        options = {o.strip() for o in args.options.split(",")}
        cases = [c for c in cases if c.target in options]
    if args.limit:  # evenly spaced over each command's cases, so every kind of case shows up
        by_command: dict[str, list[Case]] = {}
        for case in cases:
            by_command.setdefault(case.command, []).append(case)
        cases = [group[round(i * len(group) / min(args.limit, len(group)))] for group in by_command.values()
                 for i in range(min(args.limit, len(group)))]
    return cases


def base_cases(only: set[str] | None) -> list[Case]:
    """Each command's base invocation unchanged (``--check-bases``): each should be accepted."""
    specs = sweep_cases.command_specs()
    bases = sweep_cases.make_bases(specs)
    return [Case(command, "(base)", "", "base", [t.value if isinstance(t, sweep_cases.Pos) else t for t in base.argv],
                 writes=base.writes)
            for command, base in bases.items() if not only or command in only]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=8, help="seconds before a case counts as accepted and is killed")
    parser.add_argument("--observe", type=float, default=30, help="a fault case (corrupt file, wrong schema, huge value...) "
                        "still running at --timeout is watched up to this many seconds to see whether it ends in a traceback "
                        "(then counted as one) or a late refusal; it stays accepted otherwise; 0: kill it at --timeout")
    parser.add_argument("--commands", help="comma-separated subset, e.g. 'data,predict' (default: every command)")
    parser.add_argument("--kinds", help="only these kinds of case, e.g. 'generic,schema,corrupt'")
    parser.add_argument("--options", help="only these options or arguments, e.g. '--output,--config'")
    parser.add_argument("--limit", type=int, help="development: at most N cases per command, evenly spaced")
    parser.add_argument("--count", action="store_true", help="print the cases per command and kind, run nothing")
    parser.add_argument("--check-bases", action="store_true", help="run each command's valid base invocation once")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    parser.add_argument("--workspace", type=Path, help="development: reuse a workspace kept with --keep (ROOT/in)")
    parser.add_argument("--update", action="store_true", help="with --commands: re-run those commands' cases and "
                        "replace their rows in results/bad_input_sweep.json (the other commands' rows stay)")
    args = parser.parse_args()
    only = {c.strip() for c in args.commands.split(",")} if args.commands else None
    every_case, missing = sweep_cases.generate()
    todo = base_cases(only) if args.check_bases else select([c for c in every_case if not only or c.command in only], args)
    if args.count:
        counts: dict[str, dict[str, int]] = {}
        for case in todo:
            counts.setdefault(case.command, {}).setdefault(case.kind, 0)
            counts[case.command][case.kind] += 1
        for command, kinds in sorted(counts.items()):
            print(f"{command:24} {sum(kinds.values()):5}  " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        print(f"{'total':24} {len(todo):5}  over {len(counts)} commands; not swept: {missing}")
        return
    root = args.workspace or Path(tempfile.mkdtemp(prefix="adaptlab-sweep-"))
    env = {**os.environ, "ADAPTLAB_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    os.environ["ADAPTLAB_CACHE"] = env["ADAPTLAB_CACHE"]
    if not args.workspace:
        print(f"building the workspace in {root}", flush=True)
        sweep_cases.build_workspace(root / "in", ADAPTLAB, env)
    shutil.rmtree(root / "cases", ignore_errors=True)
    pristine = snapshot(root / "in")
    print(f"{len(todo)} cases over {len({c.command for c in todo})} commands (timeout {args.timeout:g} s, fault cases watched "
          f"up to {args.observe:g} s, {args.jobs} jobs)", flush=True)
    started, finished, lock = time.perf_counter(), [], threading.Lock()

    def one(item):
        result = run_case(item[0], item[1], root, args.timeout, args.observe, env)
        with lock:
            finished.append(result)
            if result["outcome"] in ("traceback", "damaged", "other"):
                print(f"  {result['outcome']}: adaptlab {result['argv']}\n    {result['message']}", flush=True)
            if len(finished) % 50 == 0:
                elapsed = time.perf_counter() - started
                print(f"{len(finished)}/{len(todo)} cases, {elapsed / 60:.1f} min, about "
                      f"{elapsed / len(finished) * (len(todo) - len(finished)) / 60:.0f} min left", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, enumerate(todo)))
    seconds = round(time.perf_counter() - started, 1)
    if snapshot(root / "in") != pristine:  # read through an artifact's or store's recorded paths, never written
        results.append({"command": "(workspace)", "option": "", "value": "", "kind": "", "note": "",
                        "outcome": "damaged", "exit": None, "seconds": None, "argv": "",
                        "message": "the shared workspace changed during the sweep"})
    if args.check_bases:
        for r in results:
            print(f"{r['command']:24} {r['outcome']:14} exit {r['exit']} {r['seconds']:6.1f} s  {r['message'][:100]}")
        return
    full = not (args.commands or args.kinds or args.options or args.limit)
    if args.update and args.commands and not (args.kinds or args.options or args.limit):
        earlier = json.loads((RESULTS / "bad_input_sweep.json").read_text())
        results = [r for r in earlier["rows"] if r["command"] not in only] + results
        seconds, full = earlier["seconds"], True
    payload = summary(results, seconds)
    with contextlib.redirect_stdout(io.StringIO()):  # save() prints the payload: thousands of rows
        path = save("bad_input_sweep" if full else "bad_input_sweep_subset", payload)
    for row in payload["accepted_cases"]:
        if row["justification"] is None:
            what = "refused only after the timeout" if row.get("late_refusal") else "accepted"
            print(f"  needs review ({what}): adaptlab {row['argv']}  [{row['note'] or row['kind']}] {row['message'][:120]}")
    for row in payload["problems"]:
        print(f"  {row['outcome']}: adaptlab {row['argv']}\n    {row['message']}")
    print(json.dumps({k: payload[k] for k in ("cases", "commands", "clean_refusals", "tracebacks", "damaged", "accepted",
                                              "needs_review", "other", "seconds", "slowest_error_seconds", "by_command")}))
    print(f"written: {path}")
    if args.keep or args.workspace:
        print(f"workspace kept: {root} (reuse it with --workspace {root})")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
