"""Issue 47's load on the real ranking server: many annotators at once, none refused an item it was shown.

For each level (10, then 50 annotators) a fresh project (--items prompts of 4 imported candidates, --overlap
annotators per item) is served by `adaptlab feedback serve` in a subprocess on a free loopback port, as an
operator starts it. Each annotator is a thread with its own keep-alive connection that loops: GET / (the server
reserves the next item for it), POST /api/submit a ranking of that item; until the server has nothing left for
it. Bounded: at most --seconds per level, and at most --items submissions per annotator. Measured per level:

- ``refused``: submissions answered 409 for an item the server had just shown (``refused_fraction``, target
  <= 0.01; before reservations 10 annotators had 1,318 of 1,587 refused);
- ``lost``: submissions answered 200 whose row is not in the database (target 0);
- ``overlap_exact``: every item has exactly --overlap live judgements, none more, none fewer.

    python benchmarks/feedback_concurrency.py [--items 400] [--overlap 3] [--seconds 180]
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _common import save

LEVELS = (10, 50)


def _project(root: Path, items: int, overlap: int, annotators: int) -> tuple[Path, list[str]]:
    from adaptlab.feedback import project

    candidates = root / "candidates.jsonl"
    candidates.write_text("".join(json.dumps({"prompt": f"prompt {i}", "responses": [f"answer {i}.{j}" for j in range(4)]}) + "\n"
                                  for i in range(items)), encoding="utf-8")
    directory = root / "project"
    project.new_project(directory, candidates_path=candidates, overlap=overlap)
    return directory, [project.add_annotator(directory, f"annotator-{i:02d}") for i in range(annotators)]


def _serve(directory: Path) -> tuple[subprocess.Popen, str]:
    """`adaptlab feedback serve DIRECTORY` on a free loopback port; returns it and its URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "adaptlab", "feedback", "serve", str(directory), "--host", "127.0.0.1",
                               "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/login", timeout=1).status_code == 401:  # up: an unknown login is refused
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the feedback server did not start")


def _annotate(url: str, token: str, limit: int, seconds: float, start: threading.Barrier) -> dict:
    """One annotator: signs in, waits for the others, then loops; returns the ids of its submissions answered 200,
    the count answered 409 and the count sent."""
    stored, refused, attempts = [], 0, 0
    with httpx.Client(base_url=url, timeout=60) as client:
        if client.get(f"/login?token={token}").status_code != 303:
            raise SystemExit("login failed")
        start.wait()
        deadline = time.monotonic() + seconds
        while attempts < limit and time.monotonic() < deadline:
            page = client.get("/").text
            prompt = re.search(r'data-prompt="(\d+)"', page)
            if prompt is None:
                break  # nothing left for this annotator
            ids = [int(i) for i in re.findall(r'data-id="(\d+)"', page)]
            body = {"submission_id": re.search(r'data-submission="([^"]+)"', page).group(1), "prompt_id": int(prompt.group(1)),
                    "action": "rank", "ranking": [[i] for i in ids]}
            csrf = re.search(r'name="csrf-token" content="([^"]*)"', page).group(1)
            response = client.post("/api/submit", json=body, headers={"X-CSRF-Token": csrf})
            attempts += 1
            if response.status_code == 200:
                stored.append(body["submission_id"])
            elif response.status_code == 409:
                refused += 1
            else:
                raise SystemExit(f"the server answered {response.status_code}: {response.text[:200]}")
    return {"stored": stored, "refused": refused, "attempts": attempts}


def _level(annotators: int, items: int, overlap: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="adaptlab-feedback-bench-") as root:
        directory, tokens = _project(Path(root), items, overlap, annotators)
        server, url = _serve(directory)
        try:
            start = threading.Barrier(annotators + 1, timeout=120)  # every login done, then all start at once
            with ThreadPoolExecutor(annotators) as pool:
                running = [pool.submit(_annotate, url, token, items, seconds, start) for token in tokens]
                start.wait()
                started = time.perf_counter()
                done = [future.result() for future in running]
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
        conn = sqlite3.connect(directory / "feedback.sqlite")
        live = {sid for (sid,) in conn.execute("SELECT id FROM submissions WHERE undone = 0")}
        per_item = [n for (n,) in conn.execute("SELECT COUNT(s.id) FROM prompts p LEFT JOIN submissions s "
                                               "ON s.prompt_id = p.id AND s.undone = 0 GROUP BY p.id")]
        conn.close()
    submissions = sum(d["attempts"] for d in done)
    refused = sum(d["refused"] for d in done)
    return {"annotators": annotators, "submissions": submissions, "refused": refused,
            "refused_fraction": round(refused / max(submissions, 1), 4),
            "lost": len({sid for d in done for sid in d["stored"]} - live),
            "overlap_exact": len(per_item) == items and all(n == overlap for n in per_item), "seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180, help="most seconds per level")
    args = parser.parse_args()
    results = []
    for annotators in LEVELS:
        results.append(_level(annotators, args.items, args.overlap, args.seconds))
        print(results[-1], flush=True)
    save("feedback_concurrency", {
        "server": "adaptlab feedback serve (defaults: 300 s leases), uvicorn, one SQLite file in WAL mode",
        "client": "one thread and keep-alive httpx connection per annotator, same machine: GET / then POST /api/submit",
        "items": args.items, "overlap": args.overlap, "max_seconds_per_level": args.seconds,
        "targets": {"refused_fraction": "<= 0.01", "lost": 0, "overlap_exact": True},
        "results": results})


if __name__ == "__main__":
    main()
