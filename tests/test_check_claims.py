"""benchmarks/check_claims.py: the docs' benchmark figures match their result files, and a wrong or uncited one fails.

Fast (no models): the checker reads markdown and JSON only. It runs as CI runs it, a separate process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "benchmarks" / "check_claims.py"


def check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *map(str, files)], check=False, capture_output=True, text=True, cwd=ROOT)


def test_the_real_docs_match_their_result_files():
    result = check()  # README.md, benchmarks/README.md, docs/**/*.md
    assert result.returncode == 0, result.stdout
    checked = int(re.search(r"(\d+) figures checked", result.stdout).group(1))
    assert checked > 100, result.stdout  # the README alone cites hundreds; a parser that finds none must not pass


def test_a_changed_figure_in_the_readme_fails_naming_the_figure_and_its_file(tmp_path):
    readme = (ROOT / "README.md").read_text()
    cited = re.search(r"(-?\d+\.\d+)(?=[^\s<]*<!-- claim: (\S+\.json) )", readme)
    assert cited, "the README cites no figure"
    figure, file = cited.group(1), cited.group(2)
    wrong = figure[:-1] + str((int(figure[-1]) + 5) % 10)  # off by half the printed range: never a rounding
    copy = tmp_path / "README.md"
    copy.write_text(readme[: cited.start(1)] + wrong + readme[cited.end(1) :])
    result = check(copy)
    assert result.returncode == 1, result.stdout
    assert f"figure {wrong} does not match {file}" in result.stdout
    assert result.stdout.count("does not match") == 1


@pytest.mark.parametrize(
    "markdown, message",
    [
        ("Start-up in **0.98 s**<!-- claim: no_such_result.json validation_error_seconds -->.",
         "cites no_such_result.json, which does not exist"),
        ("Start-up in 0.98 s<!-- claim: validation_error_seconds -->.", "cites no result file"),
        ("Start-up in 0.98 s<!-- claim: startup.json no_such_key -->.", "startup.json has no 'no_such_key'"),
        ("Start-up in **0.98 s** on 2 threads.", "bold figure **0.98 s** cites no result file"),
        ("<!-- claim: startup.json help_seconds --> answers fast.", "no figure right before it"),
        ("| run | s<!-- claim-col: train_seconds --> |\n| --- | ---: |\n| adaptlab | 122.4 |",
         "cites no result file (add <!-- claim-row"),
        (("| run | s<!-- claim-col: median --> |\n| --- | ---: |\n"
          "| adaptlab<!-- claim-row: lora_vs_hf_trainer.json train_seconds.adaptlab --> | 123.4 |"),
         "figure 123.4 does not match lora_vs_hf_trainer.json train_seconds.adaptlab median"),
    ],
)
def test_an_unchecked_or_wrong_figure_fails(tmp_path, markdown, message):
    doc = tmp_path / "doc.md"
    doc.write_text(markdown + "\n")
    result = check(doc)
    assert result.returncode == 1, result.stdout
    assert message in result.stdout


def test_markers_tables_and_arithmetic_that_match_pass(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "**1.12x**<!-- claim: lora_vs_hf_trainer.json ratio_vs_hf_group_by_length --> at "
        "-0.35<!-- claim: lora_vs_hf_trainer.json (accuracy_adaptlab - accuracy_hf_group_by_length) *100 --> "
        "points, 0.7 min<!-- claim: lora_vs_hf_trainer.json train_seconds.adaptlab.median /60 -->.\n\n"
        "| run | s<!-- claim-col: mine.median; theirs.median --> | fastest<!-- claim-col: mine.min --> |\n"
        "| --- | --- | ---: |\n"
        "| both<!-- claim-row mine: lora_vs_hf_trainer.json train_seconds.adaptlab --><!-- claim-row theirs: "
        "lora_vs_hf_trainer.json train_seconds.hf_group_by_length --> | 44 vs 49 | **44.05** |\n\n"
        "```\nin a code block 9.99x<!-- claim: nothing.json x --> is an example, not a figure\n```\n"
    )
    result = check(doc)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("6 figures checked in 1 files")
