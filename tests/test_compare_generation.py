"""`adaptlab compare` on generation tasks: the ladder, the statistics, the report, resume and failures, on a tiny
random Llama for the mechanics and on SmolLM2 for the user-facing path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import default_sigint, write_jsonl

from adaptlab.compare.generation import GENERATION_PRESETS
from adaptlab.compare.plan import ComparePlan, ModelInfo, Run
from adaptlab.compare.plan_file import compare_plan
from adaptlab.data.generation import infer_task
from adaptlab.config import DataConfig, GenerationDataConfig
from adaptlab.errors import AdaptlabError

DECODER = {"dec": ModelInfo("decoder", 256), "enc": ModelInfo("encoder", 512)}


def colour_rows(n: int = 80) -> list[dict]:
    words = ["red", "green", "blue", "black", "white", "grey"]
    return [{"prompt": f"Say the colour number {i}.", "completion": words[i % len(words)]} for i in range(n)]


def preference_rows(n: int = 12) -> list[dict]:
    return [{"prompt": f"Say the colour number {i}.", "chosen": "red", "rejected": "I cannot say."} for i in range(n)]


def gen_plan(**values) -> ComparePlan:
    values.setdefault("models", ["dec"])
    return ComparePlan(data=GenerationDataConfig(), **values)


# -- plan ------------------------------------------------------------------------------------------------
def test_generation_is_inferred_from_the_data(tmp_path):
    assert infer_task("wiki-descriptions") == "generation" and infer_task("rotten_tomatoes") == "classification"
    assert infer_task(str(write_jsonl(tmp_path / "pc.jsonl", colour_rows(3)))) == "generation"
    assert infer_task(str(write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]))) == "generation"
    assert infer_task(str(write_jsonl(tmp_path / "cls.jsonl", [{"text": "good", "label": "pos"}]))) == "classification"
    plan = ComparePlan(data=DataConfig(source="wiki-descriptions"))  # the Python API: task and models follow the data
    assert plan.task == "generation" and plan.models == ["smollm2-135m"] and isinstance(plan.data, GenerationDataConfig)


def test_generation_ladder_adds_rag_and_dpo_only_with_their_inputs():
    names = lambda plan: [r.entry for r in plan.runs(DECODER)]
    ladder = ["zero-shot", "few-shot", "knn-shot", "prompt-tuning", "prefix-tuning", "lora", "last-k", "full"]
    assert names(gen_plan()) == ladder
    with_inputs = gen_plan(documents=["docs"], preferences="prefs.jsonl")
    assert names(with_inputs) == ladder[:3] + ["rag"] + ladder[3:] + ["dpo"]
    runs = {r.entry: r for r in gen_plan(seeds=2).runs(DECODER)}
    assert runs["lora"].params["lr"] == 1e-3 and runs["lora"].params["max_steps"] == GENERATION_PRESETS["quick"].max_steps and runs["lora"].params["batch_size"] == 4
    assert [r.seed for r in gen_plan(seeds=2).runs(DECODER) if r.entry == "zero-shot"] == [0]  # unseeded: once
    assert [r.seed for r in gen_plan(seeds=2).runs(DECODER) if r.entry == "few-shot"] == [0, 1]
    assert gen_plan(preset="standard").runs(DECODER)[1].params["draws"] == 3


@pytest.mark.parametrize("values, message", [
    ({"strategies": ["dpo"], "preferences": "org/prefs"}, "list lora"),
    ({"preferences": "missing.jsonl"}, "does not exist"),
    ({"strategies": ["rag"]}, "needs --documents"),
    ({"metric": "bleu"}, "--metric must be one of"),
    ({"strategies": ["head"]}, "unknown entry 'head' for generation"),
    ({"models": ["enc"]}, "needs causal LMs"),
    ({"params": {"lora": {"r": 0}}}, "--r"),
    ({"params": {"zero-shot": {"temperature": 1}}}, "takes no parameter 'temperature'"),
    ({"params": {"lora": {"alpha_beta": 1}}}, "alpha_beta"),
])
def test_bad_generation_plans_are_refused(values, message):
    with pytest.raises(AdaptlabError, match=message):
        plan = gen_plan(**values)
        plan.check()
        plan.runs(DECODER)


def test_classification_plans_refuse_generation_options():
    with pytest.raises(AdaptlabError, match="for generation tasks"):
        ComparePlan(data=DataConfig(), models=["enc"], metric="token_f1").check()


def test_yaml_generation_plan(tmp_path):
    config = tmp_path / "cmp.yaml"
    config.write_text("data: {source: wiki-descriptions, train_size: 32}\npreset: quick\nstrategies: [zero-shot, lora]\n"
                      "metric: token_f1\nparams: {lora: {r: 4}}\n", encoding="utf-8")
    plan = compare_plan(config, {}, {"seeds": 2})
    assert plan.task == "generation" and plan.metric == "token_f1" and plan.seeds == 2
    assert plan.data_config().train_size == 32 and plan.data_config().test_size == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: wiki-descriptions, label_column: y}\n", encoding="utf-8")
    with pytest.raises(AdaptlabError, match="label_column"):
        compare_plan(bad, {}, {})


# -- statistics and the report ---------------------------------------------------------------------------
def fake_results(output: Path, data, spec: dict[str, tuple[list[float], int, float, float]], seeds: int = 1) -> list[Run]:
    """entry -> (per-example ROUGE-L, trainable params, train seconds, general-ppl relative change)."""
    runs = []
    for entry, (scores, trainable, seconds, forgetting) in spec.items():
        for seed in range(seeds):
            run = Run(entry, "sft", "dec", seed, {"model": "dec"})
            directory = output / "runs" / run.key
            directory.mkdir(parents=True)
            per_example = {m: scores for m in ("rouge_l", "token_f1", "exact_match")}
            samples = [{"prompt": f"prompt {i}", "reference": "ref", "output": f"{entry} says <script>document.body.dataset.pwned='yes'</script>"}
                       for i in range(2)]
            (directory / "result.json").write_text(json.dumps({
                "status": "done", "spec": run.spec(data), "data": {"sizes": {"train": 8, "val": 4, "test": len(scores)}},
                "metrics": {"test": {"rouge_l": float(np.mean(scores)), "token_f1": float(np.mean(scores)),
                                     "exact_match": float(np.mean(scores)), "loss": 1.0, "perplexity": 2.7, "stopped": 0.75},
                            "val": {"loss": 1.1}},
                "stopped": "converged" if trainable else None,
                "per_example": per_example, "samples": samples,
                "forgetting": {"general_ppl_delta": 10 * forgetting, "general_ppl_relative": forgetting, "rt_accuracy_delta": -0.01},
                "artifact_bytes": 2**20 if trainable else 0, "base_model": {"name": "dec"},
                "cost": {"trainable_params": trainable, "total_params": 10**6, "peak_rss_mb": 500.0, "train_seconds": seconds,
                         "generated_tokens_per_second": 50.0},
            }))
            runs.append(run)
    return runs


def summarised(tmp_path):
    from adaptlab.compare.generation_summary import summarise

    rng = np.random.default_rng(0)
    strong = (rng.random(60) < 0.8).astype(float)
    close = strong.copy()
    close[:2] = 1 - close[:2]  # two examples differ: within noise
    data = GenerationDataConfig()
    runs = fake_results(tmp_path, data, {"full": (strong.tolist(), 10**6, 100.0, 0.20), "lora": (close.tolist(), 10**4, 30.0, 0.01),
                                         "zero-shot": ((rng.random(60) < 0.2).astype(float).tolist(), 0, 0.0, 0.0)})
    return summarise(gen_plan(), data, runs, tmp_path, 60.0)


def test_summary_intervals_ties_fronts_and_recommendation(tmp_path):
    results = summarised(tmp_path)
    by = {e["entry"]: e for e in results["entries"]}
    assert results["task"] == "generation" and [e["entry"] for e in results["entries"]][-1] == "zero-shot"
    for entry in results["entries"]:
        low, high = entry["rouge_l"]["ci95"]
        assert low <= entry["rouge_l"]["mean"] <= high
    assert by["lora"]["tied_with_best"] and not by["zero-shot"]["tied_with_best"]
    # two different "stopped": how training ended (per run, as for classification) and the share of replies that
    # ended by themselves (once one key, the second overwrote the first)
    assert by["lora"]["stopped"] == ["converged"] and by["lora"]["replies_ended"]["mean"] == 0.75
    assert by["lora"]["pareto_time"] and by["lora"]["pareto_forgetting"] and by["zero-shot"]["pareto_params"]
    text = " ".join(results["recommendation"])
    assert "Recommended: lora (dec)" in text
    assert "lora keeps general-text perplexity within 1.0% of the base" in text and "full raises general-text perplexity by 20.0%" in text
    assert [set(row["outputs"]) for row in results["samples"]] == [{"full (dec)", "lora (dec)", "zero-shot (dec)"}] * 2


def test_report_escapes_model_output(tmp_path):
    from adaptlab.compare.generation_report import render_html

    page = render_html(summarised(tmp_path))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") == 3 and "Side by side" in page


def test_report_with_a_script_completion_runs_no_script_in_chromium(tmp_path, chromium):
    from adaptlab.compare.generation_report import write_report

    write_report(summarised(tmp_path), tmp_path / "report.html")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (tmp_path / "report.html").as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Side by side" in dom and "zero-shot says" in dom
    assert 'data-pwned="yes"' not in dom  # the completion's script would set it on <body> if it ran


# -- whole comparisons on a tiny model -------------------------------------------------------------------
def tiny_args(tiny_llama, data: Path, output: Path, *extra: str) -> list:
    return ["compare", "--data", str(data), "--models", str(tiny_llama), "--train-size", "24", "--val-size", "8",
            "--test-size", "8", "--set", "all.max_new_tokens=4", "--output", str(output), *extra]


def test_generation_compare_runs_every_kind_of_entry_and_skips_finished_runs(cli, tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "colours.jsonl", colour_rows())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "colours.txt").write_text("Colour number 1 is green. Colour number 2 is blue.", encoding="utf-8")
    prefs = write_jsonl(tmp_path / "prefs.jsonl", preference_rows())
    output = tmp_path / "cmp"
    args = tiny_args(tiny_llama, data, output, "--strategies", "zero-shot,knn-shot,rag,lora,dpo", "--documents", str(docs),
                     "--preferences", str(prefs))
    code, out, err = cli(*args)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert results["failures"] == []
    by = {e["entry"]: e for e in results["entries"]}
    assert set(by) == {"zero-shot", "knn-shot", "rag", "lora", "dpo"}
    assert results["data"]["sizes"] == {"train": 24, "val": 8, "test": 8}
    assert by["zero-shot"]["trainable_params"] == 0 and by["zero-shot"]["forgetting_ppl_delta"] == 0.0
    assert by["lora"]["trainable_params"] > 0 and by["lora"]["forgetting_before"]["general_ppl"] > 1
    assert by["lora"]["forgetting_ppl_delta"] is not None and Path(by["lora"]["artifacts"][0], "adapter").is_dir()
    assert by["dpo"]["trainable_params"] > by["lora"]["trainable_params"]  # the lora run it starts from is counted
    assert by["dpo"]["train_seconds"] > by["lora"]["train_seconds"] and by["rag"]["train_seconds"] > 0
    assert list((output / "runs").glob("*/forgetting-baseline-64.json"))
    for entry in results["entries"]:
        assert 0 <= entry["rouge_l"]["ci95"][0] <= entry["rouge_l"]["mean"] <= entry["rouge_l"]["ci95"][1] <= 1
    assert len(results["samples"]) == 5 and len(results["samples"][0]["outputs"]) == 5
    assert "ROUGE-L" in out and "Recommended:" in out and "report.html" in out
    assert "Side by side" in (output / "report.html").read_text()

    code, _, err = cli(*args)
    assert code == 0 and err.count("done earlier, skipped") == 5


def test_a_failing_generation_entry_is_reported_and_the_others_finish(cli, tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "colours.jsonl", colour_rows())
    code, out, _ = cli(*tiny_args(tiny_llama, data, tmp_path / "cmp", "--strategies", "zero-shot,last-k", "--set", "last-k.layers=99"))
    assert code == 1  # the report is written, and the exit code says a run failed
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [e["entry"] for e in results["entries"]] == ["zero-shot"]
    assert results["failures"][0]["entry"] == "last-k" and "layers" in results["failures"][0]["errors"][0]
    assert "failed: last-k" in out


def workers_of(output: Path) -> list[str]:
    """Live worker processes writing into ``output`` (from /proc: their command lines)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"adaptlab.compare.worker" in argv and any(str(output).encode() in arg for arg in argv):
            found.append(cmdline.parent.name)
    return found


def test_generation_compare_resumes_after_ctrl_c_and_kill_9(tiny_llama, tmp_path):
    """Interrupted twice in the same training run (Ctrl-C, then kill -9); the third start finishes it from
    its last checkpoint."""
    data = write_jsonl(tmp_path / "colours.jsonl", colour_rows(200))
    output = tmp_path / "cmp"
    command = [sys.executable, "-m", "adaptlab", *map(str, tiny_args(tiny_llama, data, output, "--strategies", "lora",
                                                                      "--epochs", "12", "--train-size", "160"))]
    pattern, seen = "runs/*/lora/seed-0/artifact.work/checkpoints/last.ckpt", 0
    for sig in (signal.SIGINT, signal.SIGKILL):
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=default_sigint)
        deadline, newer = time.time() + 180, None
        while time.time() < deadline and newer is None:  # a checkpoint written by this attempt: it is training
            newer = next((p for p in output.glob(pattern) if p.stat().st_mtime_ns > seen), None)
            time.sleep(0.2)
        assert newer is not None, "training never wrote a checkpoint"
        seen = newer.stat().st_mtime_ns
        if sig == signal.SIGINT:
            os.killpg(process.pid, sig)  # Ctrl-C reaches the whole foreground group
        else:
            os.kill(process.pid, sig)  # kill -9 of the comparison alone: its worker must not live on
        assert process.wait(timeout=60) != 0
        deadline = time.time() + 20
        while time.time() < deadline and workers_of(output):
            time.sleep(0.2)
        assert not workers_of(output), "a worker outlived the comparison"
        if sig == signal.SIGINT:  # an interrupted invocation still counts its time (resumed comparisons add up)
            interrupted = json.loads((output / "elapsed.json").read_text())["seconds"]
            assert interrupted > 0
        assert not list(output.glob("runs/*/lora/seed-0/result.json")) and not list(output.glob("runs/*/lora/seed-0/failed.json"))
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(next(output.glob("runs/*/lora/seed-0/result.json")).read_text())
    assert result["resumed_from_epoch"] is not None and result["resumed_from_epoch"] >= 1
    assert json.loads((output / "results.json").read_text())["wall_seconds"] > interrupted


# -- the real packaged model -----------------------------------------------------------------------------
@pytest.mark.slow
def test_generation_compare_on_smollm2_and_wiki_descriptions(cli, tmp_path):
    output = tmp_path / "cmp"
    code, out, err = cli("compare", "--data", "wiki-descriptions", "--strategies", "zero-shot,lora", "--train-size", "16",
                         "--val-size", "4", "--test-size", "8", "--set", "all.max_new_tokens=12", "--set", "all.forgetting_sample=16",
                         "--set", "lora.epochs=1", "--output", output)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    by = {e["entry"]: e for e in results["entries"]}
    assert by["zero-shot"]["model"] == "smollm2-135m" and results["failures"] == []
    assert by["zero-shot"]["rouge_l"]["mean"] > 0.05 and by["lora"]["rouge_l"]["mean"] > 0.05
    assert 0 <= by["lora"]["forgetting_before"]["rt_accuracy"] <= 1 and by["lora"]["forgetting_before"]["general_ppl"] > 1
    assert "Forgetting: lora" in " ".join(results["recommendation"])
