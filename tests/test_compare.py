"""`adaptlab compare`: the plan, the statistics, the report, resume, and whole comparisons on tiny and real models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adaptlab.compare.plan import ENTRIES, PRESETS, ComparePlan, ModelInfo
from adaptlab.compare.plan_file import compare_plan, parse_overrides
from adaptlab.config import DataConfig
from adaptlab.errors import AdaptlabError
from conftest import default_sigint

KINDS = {"enc": ModelInfo("encoder", 512), "dec": ModelInfo("decoder", 8192), "short": ModelInfo("encoder", 64)}


def plan(**values) -> ComparePlan:
    values.setdefault("models", ["enc", "dec"])
    return ComparePlan(data=DataConfig(), **values)


# -- plan ------------------------------------------------------------------------------------------------
def test_default_ladder_puts_classifiers_on_encoders_and_prompting_on_decoders():
    runs = plan().runs(KINDS)
    on = {(r.entry, r.model) for r in runs}
    assert ("zero-shot", "dec") in on and ("few-shot", "dec") in on
    assert ("lora", "enc") in on and ("lora", "dec") not in on
    assert {r.entry for r in runs} == {e.name for e in ENTRIES.values() if e.in_default_ladder}
    quick = {r.entry: r.params for r in runs}
    budget = {k: getattr(PRESETS["quick"], k) for k in ("max_steps", "patience", "max_minutes")}
    assert all(quick[e][k] == v for e in ("head", "lora", "full") for k, v in budget.items())  # trained to a budget
    assert quick["lora"]["epochs"] == PRESETS["quick"].max_epochs and quick["few-shot"]["draws"] == 1
    assert quick["features-logreg"]["cache"] is False  # no run's time benefits from another's embedding cache


def test_decoders_alone_run_the_whole_ladder():
    assert {r.model for r in plan(models=["dec"], strategies=["lora", "zero-shot"]).runs(KINDS)} == {"dec"}


def test_seeds_repeat_seeded_entries_only():
    runs = plan(seeds=3, strategies=["zero-shot", "features-logreg", "lora"]).runs(KINDS)
    counts = {entry: sum(r.entry == entry for r in runs) for entry in ("zero-shot", "features-logreg", "lora")}
    assert counts == {"zero-shot": 1, "features-logreg": 1, "lora": 3}
    assert len({r.key for r in runs}) == len(runs)


def test_overrides_apply_to_one_entry_or_all_and_are_checked():
    overrides = parse_overrides(["lora.r=16", "all.batch_size=8", "lora.lr=5e-4", "head.group-by-length=false"])
    assert overrides == {"lora": {"r": 16, "lr": 5e-4}, "all": {"batch_size": 8}, "head": {"group_by_length": False}}
    runs = {r.entry: r.params for r in plan(strategies=["lora", "full"], params=overrides | {"head": {}}, epochs=1).runs(KINDS)}
    assert runs["lora"]["r"] == 16 and runs["lora"]["batch_size"] == 8 and runs["full"]["batch_size"] == 8
    assert runs["full"]["epochs"] == 1 and "r" not in runs["full"]
    with pytest.raises(AdaptlabError, match="unknown parameter"):
        plan(strategies=["lora"], params={"lora": {"rank": 4}}).runs(KINDS)
    with pytest.raises(AdaptlabError, match="ENTRY.PARAM=VALUE"):
        parse_overrides(["lora-r=4"])
    mixed = {r.entry: r.params for r in plan(strategies=["zero-shot", "lora"], params={"all": {"lr": 1e-3}}).runs(KINDS)}
    assert mixed["lora"]["lr"] == 1e-3 and "lr" not in mixed["zero-shot"]  # icl takes no learning rate
    with pytest.raises(AdaptlabError, match="no selected entry takes"):
        plan(strategies=["lora"], params={"all": {"rank": 4}}).runs(KINDS)


def test_models_with_the_same_name_get_separate_run_directories():
    runs = plan(models=["org1/bert", "org2/bert"], strategies=["full"]).runs(
        {"org1/bert": ModelInfo("encoder", 512), "org2/bert": ModelInfo("encoder", 512)})
    assert len({r.key for r in runs}) == 2 and all(r.key.startswith("bert-") for r in runs)


def test_preset_token_cap_respects_short_position_tables():
    runs = {r.entry: r.params for r in plan(models=["short"], strategies=["full", "prompt-tuning"]).runs(KINDS)}
    assert runs["full"]["max_length"] == 64 and runs["prompt-tuning"]["max_length"] == 64 - 20


def test_yaml_plan_with_command_line_overrides(tmp_path):
    config = tmp_path / "compare.yaml"
    config.write_text("data: {source: rotten_tomatoes, train_size: 300}\npreset: standard\nseeds: 2\n"
                      "strategies: [lora, head]\nparams: {lora: {r: 4}}\n")
    merged = compare_plan(config, {"train_size": 200}, {"seeds": None, "params": {"lora": {"alpha": 8}}})
    assert merged.preset == "standard" and merged.seeds == 2 and merged.strategies == ["lora", "head"]
    assert merged.data_config().train_size == 200 and merged.data_config().test_size == 1000
    assert merged.params == {"lora": {"r": 4, "alpha": 8}}
    config.write_text("preset: quick\nepoch: 3\n")
    with pytest.raises(AdaptlabError, match="unknown key"):
        compare_plan(config, {}, {})


@pytest.mark.parametrize("values, message", [
    ({"preset": "fast"}, "--preset"), ({"seeds": 0}, "--seeds"), ({"strategies": ["lora", "adapters"]}, "unknown entry"),
    ({"params": {"qlora": {}}}, "unknown entry"), ({"models": ["enc", "enc"]}, "more than once"),
])
def test_bad_plans_are_refused(values, message):
    with pytest.raises(AdaptlabError, match=message):
        plan(**values).check()


# -- statistics and recommendation -------------------------------------------------------------------
def fake_results(output: Path, entries: dict[str, tuple[float, list[float], int, float]], n: int = 400,
                 data: DataConfig | None = None) -> list:
    """Write result.json files as the worker does: per entry (test accuracy per seed via planted mistakes,
    trainable params, train seconds)."""
    from adaptlab.compare.plan import Run

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, n)
    runs = []
    for entry, (_, accuracies, trainable, seconds) in entries.items():
        for seed, accuracy in enumerate(accuracies):
            run = Run(entry, ENTRIES[entry].strategy, "enc", seed, {})
            predictions = labels.copy()
            wrong = rng.choice(n, int(round((1 - accuracy) * n)), replace=False)
            predictions[wrong] = 1 - predictions[wrong]
            confusion = [[int(((labels == t) & (predictions == p)).sum()) for p in (0, 1)] for t in (0, 1)]
            result = {
                "spec": run.spec(data or DataConfig()), "labels": ["neg", "pos"],
                "metrics": {"test": {"accuracy": float((predictions == labels).mean()), "macro_f1": 0.5,
                                     "confusion_matrix": confusion}, "val": {"accuracy": 0.5}},
                "cost": {"trainable_params": trainable, "total_params": 1_000_000, "train_seconds": seconds,
                         "inference_texts_per_second": 100.0, "peak_rss_mb": 500.0, "peak_cuda_mb": None},
                "artifact_bytes": 2**20, "params": {"lr": 1e-3}, "data": {"sizes": {"train": 1, "val": 1, "test": n}},
                "test_predictions": predictions.tolist(), "test_labels": labels.tolist(),
                **({"stopped": "converged", "steps": 100} if trainable and ENTRIES[entry].epochs else {}),
            }
            (output / "runs" / run.key).mkdir(parents=True)
            (output / "runs" / run.key / "result.json").write_text(json.dumps(result))
            runs.append(run)
    return runs


def test_summary_intervals_ties_pareto_and_recommendation(tmp_path):
    from adaptlab.compare.summary import summarise

    runs = fake_results(tmp_path, {
        "full": (0, [0.90, 0.91, 0.89], 1_000_000, 100.0),
        "lora": (0, [0.895, 0.90, 0.895], 10_000, 40.0),
        "head": (0, [0.75, 0.76, 0.74], 500, 5.0),
        "zero-shot": (0, [0.70], 0, 1.0),
    })
    results = summarise(plan(seeds=3), DataConfig(), runs, tmp_path, wall_seconds=1.0)
    by = {e["entry"]: e for e in results["entries"]}
    assert [e["entry"] for e in results["entries"]] == ["full", "lora", "head", "zero-shot"]
    assert by["full"]["accuracy"]["mean"] == pytest.approx(0.90, abs=1e-3)
    assert by["full"]["accuracy"]["std"] == pytest.approx(0.01, abs=1e-3)
    assert by["zero-shot"]["accuracy"]["std"] is None  # one run: no spread to report
    for entry in by.values():
        low, high = entry["accuracy"]["ci95"]
        assert low < entry["accuracy"]["mean"] < high and high - low < 0.12
    assert by["lora"]["tied_with_best"] and not by["head"]["tied_with_best"]
    # Pareto: each entry is cheaper than every more accurate one, so all four are on both fronts; a
    # dominated entry must not be.
    assert all(e["pareto_time"] and e["pareto_params"] for e in by.values())
    text = " ".join(results["recommendation"])
    assert "Recommended: lora (enc)" in text and "2.5x faster" in text
    assert "LoRA reaches 99.6% of full fine-tuning's accuracy with 1.00% of its trainable parameters and 40%" in text
    assert "Without any training, zero-shot (enc) gets 70.0%" in text
    assert by["zero-shot"]["train_seconds"] == 0.0 and by["head"]["train_seconds"] == 5.0  # loading a model is not training
    assert by["lora"]["stopped"] == ["converged"] * 3 and by["zero-shot"]["stopped"] == [None]
    # one LoRA seed cut off by the step cap: no ratio of an undertrained run, and the report says which entry it was
    capped = next(tmp_path.glob("runs/*/lora/seed-1/result.json"))
    capped.write_text(json.dumps({**json.loads(capped.read_text()), "stopped": "step_cap"}))
    text = " ".join(summarise(plan(seeds=3), DataConfig(), runs, tmp_path, wall_seconds=1.0)["recommendation"])
    assert "LoRA reaches" not in text and "Still improving when the budget ran out: lora (enc: converged, step_cap)" in text


def test_dominated_entries_are_off_the_front(tmp_path):
    from adaptlab.compare.summary import summarise

    runs = fake_results(tmp_path, {"full": (0, [0.9], 1000, 10.0), "last-k": (0, [0.8], 2000, 20.0)})
    by = {e["entry"]: e for e in summarise(plan(), DataConfig(), runs, tmp_path, 1.0)["entries"]}
    assert by["full"]["pareto_time"] and not by["last-k"]["pareto_time"] and not by["last-k"]["pareto_params"]


def test_report_escapes_text_and_has_no_python_reprs(tmp_path):
    from adaptlab.compare.report import render_html
    from adaptlab.compare.summary import summarise

    data = DataConfig(source="<script>alert(1)</script>.csv")
    runs = fake_results(tmp_path, {"lora": (0, [0.8, 0.82], 100, 3.0), "zero-shot": (0, [0.7], 0, 1.0)}, data=data)
    results = summarise(plan(seeds=2), data, runs, tmp_path, 60.0)
    page = render_html(results)
    assert "<script>" not in page and "&lt;script&gt;" in page
    for repr_marker in ("{'", "[{", "None", "<class", "array("):
        assert repr_marker not in page.replace("data:image/png;base64,", ""), repr_marker
    assert page.count("data:image/png;base64,") == 3


# -- whole comparisons -------------------------------------------------------------------------------
def tiny_compare_args(tiny_bert, tiny_llama, output, *extra):
    return ("compare", "--data", "rotten_tomatoes", "--models", f"{tiny_bert},{tiny_llama}", "--train-size", "60",
            "--val-size", "30", "--test-size", "40", "--epochs", "1", "--output", output, *extra)


def test_compare_runs_reports_and_skips_finished_runs(cli, tiny_bert, tiny_llama, tmp_path):
    output = tmp_path / "cmp"
    args = tiny_compare_args(tiny_bert, tiny_llama, output, "--strategies", "zero-shot,features-logreg,head,lora",
                             "--seeds", "2")
    code, out, err = cli(*args)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert {(e["entry"], e["runs"]) for e in results["entries"]} == {("zero-shot", 1), ("features-logreg", 1), ("head", 2), ("lora", 2)}
    assert results["failures"] == [] and results["data"]["sizes"] == {"train": 60, "val": 30, "test": 40}
    for entry in results["entries"]:
        assert 0 <= entry["accuracy"]["ci95"][0] <= entry["accuracy"]["mean"] <= entry["accuracy"]["ci95"][1] <= 1
        assert sum(map(sum, entry["confusion_matrix"])) == 40 * entry["runs"]
        assert entry["peak_rss_mb"] > 100 and entry["artifact_mb"] > 0
        for artifact in entry["artifacts"]:
            assert (Path(artifact) / "manifest.json").exists()
    lora = next(e for e in results["entries"] if e["entry"] == "lora")
    per_run = lora["accuracy"]["per_run"]
    assert len(per_run) == 2 and lora["accuracy"]["mean"] == pytest.approx(sum(per_run) / 2, abs=1e-3)
    seeds = {json.loads((Path(a) / "manifest.json").read_text())["params"]["seed"] for a in lora["artifacts"]}
    assert seeds == {0, 1}  # one run per training seed, each its own artifact
    assert "acc %" in out and "Recommended:" in out and "report.html" in out
    page = (output / "report.html").read_text()
    assert "Which adaptation is worth it on rotten_tomatoes?" in page

    stamps = {p: p.stat().st_mtime_ns for p in output.glob("runs/**/result.json")}
    lora_seed1 = next(p for p in stamps if "lora/seed-1" in str(p))
    lora_seed1.unlink()
    code, _, err = cli(*args)
    assert code == 0
    assert err.count("done earlier, skipped") == 5
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != lora_seed1) and lora_seed1.exists()

    code, _, err = cli(*args[:-2], "--seeds", "2", "--set", "lora.r=4")  # a changed setting reruns that entry only
    assert code == 0 and err.count("settings changed") == 2 and err.count("done earlier, skipped") == 4


def test_a_failing_strategy_is_reported_and_the_others_finish(cli, tiny_bert, tiny_llama, tmp_path):
    # a value that is wrong on its face is refused before any run starts ...
    code, _, err = cli(*tiny_compare_args(tiny_bert, tiny_llama, tmp_path / "bad", "--strategies", "features-logreg,head",
                                          "--set", "head.pooling=max"))
    assert code == 2 and "--pooling must be one of" in err and not (tmp_path / "bad" / "results.json").exists()
    # ... one that only the model can refuse (it has 2 blocks) fails its run, and the others finish
    code, out, _ = cli(*tiny_compare_args(tiny_bert, tiny_llama, tmp_path / "cmp", "--strategies", "features-logreg,last-k",
                                          "--set", "last-k.layers=99"))
    assert code == 1  # the report is written, and the exit code says a run failed
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [e["entry"] for e in results["entries"]] == ["features-logreg"]
    assert results["failures"][0]["entry"] == "last-k" and "layers" in results["failures"][0]["errors"][0]
    assert "failed: last-k" in out


def test_bad_compare_options_exit_2_with_one_line(cli, tmp_path):
    for args, needle in (
        (("--strategies", "lora,adapters"), "unknown entry 'adapters'"),
        (("--preset", "huge"), "--preset"),
        (("--data", str(tmp_path / "missing.csv")), "missing.csv"),
        (("--set", "lora"), "ENTRY.PARAM=VALUE"),
    ):
        code, out, err = cli("compare", "--output", tmp_path / "x", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_interrupted_comparison_resumes_the_running_strategy(tiny_bert, tmp_path):
    """Ctrl-C in the middle of a training run; the same command again finishes it from its last checkpoint."""
    output = tmp_path / "cmp"
    command = [sys.executable, "-m", "adaptlab", "compare", "--data", "rotten_tomatoes", "--models", str(tiny_bert),
               "--strategies", "lora", "--train-size", "200", "--val-size", "50", "--test-size", "40", "--epochs", "60",
               "--output", str(output)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=default_sigint)
    checkpoint = None
    deadline = time.time() + 120
    while time.time() < deadline and checkpoint is None:
        found = list(output.glob("runs/*/lora/seed-0/artifact.work/checkpoints/last.ckpt"))
        checkpoint = found[0] if found else None
        time.sleep(0.2)
    assert checkpoint is not None, "training never wrote a checkpoint"
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert process.wait(timeout=60) != 0
    assert not list(output.glob("runs/*/lora/seed-0/result.json")) and not list(output.glob("runs/*/lora/seed-0/failed.json"))

    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(next(output.glob("runs/*/lora/seed-0/result.json")).read_text())
    assert result["resumed_from_epoch"] is not None and result["resumed_from_epoch"] >= 1


def test_report_renders_in_headless_chromium(tmp_path, chromium):
    from adaptlab.compare.report import write_report
    from adaptlab.compare.summary import summarise

    runs = fake_results(tmp_path, {"full": (0, [0.9, 0.91], 10**6, 100.0), "lora": (0, [0.89, 0.9], 10**4, 40.0),
                                   "head": (0, [0.75, 0.76], 500, 5.0), "zero-shot": (0, [0.7], 0, 1.0)})
    results = summarise(plan(seeds=2), DataConfig(), runs, tmp_path, 300.0)
    write_report(results, tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,2200", f"--screenshot={screenshot}", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    image = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert image.shape == (2200, 1280)
    ink = (image < 200).mean(axis=1)  # rows with text or plot lines
    assert (ink > 0.01).sum() > 600, "the page rendered mostly blank"
    keep = Path(os.environ.get("ADAPTLAB_TEST_ARTIFACTS", tmp_path))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, keep / "compare-report.png")


@pytest.mark.slow
def test_compare_on_the_real_packaged_models(cli, tmp_path):
    output = tmp_path / "cmp"
    code, out, err = cli("compare", "--data", "rotten_tomatoes", "--strategies", "zero-shot,features-logreg",
                         "--train-size", "200", "--val-size", "50", "--test-size", "100", "--output", output)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    by = {e["entry"]: e for e in results["entries"]}
    assert by["zero-shot"]["model"] == "smollm2-135m" and by["features-logreg"]["model"] == "minilm"
    assert by["zero-shot"]["accuracy"]["mean"] > 0.6 and by["features-logreg"]["accuracy"]["mean"] > 0.6
    assert by["zero-shot"]["trainable_params"] == 0


def test_the_recommendation_treats_near_equal_training_times_as_equal():
    """Measured on the standard generation ladder: full (305 s, 134M trained) tied with lora (312 s, 4.9M). A 2%
    difference in time is CPU noise; the entry that trains 27x fewer parameters is the cheaper one."""
    from adaptlab.compare.summary import recommendation

    name = lambda e: e["entry"]
    lora = {"entry": "lora", "train_seconds": 312.0, "trainable_params": 4_884_480}
    full = {"entry": "full", "train_seconds": 305.0, "trainable_params": 134_515_008}
    head = {"entry": "head", "train_seconds": 5.0, "trainable_params": 770}
    assert recommendation(full, [lora], name).startswith("Recommended: lora: statistically tied with the best, about as fast")
    assert "(61.0x faster)" in recommendation(full, [lora, head], name)
    assert recommendation(lora, [full], name).startswith("Recommended: lora; no entry tied with it trains in clearly less time")
    assert recommendation(full, [dict(head, train_seconds=0.0, trainable_params=0)], name).endswith("no training at all.")


def test_a_150_class_report_draws_its_confusion_matrices_at_a_fixed_size_and_quickly():
    """CLINC150's report took minutes and 12 GB: the confusion plot grew with the classes (a gigapixel figure with
    22,500 percentages per matrix). Above 20 classes the cells carry no text and each matrix keeps a fixed size."""
    import base64
    import io
    import time

    from PIL import Image

    from adaptlab.compare.report import _confusions

    rng = np.random.default_rng(0)
    labels = [f"intent_{i}" for i in range(150)]
    entries = [{"entry": name, "model": "minilm", "confusion_matrix": rng.integers(0, 5, (150, 150)).tolist()}
               for name in ("head", "last-k", "full", "lora", "prefix-tuning")]
    started = time.perf_counter()
    image = Image.open(io.BytesIO(base64.b64decode(_confusions(entries, labels))))
    assert time.perf_counter() - started < 20
    assert image.width <= 4 * 4.0 * 110 and image.height <= 2 * 4.0 * 110
