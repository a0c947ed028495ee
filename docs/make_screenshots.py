"""The README's pictures, taken from real runs in headless Chromium (never from test fixtures).

- ``docs/compare-report.png``: the HTML report of a real ``adaptlab compare``. Pass ``--comparison DIR`` (any
  comparison's output directory) or let the script run a small one first: Rotten Tomatoes, ``--preset quick``,
  minilm, zero-shot-free ladder (features-logreg, head, last-k, lora, full): a few minutes on 2 CPU threads.
- ``docs/compare-generation-report.png``: with ``--generation-comparison DIR``, the report of a generation
  comparison (e.g. ``benchmarks/compare_generation.py``'s ``--workdir``/standard).
- ``docs/feedback-ranking.png``: the ranking page of a real feedback project: four IMDB review openings, four
  continuations of each sampled from SmolLM2-135M-Instruct (the packaged Q4_1 GGUF de-quantized to float).

    python docs/make_screenshots.py [--comparison DIR] [--generation-comparison DIR]

Needs playwright and Chromium (``/usr/bin/chromium``, the Debian package ``.ci/run`` installs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
LADDER = "features-logreg,head,last-k,lora,full"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comparison", type=Path, help="an `adaptlab compare` output directory (default: run one)")
    parser.add_argument("--generation-comparison", type=Path, help="a generation comparison's output directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adaptlab-screenshots-"))
    comparison = args.comparison or run_comparison(work / "compare")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page_shot(page, (comparison / "report.html").as_uri(), DOCS / "compare-report.png")
        if args.generation_comparison:
            page_shot(page, (args.generation_comparison / "report.html").as_uri(), DOCS / "compare-generation-report.png")
        with ranking_server(work / "project") as url:
            page_shot(page, url, DOCS / "feedback-ranking.png")
        browser.close()


def run_comparison(output: Path) -> Path:
    command = [sys.executable, "-m", "adaptlab", "compare", "--data", "rotten_tomatoes", "--preset", "quick",
               "--models", "minilm", "--strategies", LADDER, "--output", str(output)]
    subprocess.run(command, check=True)
    return output


def page_shot(page, url: str, target: Path) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    height = min(page.evaluate("document.body.scrollHeight"), 2400)  # the top of a long report is what the README shows
    page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": 1280, "height": height})
    print(f"wrote {target}")


@contextlib.contextmanager
def ranking_server(directory: Path) -> Iterator[str]:
    """A real project (SmolLM2 samples four continuations of IMDB review openings), served on a free port;
    yields one annotator's login link."""
    from adaptlab.data import load_data
    from adaptlab.feedback.app import serve_in_background
    from adaptlab.feedback.project import add_annotator

    prompts = directory.parent / "prompts.jsonl"
    openings = [" ".join(text.split()[:12]) for text in load_data("imdb").texts[:4]]
    prompts.write_text("".join(json.dumps({"prompt": f"Continue this movie review: {o}"}) + "\n" for o in openings))
    subprocess.run([sys.executable, "-m", "adaptlab", "feedback", "new", str(directory), "--prompts", str(prompts),
                    "--model", "smollm2-135m", "-n", "4", "--max-new-tokens", "40"], check=True)
    token = add_annotator(directory, "alice")
    with serve_in_background(directory) as base:
        yield f"{base}/login?token={token}"


if __name__ == "__main__":
    main()
