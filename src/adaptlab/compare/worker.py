"""One comparison run in its own process: ``python -m adaptlab.compare.worker RUN_DIR``.

A fresh process per run makes the peak memory it reports that run's own (a strategy run earlier in the same
process would leave allocations behind) and lets an interrupted comparison resume run by run. The worker
reads ``RUN_DIR/spec.json``, trains into ``RUN_DIR/artifact`` (resuming from its checkpoints if an earlier
attempt was interrupted), and writes ``RUN_DIR/result.json`` last, atomically: its presence means done.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from adaptlab._io import write_json
from adaptlab.errors import AdaptlabError


def run(run_dir: Path) -> dict:
    """Train or evaluate the run ``RUN_DIR/spec.json`` describes, with the runner of the family its entry belongs to."""
    from adaptlab.compare.tasks import runner_for
    from adaptlab.families import load_plugins

    load_plugins()  # families and methods the comparing process had registered
    spec = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    return runner_for(spec["strategy"]).run(spec, run_dir)


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
