"""One comparison run in its own process: ``python -m adaptlab.compare.worker RUN_DIR``.

A fresh process per run makes the peak memory it reports that run's own (a strategy run earlier in the same
process would leave allocations behind) and lets an interrupted comparison resume run by run. The worker
reads ``RUN_DIR/spec.json``, trains into ``RUN_DIR/artifact`` (resuming from its checkpoints if an earlier
attempt was interrupted), and writes ``RUN_DIR/result.json`` last, atomically: its presence means done.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from adaptlab._io import write_json
from adaptlab.errors import AdaptlabError

GENERATION_STRATEGIES = ("prompting", "rag", "sft", "dpo")  # the generation ladder's (adaptlab.compare.generation)


def run(run_dir: Path) -> dict:
    from adaptlab.compare.tuning import tuned_params
    from adaptlab.config import DataConfig
    from adaptlab.jobs import work_dir
    from adaptlab.methods import get_strategy
    from adaptlab.runner import train

    spec = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    if spec["strategy"] in GENERATION_STRATEGIES:
        from adaptlab.compare.generation import run_generation

        return run_generation(spec, run_dir)
    started = time.perf_counter()
    splits = DataConfig(**spec["data"]).load()
    tuning = _tune(spec, splits, run_dir.parent / "tuning") if spec.get("tune") else None
    params = {**(tuned_params(spec["params"], tuning["best"]) if tuning else spec["params"]), "seed": spec["seed"]}
    artifact = run_dir / "artifact"
    if "resume" in get_strategy(spec["strategy"]).param_names() and (work_dir(artifact) / "checkpoints" / "last.ckpt").exists():
        params["resume"] = True
    result = train(spec["strategy"], splits, artifact, overwrite=True, **params)  # the comparison owns its run directories
    manifest = result.manifest
    return {
        "status": "done",
        "spec": spec,
        "metrics": {"test": manifest["metrics"]["test"], "val": manifest["metrics"]["val"],
                    **({"test_over_draws": manifest["metrics"]["test_over_draws"]} if "test_over_draws" in manifest["metrics"] else {})},
        "cost": manifest["cost"],
        "artifact_bytes": manifest["size_bytes"],
        "params": manifest["params"],
        "base_model": manifest["base_model"],
        "data": manifest["data"],
        "labels": manifest["labels"],
        "test_predictions": result.test_proba.argmax(axis=1).tolist(),
        "test_labels": splits.test.labels.tolist(),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "resumed_from_epoch": (manifest["training"] or {}).get("resumed_from_epoch"),
        "stopped": (manifest["training"] or {}).get("stopped"),  # converged / step_cap / time_cap; None: not trained
        "steps": (manifest["training"] or {}).get("steps"),
        "lr_chosen": ((manifest["training"] or {}).get("lr_search") or {}).get("chosen"),  # --lr-search's pick
        **({"tuning": tuning} if tuning else {}),
    }


def _tune(spec: dict, splits, directory: Path) -> dict:
    """The entry's study, shared by its seeds (``directory`` is beside the seed directories); a study made for other
    data, settings or search space is started afresh. Only the training and validation splits are passed on."""
    import shutil

    from adaptlab.compare.tuning import tune

    identity = {key: spec[key] for key in ("strategy", "model", "params", "data")} | {"space": spec["tune"]["space"]}
    stored = directory / "spec.json"
    if stored.exists() and json.loads(stored.read_text(encoding="utf-8")) != identity:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(stored, identity)
    return tune(spec["strategy"], spec["params"], spec["tune"]["space"], spec["tune"]["trials"], splits.train, splits.val,
                directory)


def main() -> None:
    run_dir = Path(sys.argv[1])
    try:
        result = run(run_dir)
    except KeyboardInterrupt:
        sys.exit(130)  # no result: the next comparison resumes this run
    except Exception as exc:  # recorded, so the comparison goes on with the other runs and reports this one
        message = str(exc) if isinstance(exc, AdaptlabError) else f"{type(exc).__name__}: {exc}"
        write_json(run_dir / "failed.json", {"status": "failed", "error": message, "traceback": traceback.format_exc()})
        print(f"adaptlab: run failed: {message}", file=sys.stderr)
        sys.exit(1)
    write_json(run_dir / "result.json", result)


if __name__ == "__main__":
    main()
