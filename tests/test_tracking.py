"""Run tracking (``--logger mlflow|wandb``, ``adaptlab.training.tracking``): a real MLflow tracking server started
here receives the params, the per-step metrics and the artifact of a Lightning classifier, a DPO (TRL) and a PPO
run, read back through ``mlflow.search_runs``; the command line logs to MLflow's local store without a server;
W&B works offline; a missing package is one line with the pip command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_csv

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free local port (SQLite backend, artifacts proxied by the server into a temporary
    folder); yields its URI once ``/health`` answers."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner: tracking only
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def experiment(mlflow_server, monkeypatch) -> str:
    """A fresh experiment on the test server, chosen through the environment as a user would."""
    name = f"adaptlab-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    return name


def only_run(experiment: str):
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def artifact_files(run_id: str, path: str = "artifact") -> set[str]:
    client, found, folders = mlflow.MlflowClient(), set(), [path]
    while folders:
        for entry in client.list_artifacts(run_id, folders.pop()):
            (folders.append(entry.path) if entry.is_dir else found.add(entry.path.removeprefix(path + "/")))
    return found


def steps_of(run_id: str, metric: str) -> list[int]:
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, metric)]


def test_a_classifier_run_is_visible_through_search_runs(experiment, tiny_bert, tmp_path):
    import adaptlab
    from adaptlab.data import load_data, split_data

    splits = split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)
    result = adaptlab.train("lora", splits, tmp_path / "clf", model=str(tiny_bert), epochs=2, batch_size=8, logger="mlflow",
                            progress=False)
    frame = mlflow.search_runs(experiment_names=[experiment])
    assert len(frame) == 1 and frame.loc[0, "status"] == "FINISHED" and frame.loc[0, "tags.mlflow.runName"] == "clf"
    run = only_run(experiment)
    manifest = result.manifest
    assert run.data.params["lr"] == str(manifest["params"]["lr"]) and run.data.params["logger"] == "mlflow"
    assert set(run.data.params) == set(manifest["params"])  # the manifest's params, all of them
    assert run.data.metrics["test/accuracy"] == pytest.approx(manifest["metrics"]["test"]["accuracy"])
    assert len(steps_of(run.info.run_id, "val_acc")) == 2 and len(set(steps_of(run.info.run_id, "train_loss_epoch"))) == 2
    files = artifact_files(run.info.run_id)
    assert {"manifest.json", "training_log.csv"} <= files and set(manifest["files"]) <= files | {"manifest.json"}
    assert (tmp_path / "clf" / "training_log.csv").is_file()  # the CSV log stays in the artifact too


def preference_split(tmp_path: Path):
    from adaptlab.rlhf import read_preferences, split_preferences

    rows = [{"prompt": f"Question {i}?", "chosen": f"A kind, helpful answer number {i}.", "rejected": "no."} for i in range(24)]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(json.dumps(r) for r in rows))
    return split_preferences(read_preferences(str(prefs))[0], str(prefs), seed=0)


def test_dpo_and_ppo_runs_log_per_step_metrics_to_the_server(experiment, tiny_llama, tmp_path):
    from adaptlab.rlhf import PPOConfig, train_ppo
    from adaptlab.rlhf.dpo import train_dpo

    dpo = train_dpo(preference_split(tmp_path), tmp_path / "dpo", model=str(tiny_llama), epochs=1, batch_size=4, max_length=64, logger="mlflow",
                    progress=False)
    run = only_run(experiment)
    assert run.info.status == "FINISHED" and run.data.params["beta"] == str(dpo.manifest["params"]["beta"])
    assert len(steps_of(run.info.run_id, "loss")) == dpo.manifest["training"]["steps"] >= 2  # TRL's, one per step
    assert "adapter_config.json" in {Path(f).name for f in artifact_files(run.info.run_id)}

    mlflow.delete_run(run.info.run_id)  # search_runs lists active runs: the next one is the PPO run
    config = PPOConfig(steps=2, batch_size=2, mini_batch_size=2, max_new_tokens=3, ppo_epochs=1, logger="mlflow")
    train_ppo([f"Prompt {i}:" for i in range(4)], tmp_path / "ppo", reward=lambda p, r: [float(len(x)) for x in r],
              model=str(tiny_llama), config=config, progress=False)
    run = only_run(experiment)
    assert run.info.status == "FINISHED" and run.data.params["reward"] and run.data.params["steps"] == "2"
    assert steps_of(run.info.run_id, "reward_mean") == [1, 2] and "kl" in run.data.metrics
    assert {"manifest.json", "training_log.csv"} <= artifact_files(run.info.run_id)


def test_the_command_line_logs_to_mlflows_local_store_without_a_server(cli, tiny_bert, tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts go to ./mlruns beside a SQLite store: not into the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what MLflow's default (./mlflow.db) is, in a place of the test's
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(10))
    code, _, err = cli("train", "head", "--data", data, "--model", tiny_bert, "--epochs", "1", "--logger", "mlflow",
                       "-o", tmp_path / "head")
    assert code == 0, err
    run = only_run("adaptlab")  # the default experiment
    assert run.info.status == "FINISHED" and run.data.params["logger"] == "mlflow" and "test/accuracy" in run.data.metrics
    assert "manifest.json" in artifact_files(run.info.run_id)


def test_a_failed_job_ends_its_run_failed(tmp_path, monkeypatch):
    from adaptlab.training import tracking

    monkeypatch.chdir(tmp_path)  # MLflow's artifacts go to ./mlruns beside a SQLite store: not into the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "failing")
    with pytest.raises(RuntimeError), tracking.tracked_run({"logger": "mlflow", "lr": 0.1}, tmp_path / "never-written"):
        assert tracking.current() is not None
        tracking.current().log_metrics({"loss": 1.0, "note": "not a number", "nan": float("nan")}, step=1)
        raise RuntimeError("training failed")
    assert tracking.current() is None
    run = only_run("failing")
    assert run.info.status == "FAILED" and run.data.params == {"logger": "mlflow", "lr": "0.1"}
    assert run.data.metrics == {"loss": 1.0}
    with tracking.tracked_run({"logger": "csv"}, tmp_path / "x") as tracker:  # other loggers: no run at all
        assert tracker is None and tracking.current() is None


@pytest.mark.parametrize("logger, package", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_tracking_package_is_one_line_with_the_pip_command(cli, tmp_path, monkeypatch, logger, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    data = write_csv(tmp_path / "toy.csv", sentiment_rows(10))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(10)))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Prompt a\nPrompt b\n")
    for command in (["train", "lora", "--data", data], ["rlhf", "dpo", "--data", prefs],
                    ["rlhf", "ppo", "--prompts", prompts, "--reward", "operator:add"]):
        code, _, err = cli(*command, "--logger", logger, "-o", tmp_path / "never")
        assert code == 2, (command, err)
        assert err.strip() == f"adaptlab: error: --logger {logger} needs the {package} package: pip install {package}", err
        assert not (tmp_path / "never").exists()


def test_wandb_logs_offline(tiny_bert, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    import adaptlab
    from adaptlab.data import load_data, split_data
    from adaptlab.training import tracking

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    seen = {}
    end = tracking.Tracker.end

    def spy(self, status):  # what the run holds when the job runner ends it (offline runs are read back only by `wandb sync`)
        seen.update(status=status, summary=dict(self.run.summary), config=dict(self.run.config))
        end(self, status)

    monkeypatch.setattr(tracking.Tracker, "end", spy)
    logged, log_artifact = [], wandb.sdk.wandb_run.Run.log_artifact
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log_artifact",
                        lambda self, artifact, *a, **k: (logged.append(artifact), log_artifact(self, artifact, *a, **k))[1])
    splits = split_data(load_data(write_csv(tmp_path / "toy.csv", sentiment_rows(20))), seed=0)
    result = adaptlab.train("lora", splits, tmp_path / "clf", model=str(tiny_bert), epochs=1, batch_size=8, logger="wandb",
                            progress=False)
    assert wandb.run is None and seen["status"] == "FINISHED"  # finished
    assert seen["summary"]["test/accuracy"] == pytest.approx(result.manifest["metrics"]["test"]["accuracy"])
    assert "val_acc" in seen["summary"] and seen["config"]["lr"] == result.manifest["params"]["lr"]
    (artifact,) = logged
    assert artifact.type == "model" and "manifest.json" in artifact.manifest.entries
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_dpo_tensorboard_events_travel_with_the_artifact(tiny_llama, tmp_path):
    from adaptlab.rlhf.dpo import train_dpo

    result = train_dpo(preference_split(tmp_path), tmp_path / "dpo", model=str(tiny_llama), epochs=1, batch_size=4,
                       max_length=64, logger="tensorboard", progress=False)
    assert any(name.startswith("tensorboard/events.out.tfevents.") for name in result.manifest["files"])
