"""ORPO, SimPO and KTO on TRL: each trains a tiny model end to end through the CLI and the Python API, writes a
generator artifact, and runs as a comparison entry from the lora run; KTO reads thumbs and pairs."""

from __future__ import annotations

import json

import pytest

import adaptlab
from adaptlab.errors import AdaptlabError
from conftest import write_csv, write_jsonl


def pairs_file(tmp_path, n: int = 20):
    rows = [{"prompt": f"Say the colour number {i}.", "chosen": "red", "rejected": "I cannot say."} for i in range(n)]
    return write_jsonl(tmp_path / "prefs.jsonl", rows)


@pytest.mark.parametrize("trainer", ["orpo", "simpo"])
def test_pair_trainers_cli_write_generators(trainer, cli, tiny_llama, tmp_path):
    out = tmp_path / trainer
    code, stdout, err = cli("rlhf", trainer, "--data", pairs_file(tmp_path), "--model", tiny_llama, "--epochs", "1",
                            "--max-length", "64", "-o", out)
    assert code == 0, err
    assert f"{trainer.upper()} on" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"] == f"{trainer}-policy" and "logps/chosen" in manifest["metrics"]["test"]
    assert isinstance(adaptlab.load_artifact(out), adaptlab.generation.Generator)
    code, _, err = cli("rlhf", trainer, "--data", pairs_file(tmp_path), "--model", tiny_llama, "--beta", "-1", "-o", tmp_path / "x")
    assert code == 2 and "--beta" in err


def test_kto_reads_thumbs_and_pairs(cli, tiny_llama, tmp_path):
    from adaptlab.rlhf.kto import read_thumbs, split_thumbs, train_kto

    rows = [{"prompt": f"Say the colour number {i}.", "completion": "red" if i % 2 else "no.", "label": ["down", "up"][i % 2]}
            for i in range(24)]
    thumbs = write_csv(tmp_path / "thumbs.csv", rows)
    code, stdout, err = cli("rlhf", "kto", "--data", thumbs, "--model", tiny_llama, "--epochs", "1", "--max-length", "64",
                            "-o", tmp_path / "kto")
    assert code == 0, err
    assert json.loads((tmp_path / "kto" / "manifest.json").read_text())["data"]["thumbs_up"]["train"] > 0
    from_pairs = read_thumbs(str(pairs_file(tmp_path)))
    assert len(from_pairs) == 40 and sum(t.label for t in from_pairs) == 20
    result = train_kto(split_thumbs(from_pairs, "pairs"), tmp_path / "kto2", model=str(tiny_llama), epochs=1, max_length=64,
                       progress=False)
    assert result.manifest.strategy == "kto-policy"
    bad = write_csv(tmp_path / "bad.csv", [{"prompt": "p", "completion": "c", "label": "maybe"}] * 6)
    with pytest.raises(AdaptlabError, match="'label' must be true/false"):
        read_thumbs(str(bad))


def test_preference_entries_in_a_generation_comparison(cli, tiny_llama, tmp_path):
    words = ["red", "green", "blue"]
    data = write_jsonl(tmp_path / "colours.jsonl", [{"prompt": f"Say the colour number {i}.", "completion": words[i % 3]}
                                                    for i in range(60)])
    output = tmp_path / "cmp"
    code, _, err = cli("compare", "--data", data, "--models", tiny_llama, "--train-size", "16", "--val-size", "8",
                       "--test-size", "8", "--set", "all.max_new_tokens=4", "--strategies", "lora,orpo,kto",
                       "--preferences", pairs_file(tmp_path), "--epochs", "1", "--output", output)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert results["failures"] == [] and {e["entry"] for e in results["entries"]} == {"lora", "orpo", "kto"}
    for entry in results["entries"]:
        assert entry["forgetting_ppl_delta"] is not None


@pytest.mark.parametrize("trainer", ["orpo", "simpo"])
def test_prompts_longer_than_max_length_are_cut_from_the_left_not_nan(trainer, tiny_llama, tmp_path):
    """A multi-turn prompt that alone fills --max-length would leave an empty completion, which ORPO and SimPO
    average over zero tokens: NaN losses and NaN weights. The prompt is cut from the left instead."""
    import math

    import torch

    from adaptlab.rlhf import read_preferences, split_preferences
    from adaptlab.rlhf.trl_policy import fit_prompt

    history = " ".join(f"Human: tell me about colour {j}. Assistant: colour {j} is fine." for j in range(40))
    rows = [{"prompt": f"{history} Human: say the colour number {i}.", "chosen": "red", "rejected": "I cannot say."}
            for i in range(20)]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    pairs, _ = read_preferences(str(path))
    train = getattr(__import__(f"adaptlab.rlhf.{trainer}", fromlist=["x"]), f"train_{trainer}")
    result = train(split_preferences(pairs, str(path)), tmp_path / trainer, model=str(tiny_llama), epochs=1,
                   max_length=64, progress=False).manifest.to_json()
    assert all(math.isfinite(v) for k, v in result["metrics"]["test"].items() if isinstance(v, float) and "logps" in k)
    generator = adaptlab.load_artifact(tmp_path / trainer)
    assert all(torch.isfinite(p).all() for p in generator.model.parameters())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    cut = fit_prompt(tokenizer, rows[0]["prompt"], 64)
    assert rows[0]["prompt"].endswith(cut.strip()[-30:]) and len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 33
