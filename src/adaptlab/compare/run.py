"""Run a comparison: every run in its own process, finished runs skipped, then the summary and the report.

Layout of the output directory::

    plan.json                     the resolved plan
    runs/<model>/<entry>/seed-<s>/spec.json, artifact/, result.json (or failed.json)
    results.json                  per-run and per-entry numbers, bootstrap intervals, the recommendation
    report.html                   self-contained: tables, plots, confusion matrices, recommendation
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab._io import write_json
from adaptlab.compare.plan import ComparePlan, ModelInfo, Run
from adaptlab.errors import AdaptlabError
from adaptlab.jobs import check_output_directory
from adaptlab.progress import stderr


@dataclass
class Comparison:
    output: Path
    results: dict  # the content of results.json

    @property
    def report(self) -> Path:
        return self.output / "report.html"


ELAPSED = "elapsed.json"  # wall seconds of every invocation so far (resumes add up)


def run_comparison(plan: ComparePlan, *, rerun_failed: bool = True) -> Comparison:
    """Run (or resume) every run of ``plan``, then write ``results.json`` and ``report.html`` (with ``train_sizes``:
    one comparison per size and the learning curves, ``adaptlab.compare.curves``)."""
    from adaptlab.families import resolve

    plan.check()
    if plan.train_sizes:
        from adaptlab.compare.curves import run_learning_curves

        return Comparison(*run_learning_curves(plan, lambda sub: run_comparison(sub, rerun_failed=rerun_failed).results))
    data = plan.data_config()
    splits = data.load()  # validates the data (one-line errors) before any process starts
    output = Path(plan.output or f"runs/{Path(str(data.source)).stem}-compare")  # the CLI's rule: runs/<data>-<what>
    check_output_directory(output, [data.source, plan.preferences, *(plan.documents or []), *plan.models])
    if plan.preferences is not None:  # read now: a bad file must not wait for the entries before DPO to train
        from adaptlab.rlhf import read_preferences

        read_preferences(plan.preferences)
    if plan.documents:  # documents none of which can be indexed are refused before any entry trains
        from adaptlab.rag.documents import check_indexable

        check_indexable(plan.documents)
    runs = plan.runs(_model_info(plan.models))
    write_json(output / "plan.json", {"plan": _plain(plan), "data": dataclasses.asdict(data), "runs": [r.key for r in runs]})
    stderr.print(f"comparing {len(runs)} runs on {data.source} (train/val/test {len(splits.train)}/{len(splits.val)}/"
                 f"{len(splits.test)}) into {output}")
    started, elapsed = time.perf_counter(), output / ELAPSED
    earlier = json.loads(elapsed.read_text(encoding="utf-8"))["seconds"] if elapsed.exists() else 0.0
    try:
        for number, run in enumerate(runs, start=1):
            _execute(run, output / "runs" / run.key, data, f"[{number}/{len(runs)}]", rerun_failed)
    finally:  # interrupted or not, this invocation's time counts: a resumed comparison reports its whole cost
        wall_seconds = earlier + time.perf_counter() - started
        write_json(elapsed, {"seconds": round(wall_seconds, 1)})
    results = resolve(plan.kind.summarise)(plan, data, runs, output, wall_seconds=wall_seconds)
    described = splits.describe()  # which rows were tested on, and where each split came from
    results["data"].update({key: described[key] for key in ("fingerprints", "split_origins") if key in described})
    write_json(output / "results.json", results)
    resolve(plan.kind.write_report)(results, output / "report.html")
    return Comparison(output, results)


def _execute(run: Run, run_dir: Path, data, prefix: str, rerun_failed: bool) -> None:
    spec = run.spec(data)
    spec_file, result_file, failed_file = run_dir / "spec.json", run_dir / "result.json", run_dir / "failed.json"
    if spec_file.exists() and json.loads(spec_file.read_text(encoding="utf-8")) != spec:
        stderr.print(f"{prefix} {run.label} seed {run.seed}: settings changed since the stored run; running it again")
        shutil.rmtree(run_dir)
    if result_file.exists():
        stderr.print(f"{prefix} {run.label} seed {run.seed}: done earlier, skipped")
        return
    if failed_file.exists() and not rerun_failed:
        return
    failed_file.unlink(missing_ok=True)
    write_json(spec_file, spec)
    stderr.print(f"{prefix} [bold]{run.label}[/] seed {run.seed}")
    process = subprocess.Popen([sys.executable, "-m", "adaptlab.compare.worker", str(run_dir)], env=_worker_env(),
                               preexec_fn=_die_with_parent)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.wait()  # the worker got the same Ctrl-C; let it stop cleanly (its checkpoints stay)
        stderr.print(f"interrupted during {run.label} seed {run.seed}; run the same command again to resume")
        raise
    if code != 0 and not failed_file.exists():
        write_json(failed_file, {"status": "failed", "error": f"worker process exited with code {code}"})


def _die_with_parent() -> None:
    """In the worker, before it starts: on Linux, ask the kernel for SIGTERM when the comparison process dies (even
    by kill -9), so no orphaned worker goes on writing into a run directory a re-run is using."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _worker_env() -> dict:
    """The worker's environment: this one, plus the modules that registered families or methods here (and this
    process's import path, so they import there too)."""
    from adaptlab.families import PLUGIN_ENV, PLUGIN_MODULES

    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if PLUGIN_MODULES:
        env[PLUGIN_ENV] = ",".join(PLUGIN_MODULES)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def _model_info(models: list[str]) -> dict[str, ModelInfo]:
    from transformers import AutoConfig

    from adaptlab.models import resolve_model
    from adaptlab.models.loading import loading, max_positions, model_kind

    info = {}
    for model in models:
        ref = resolve_model(model)
        with loading(ref):  # a damaged config is one line
            config = AutoConfig.from_pretrained(ref.path)
        positions = max_positions(config)
        info[model] = ModelInfo(model_kind(ref), positions)
    return info


def _plain(plan: ComparePlan) -> dict:
    return {k: v for k, v in dataclasses.asdict(plan).items() if k != "data"}
