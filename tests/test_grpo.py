"""GRPO and RLOO on TRL with reward functions: the functions on hand-made completions, the commands, the Python API,
the compare entry, and one step on the real SmolLM2."""

from __future__ import annotations

import json
import time

import pytest

import adaptlab
from adaptlab.errors import AdaptlabError
from adaptlab.rlhf.reward_functions import build_rewards, check_rewards, last_number, parse_reward
from conftest import write_jsonl

TINY_RL = ("--train-size", "8", "--val-size", "4", "--test-size", "4", "--max-steps", "2", "--batch-size", "2",
           "--num-generations", "2", "--max-completion-length", "4")


def scores(spec: str, completions: list, answers: list | None = None) -> list[float]:
    (function,) = build_rewards(check_rewards([spec]))
    return function(["q"] * len(completions), completions, **({"answer": answers} if answers is not None else {}))


def test_built_in_rewards_score_hand_made_completions(tmp_path):
    assert scores("exact", ["Paris.", " paris", "Lyon", ""], ["Paris"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert scores("numeric", ["The answer is 42", "41.99", "1,024", "no idea", "42 or 43"], ["42", "42", "1024", "42", "42"]) \
        == [1.0, 0.0, 1.0, 0.0, 0.0]  # the last number counts; none is 0
    assert scores("numeric:0.01", ["3.141"], ["3.14"]) == [1.0]
    assert scores(r"regex:\d+", ["12", " 12 ", "12a"]) == [1.0, 1.0, 0.0]
    assert scores("length:2-3", ["one", "one two", "one two three four"]) == [0.0, 1.0, 0.0]
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}))
    assert scores(f"json-schema:{schema}", ['{"name": "a"}', '{"name": 1}', "{not json", "[" * 5000]) == [1.0, 0.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": "7"}]]  # TRL's conversational completions
    assert scores("numeric", chat, ["7"]) == [1.0]
    assert last_number("-3.5 then 1,000") == 1000.0
    assert parse_reward("numeric@0.5").weight == 0.5 and parse_reward(f"json-schema:{schema}@2").argument == str(schema)


@pytest.mark.parametrize("spec, message", [
    ("", "--reward is empty"), ("regex:(", "not a valid regular expression"), ("json-schema:nope.json", "does not exist"),
    ("length:ten", "MIN-MAX"), ("numeric@x", "weight after @"), ("numeric:abc", "tolerance"), ("sparkle", "not a built-in"),
    ("no_such_module_x:f", "cannot import"),
])
def test_bad_rewards_are_one_line_before_any_model_loads(spec, message):
    with pytest.raises(AdaptlabError, match=message):
        check_rewards([spec])


def test_a_user_function_is_called_with_the_data_columns_and_checked(tmp_path, monkeypatch):
    module = tmp_path / "my_rewards.py"
    module.write_text("def short(prompts, completions):\n    return [1.0 / (1 + len(c)) for c in completions]\n"
                      "def right(prompts, completions, answer, **_):\n    return [float(c == a) for c, a in zip(completions, answer)]\n"
                      "def broken(prompts, completions):\n    return 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert scores("my_rewards:short", ["ab", ""]) == [pytest.approx(1 / 3), 1.0]
    assert scores("my_rewards:right", ["4", "5"], ["4", "4"]) == [1.0, 0.0]
    with pytest.raises(AdaptlabError, match="one number per response"):
        scores("my_rewards:broken", ["a"])


def test_grpo_cli_trains_scores_and_writes_a_generator(cli, tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "grpo"
    code, stdout, err = cli("rlhf", "grpo", "--data", "arithmetic", "--model", tiny_llama, "--reward", "numeric",
                            "--reward", "length:1-3@0.5", *TINY_RL, "-o", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result["metrics"]["test"]["rewards"]) == {"numeric", "length"} and result["metrics"]["test"]["n"] == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"] == "grpo-policy" and len(manifest["training"]["reward_per_step"]) == 2
    assert [r["weight"] for r in manifest["details"]["rewards"]] == [1.0, 0.5]
    assert isinstance(adaptlab.load_artifact(out), adaptlab.generation.Generator)
    code, _, err = cli("generate", "--model", out, "--max-new-tokens", "2", "--no-stream", "What is 2 + 2?")
    assert code == 0, err
    trained = json.loads((out / "train_prompts.json").read_text())
    assert len(trained) == 8  # recorded, so `rlhf eval` holds them out
    (tmp_path / "lengths.py").write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([trained[0], "What is 3 + 4?", "What is 5 + 1?", "What is 2 + 9?", "What is 8 - 3?"]))
    code, stdout, err = cli("rlhf", "eval", out, "--reward", "lengths:score", "--prompts", prompts, "-n", "4",
                            "--max-new-tokens", "3", "-o", tmp_path / "eval")
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["prompts"] == 4

    started = time.perf_counter()
    code, _, err = cli("rlhf", "grpo", "--data", "arithmetic", "--model", tiny_llama, "--reward", "regex:(", "-o", tmp_path / "x")
    assert code == 2 and "regular expression" in err and time.perf_counter() - started < 2 and not (tmp_path / "x").exists()
    code, _, err = cli("rlhf", "rloo", "--data", "arithmetic", "--model", tiny_llama, "-o", tmp_path / "y")
    assert code == 2 and "--reward is required" in err


def test_rloo_python_api_and_plain_text_data_refused(tiny_llama, tmp_path):
    from adaptlab.rlhf.grpo import train_rloo

    splits = adaptlab.load_generation_splits("arithmetic", train_size=8, val_size=4, test_size=4)
    result = train_rloo(splits, tmp_path / "rloo", model=str(tiny_llama), reward=["numeric"], max_steps=1, batch_size=2,
                        num_generations=2, max_completion_length=4, progress=False)
    assert result.manifest.strategy == "rloo-policy" and result.manifest.metrics.test["rewards"]["numeric"] >= 0
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": f"plain text {i}"} for i in range(30)])
    with pytest.raises(AdaptlabError, match="need prompts"):
        train_rloo(adaptlab.load_generation_splits(str(text)), tmp_path / "no", model=str(tiny_llama), reward=["numeric"],
                   max_steps=1, progress=False)


def test_compare_grpo_entry_continues_the_lora_run(cli, tiny_llama, tmp_path):
    output = tmp_path / "cmp"
    code, _, err = cli("compare", "--data", "arithmetic", "--models", tiny_llama, "--train-size", "16", "--val-size", "8",
                       "--test-size", "8", "--set", "all.max_new_tokens=4", "--set", "grpo.num_generations=2",
                       "--set", "grpo.max_steps=1", "--set", "grpo.batch_size=2", "--strategies", "zero-shot,lora,grpo",
                       "--reward", "numeric", "--epochs", "1", "--output", output)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert results["failures"] == [] and {e["entry"] for e in results["entries"]} == {"zero-shot", "lora", "grpo"}
    code, _, err = cli("compare", "--data", "arithmetic", "--models", tiny_llama, "--strategies", "lora,grpo",
                       "--output", tmp_path / "none")
    assert code == 2 and "needs --reward" in err


@pytest.mark.slow
def test_grpo_on_smollm2_one_step(tmp_path):
    from adaptlab.rlhf.grpo import train_grpo

    splits = adaptlab.load_generation_splits("arithmetic", train_size=4, val_size=2, test_size=4)
    result = train_grpo(splits, tmp_path / "grpo", model="smollm2-135m", reward=["numeric"], max_steps=1, batch_size=1,
                        num_generations=2, max_completion_length=6, progress=False)
    assert result.manifest.training["steps"] == 1 and 0 <= result.manifest.metrics.test["reward"] <= 1
    assert result.manifest.base_model["name"] == "smollm2-135m"
