"""Learning curves (compare --train-sizes): one test set for every size, runs reused by a rerun with more sizes,
crossovers and the per-budget recommendation computed from the numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from adaptlab.compare.curves import budget_advice, crossovers, parse_train_sizes
from adaptlab.errors import AdaptlabError


def row(entry: str, size, accuracy: float) -> dict:
    return {"entry": entry, "model": "minilm", "train_size": size, "accuracy": accuracy,
            "ci95": [accuracy - 0.05, accuracy + 0.05], "train_seconds": 1.0}


def test_crossovers_and_advice_follow_the_numbers():
    rows = [row("features-logreg", 8, 0.70), row("lora", 8, 0.60), row("features-logreg", 16, 0.72),
            row("lora", 16, 0.68), row("features-logreg", 64, 0.74), row("lora", 64, 0.80),
            row("features-logreg", "all", 0.75), row("lora", "all", 0.85)]
    (found,) = crossovers(rows, "accuracy")
    assert found["between"] == [16, 64] and found["ahead"] == "lora (minilm)" and found["ahead_from"] == 64
    advice = budget_advice(rows, "accuracy", per_class=True)
    assert advice[0].startswith("with <= 16 labels per class: features-logreg (minilm) (72.0 at 16")
    assert advice[1].startswith("from 64 labels per class: lora (minilm) (85.0 at all")
    flat = [row("head", 8, 0.5), row("head", 16, 0.6)]
    assert crossovers(flat, "accuracy") == [] and budget_advice(flat, "accuracy", False)[0].startswith("at every size")


@pytest.mark.parametrize("value, expected", [("16,8,all", [8, 16, "all"]), ([4, "all", 2], [2, 4, "all"])])
def test_train_sizes_parse(value, expected):
    assert parse_train_sizes(value) == expected


@pytest.mark.parametrize("value", ["8", "8,8", "0,8", "8,many", "1.5,4"])
def test_bad_train_sizes_are_one_line(value):
    with pytest.raises(AdaptlabError, match="--train-sizes"):
        parse_train_sizes(value)


def test_curves_end_to_end_with_one_test_set_and_reuse(tmp_path, tiny_bert, cli):
    records = [{"text": f"item {i}: {'bright warm' if i % 3 == 0 else 'dark cold' if i % 3 == 1 else 'plain'} words",
                "label": ("a", "b", "c")[i % 3]} for i in range(150)]
    pd.DataFrame(records).to_csv(tmp_path / "three.csv", index=False)
    base = ["compare", "--data", tmp_path / "three.csv", "--models", tiny_bert, "--strategies", "features-logreg,head",
            "-o", tmp_path / "curves", "--val-size", "12", "--test-size", "30"]
    code, out, err = cli(*base, "--train-sizes", "2,4", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert results["sizes"] == [2, 4] and results["size_unit"] == "examples per class"
    assert {(r["entry"], r["train_size"]) for r in results["learning_curves"]} == \
        {(e, s) for e in ("features-logreg", "head") for s in (2, 4)}
    assert all(r["train_examples"] == 3 * r["train_size"] for r in results["learning_curves"])
    per_size = {s: json.loads((tmp_path / "curves" / f"size-{s}" / "results.json").read_text()) for s in (2, 4)}
    assert per_size[2]["data"]["fingerprints"]["test"] == per_size[4]["data"]["fingerprints"]["test"]
    assert per_size[2]["data"]["fingerprints"]["val"] == per_size[4]["data"]["fingerprints"]["val"]
    assert results["recommendation"] and "data:image/png;base64," in (tmp_path / "curves" / "report.html").read_text()
    code, out, err = cli(*base, "--train-sizes", "2,4,all")
    assert code == 0, err
    assert err.count("done earlier, skipped") == 4  # the two sizes already run are reused
    assert "all" in out and "features-logreg" in out
    again = json.loads((tmp_path / "curves" / "results.json").read_text())
    assert [r["train_examples"] for r in again["learning_curves"] if r["train_size"] == "all"] == [150 - 30 - 15] * 2
    code, _, err = cli(*base, "--train-sizes", "2,4", "--train-size", "20")
    assert code == 2 and "not both" in err
