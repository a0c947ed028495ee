"""The project's own sweep of bad input over every command and option, one fresh process per case.

Each command gets a valid base invocation on a small workspace (tiny random-weight models, a 20-row CSV, a trained
tiny artifact, a feedback project...). For every option of every command (options shared by all training
strategies are swept once, on `train lora`), each bad value in ``BAD_VALUES`` replaces or joins the base. A case is:

- a clean refusal: exit 2, at most two lines on stderr, no traceback;
- a traceback: "Traceback" on stderr (target 0);
- damaged: any input file of the workspace changed (target 0);
- accepted: exit 0, or still running at the timeout (a server, a run that started): the value was taken, which is
  right for some values ("x" is a fine --system prompt) and is listed for review;
- other: any other exit code or a longer message.

    python benchmarks/bad_input_sweep.py [--jobs 2] [--timeout 30] [--commands data,predict [--update]]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import RESULTS, save

BAD_VALUES = ("-1", "0", "nan", "x", "")
ADAPTLAB = str(Path(sys.executable).with_name("adaptlab"))
SMALL = ["--train-size", "8", "--val-size", "2", "--test-size", "4"]
SHARED_TRAIN_OPTIONS = "lora"  # the strategy on which the options every training strategy shares are swept


def workspace(root: Path) -> dict[str, list[str]]:
    """Inputs under root/in (checked for damage after every case) and each command's base invocation."""
    import adaptlab
    from adaptlab.data import load_data, split_data
    from adaptlab.feedback import project
    from adaptlab.models.tiny import save_tiny_bert, save_tiny_llama
    from adaptlab.rlhf import read_preferences, split_preferences, train_reward_model

    w = root / "in"
    (w / "docs").mkdir(parents=True)
    bert, llama = str(save_tiny_bert(w / "tiny-bert")), str(save_tiny_llama(w / "tiny-llama"))
    rows = [{"text": f"{'a wonderful film' if i % 2 else 'a dull mess'} ({i})", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    lines = lambda path, items: path.write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    import pandas as pd

    pd.DataFrame(rows).to_csv(w / "data.csv", index=False)
    lines(w / "chat.jsonl", [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(12)])
    lines(w / "prefs.jsonl", [{"prompt": f"p{i}", "chosen": "a kind reply", "rejected": "rude"} for i in range(12)])
    lines(w / "candidates.jsonl", [{"prompt": f"p{i}", "responses": ["one", "two"]} for i in range(3)])
    lines(w / "queries.jsonl", [{"question": "the eiffel tower", "relevant": ["x"]}])
    (w / "prompts.txt").write_text("The film was\nThe plot\n", encoding="utf-8")
    (w / "docs" / "a.txt").write_text("The Eiffel Tower was completed in 1889.\n", encoding="utf-8")
    adaptlab.train("lora", split_data(load_data(w / "data.csv"), seed=0), w / "lora", model=bert, epochs=1, progress=False)
    pairs, _ = read_preferences(str(w / "prefs.jsonl"))
    train_reward_model(split_preferences(pairs, str(w / "prefs.jsonl")), w / "rm", model=bert, epochs=1, progress=False)
    project.new_project(w / "project", candidates_path=w / "candidates.jsonl")
    subprocess.run([ADAPTLAB, "rag", "index", str(w / "docs"), "--store", str(w / "store"), "--model", bert],
                   check=True, capture_output=True)
    out = f"{root}/out/{{case}}"
    bases = {
        "compare": ["compare", "--data", f"{w}/data.csv", *SMALL, "--models", bert, "--strategies", "head", "-o", out],
        "serve": ["serve", f"{w}/lora", "--port", "{port}"],
        "generate": ["generate", "--model", llama, "--max-new-tokens", "2", "hello"],
        "merge": ["merge", f"{w}/lora", "-o", out],
        "predict": ["predict", f"{w}/lora", "a text"],
        "embed": ["embed", "--model", bert, "-o", f"{out}.npy", "hello"],
        "data": ["data", "--data", f"{w}/data.csv"],
        "rag index": ["rag", "index", f"{w}/docs", "--store", out, "--model", bert],
        "rag search": ["rag", "search", "eiffel", "--store", f"{w}/store"],
        "rag ask": ["rag", "ask", "eiffel", "--store", f"{w}/store", "--model", llama, "--max-new-tokens", "2"],
        "rag eval": ["rag", "eval", "--queries", f"{w}/queries.jsonl", "--store", f"{w}/store", "-o", out],
        "feedback new": ["feedback", "new", out, "--candidates", f"{w}/candidates.jsonl"],
        "feedback add-annotator": ["feedback", "add-annotator", f"{w}/project", "bob"],
        "feedback serve": ["feedback", "serve", f"{w}/project", "--port", "{port}"],
        "feedback export": ["feedback", "export", f"{w}/project", "-o", f"{out}.jsonl"],
        "rlhf reward": ["rlhf", "reward", "--data", f"{w}/prefs.jsonl", "--model", bert, "--epochs", "1", "-o", out],
        "rlhf dpo": ["rlhf", "dpo", "--data", f"{w}/prefs.jsonl", "--model", llama, "--epochs", "1", "-o", out],
        "rlhf ppo": ["rlhf", "ppo", "--reward", f"{w}/rm", "--model", llama, "--prompts", f"{w}/prompts.txt", "--steps", "1",
                     "--batch-size", "2", "--mini-batch-size", "2", "-o", out],
        "sft train": ["sft", "train", "--data", f"{w}/chat.jsonl", "--model", llama, "--epochs", "1", "-o", out],
        "sft eval": ["sft", "eval", "--data", f"{w}/chat.jsonl", "--model", llama],
    }
    from adaptlab.methods import STRATEGIES

    for name, cls in STRATEGIES.items():
        model = llama if name in ("icl", "soft-prompt") else bert
        bases[f"train {name}"] = ["train", name, "--data", f"{w}/data.csv", "--model", model, "--epochs", "1", "-o", out]
    return bases


def options(command: list[str]) -> list[str]:
    """The value-taking options of an adaptlab command, read from its typer definition."""
    import typer.main

    from adaptlab.cli import build_app

    node = typer.main.get_command(build_app(["adaptlab", command[0]]))
    for part in command:
        node = node.commands[part]
    return [p.opts[0] for p in node.params if p.opts and p.opts[0].startswith("--") and not p.is_flag
            and p.opts[0] != "--help"]


def cases(bases: dict[str, list[str]]) -> list[tuple[str, str, str, list[str]]]:
    from adaptlab.cli.common import DATA_OPTIONS
    from adaptlab.params import option_name
    from adaptlab.training.options import TrainingOptions

    shared = {option_name(f.name) for f in dataclasses.fields(TrainingOptions)} | {option_name(n) for n in DATA_OPTIONS}
    shared |= {"--config", "--output"}
    found = []
    for command, base in bases.items():
        for option in options(command.split()):
            if command.startswith("train ") and command != f"train {SHARED_TRAIN_OPTIONS}" and option in shared:
                continue
            for value in BAD_VALUES:
                argv = list(base)
                if option in argv:
                    argv[argv.index(option) + 1] = value
                else:
                    argv += [option, value]
                found.append((command, option, value, argv))
    return found


def digest(root: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "-wal" not in path.name and "-shm" not in path.name:
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


def run_case(number: int, case: tuple, root: Path, timeout: float) -> dict:
    command, option, value, argv = case
    argv = [arg.replace("{case}", str(number)).replace("{port}", str(20_000 + number)) for arg in argv]
    cwd = root / "cwd" / str(number)
    cwd.mkdir(parents=True)
    before = digest(root / "in")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    try:
        done = subprocess.run([ADAPTLAB, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:  # still running: a server that started, or work that began
        partial = exc.stderr or b""
        code, stderr = None, partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    damaged = digest(root / "in") != before
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if damaged:
        outcome = "damaged"
    elif "Traceback" in stderr:
        outcome = "traceback"
    elif code == 2 and 1 <= len(lines) <= 2:
        outcome = "clean_refusal"
    elif code in (0, None):
        outcome = "accepted"
    else:
        outcome = "other"
    shutil.rmtree(cwd, ignore_errors=True)
    return {"command": command, "option": option, "value": value, "outcome": outcome, "exit": code,
            "message": (lines[-1] if lines else "")[:200]}


def earlier_rows(earlier: dict, every_case: list) -> list[dict]:
    """The stored sweep's rows; a file written before rows were kept lists only its problems and accepted cases,
    so every other case of the same sweep was a clean refusal."""
    if "rows" in earlier:
        return earlier["rows"]
    listed = {(r["command"], r["option"], r["value"]): r for r in earlier["problems"] + earlier["accepted_cases"]}
    return [listed.get((c, o, v), {"command": c, "option": o, "value": v, "outcome": "clean_refusal", "exit": 2, "message": ""})
            for c, o, v, _ in every_case]


OUTCOMES = ("clean_refusal", "traceback", "damaged", "accepted", "other")


def summary(results: list[dict], seconds: float) -> dict:
    counts = {key: sum(r["outcome"] == key for r in results) for key in OUTCOMES}
    commands = sorted({r["command"] for r in results})
    return {
        "cases": len(results), "commands": len(commands), "bad_values": list(BAD_VALUES),
        "clean_refusals": counts["clean_refusal"], "tracebacks": counts["traceback"], "damaged": counts["damaged"],
        "accepted": counts["accepted"], "other": counts["other"], "seconds": seconds,
        "by_command": {c: {k: sum(r["command"] == c and r["outcome"] == k for r in results) for k in OUTCOMES} for c in commands},
        "problems": [r for r in results if r["outcome"] in ("traceback", "damaged", "other")],
        "accepted_cases": [r for r in results if r["outcome"] == "accepted"],
        "rows": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--commands", help="comma-separated subset, e.g. 'data,predict' (default: every command)")
    parser.add_argument("--update", action="store_true", help="with --commands: re-run those commands' cases and "
                        "replace their rows in results/bad_input_sweep.json (the other commands' rows stay)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="adaptlab-sweep-"))
    os.environ["ADAPTLAB_CACHE"] = str(root / "cache")
    bases = workspace(root)
    every_case = cases(bases)
    if args.commands:
        bases = {name: base for name, base in bases.items() if name in {c.strip() for c in args.commands.split(",")}}
    todo = cases(bases)
    print(f"{len(todo)} cases over {len(bases)} commands", flush=True)
    started, finished = time.perf_counter(), []

    def one(item):
        result = run_case(item[0], item[1], root, args.timeout)
        finished.append(result)
        if len(finished) % 50 == 0:
            print(f"{len(finished)}/{len(todo)} cases", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, enumerate(todo)))
    seconds = round(time.perf_counter() - started, 1)
    if args.update:  # replace these commands' rows in the full sweep's file, keep every other command's
        earlier = json.loads((RESULTS / "bad_input_sweep.json").read_text())
        kept = [r for r in earlier_rows(earlier, every_case) if r["command"] not in bases]
        results, seconds = kept + results, earlier["seconds"]
    save("bad_input_sweep" if not args.commands or args.update else "bad_input_sweep_subset", summary(results, seconds))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
