"""The input boundary, round two (issue 47): paths that collide, structured inputs of the wrong shape, bounds where
there were none, and the Python API. Every case: exit 2, one line naming what is wrong, no traceback, and every
file the user had byte-identical afterwards (a user's ``<output>.work`` folder above all: it used to be deleted)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import sentiment_rows, write_csv, write_jsonl
from test_bad_input import W, assert_refused, snapshot


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_bert, tiny_llama) -> Path:
    import adaptlab
    from adaptlab.data import load_data, split_data

    root = tmp_path_factory.mktemp("boundary")
    data = write_csv(root / "data.csv", sentiment_rows(10))
    write_jsonl(root / "chat.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(12)])
    write_jsonl(root / "prefs-broken.jsonl", [{"prompt": "p", "chosen": "a"}])
    write_jsonl(root / "empty-replies.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"},
                                                             {"role": "assistant", "content": ""}]} for i in range(12)])
    (root / "texts.txt").write_text("a fine film\n", encoding="utf-8")
    (root / "user.work").mkdir()  # a folder of the user's that happens to be named like a work directory
    (root / "user.work" / "notes.txt").write_text("my notes", encoding="utf-8")
    (root / "corpus.work").mkdir()  # training data named like the work directory of the output "corpus"
    for name in "abc":
        (root / "corpus.work" / f"{name}.txt").write_text(f"Paragraph {name} of the corpus.\n", encoding="utf-8")
    (root / "filed.work").write_text("a file where a work directory would go", encoding="utf-8")
    (root / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 20 + b"PAR1")
    (root / "bert").symlink_to(tiny_bert)
    (root / "llama").symlink_to(tiny_llama)
    (root / "results-user").mkdir()  # a folder of the user's where a command would write results.json
    (root / "results-user" / "mine.txt").write_text("mine", encoding="utf-8")
    write_jsonl(root / "examples-number.jsonl", [{"input": 5, "output": "five"}])
    yamls = {"size-float.yaml": "data: {train_size: 1.5}\n", "epochs-text.yaml": "params: {epochs: x}\n",
             "strategies-unknown.yaml": "strategies: [not-a-strategy]\n",
             "models-int.yaml": "models: 5\n", "params-list.yaml": "params: [1, 2]\n",
             "column-list.yaml": "data: {text_column: [a]}\n", "seed-text.yaml": "data: {seed: '5'}\n",
             "tune-inf.yaml": "tune: {trials: 2, params: {lora: {lr: [0.001, .inf]}}}\n",
             "tune-bad-bound.yaml": "tune: {trials: 2, params: {lora: {dropout: [0.1, 2]}}}\n"}
    for name, text in yamls.items():
        (root / name).write_text(text, encoding="utf-8")
    adaptlab.train("lora", split_data(load_data(data), seed=0), root / "lora", model=str(tiny_bert), epochs=1, progress=False)
    # feedback projects whose feedback.sqlite is not adaptlab's: another program's database, an empty file, a folder
    (root / "fb-foreign").mkdir()
    conn = sqlite3.connect(root / "fb-foreign" / "feedback.sqlite")
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    (root / "fb-empty").mkdir()
    (root / "fb-empty" / "feedback.sqlite").write_bytes(b"")
    (root / "fb-dir" / "feedback.sqlite").mkdir(parents=True)
    (root / "fb-dir" / "feedback.sqlite" / "keep.txt").write_text("mine", encoding="utf-8")
    # copies of the tiny model with one file damaged
    for name, damage in {"bad-tokenizer": lambda d: (d / "tokenizer.json").write_text("garbage", encoding="utf-8"),
                         "bad-config": lambda d: (d / "config.json").write_text("{}", encoding="utf-8"),
                         "bad-weights": lambda d: (d / "model.safetensors").write_bytes(
                             (d / "model.safetensors").read_bytes()[:2000])}.items():
        shutil.copytree(tiny_bert, root / name)
        damage(root / name)
    return root


SMALL = ["--train-size", "8", "--val-size", "2", "--test-size", "4"]
TRAIN = ["train", "features", "--data", f"{W}/data.csv"]
CASES = {
    # data lost: a work directory adaptlab did not make is never deleted, and never one that is an input
    "user folder named <output>.work": ([*TRAIN, "-o", f"{W}/user"], "holds files adaptlab did not write"),
    "sft data is the work directory": (["sft", "train", "--data", f"{W}/corpus.work", "-o", f"{W}/corpus"], "is the input"),
    "work directory is a file": ([*TRAIN, "-o", f"{W}/filed"], "is not a directory adaptlab made"),
    # outputs that cannot be written
    "train under a file": ([*TRAIN, "-o", f"{W}/data.csv/out"], "which is a file"),
    "sft under a file": (["sft", "train", "--data", f"{W}/chat.jsonl", "-o", f"{W}/texts.txt/out"], "which is a file"),
    "embed under a file": (["embed", "--file", f"{W}/texts.txt", "-o", f"{W}/data.csv/e.npy"], "which is a file"),
    "compare under a file": (["compare", "--data", f"{W}/data.csv", *SMALL, "-o", f"{W}/data.csv/cmp"], "which is a file"),
    "train -o empty": ([*TRAIN, "-o", ""], "--output is empty"),
    "sft -o empty": (["sft", "train", "--data", f"{W}/chat.jsonl", "-o", " "], "--output is empty"),
    # structured input of the wrong shape
    "compare yaml models: 5": (["compare", "--config", f"{W}/models-int.yaml"], "models: input should be a valid list"),
    "compare yaml params: [1, 2]": (["compare", "--config", f"{W}/params-list.yaml"], "params: input should be a valid dictionary"),
    "train yaml text_column: [a]": ([*TRAIN, "--config", f"{W}/column-list.yaml"], "text_column: input should be a valid string"),
    "train yaml seed as text": ([*TRAIN, "--config", f"{W}/seed-text.yaml"], "seed: input should be a valid integer"),
    "--set value not YAML": (["compare", "--data", f"{W}/data.csv", *SMALL, "--set", "features-logreg.C=[1"], "is not valid YAML"),
    "predict corrupt parquet": (["predict", f"{W}/lora", "--file", f"{W}/corrupt.parquet"], "not a readable Parquet file"),
    "sft replies all empty": (["sft", "train", "--data", f"{W}/empty-replies.jsonl"], "every assistant reply is empty"),
    # bounds where there were none
    "compare --tune 1000000": (["compare", "--data", f"{W}/data.csv", *SMALL, "--tune", "1000000"], "from 0 (no tuning) to 100"),
    "tune range to infinity": (["compare", "--data", f"{W}/data.csv", *SMALL, "--config", f"{W}/tune-inf.yaml"], "finite numbers"),
    "tune bound the strategy refuses": (["compare", "--data", f"{W}/data.csv", *SMALL, "--config", f"{W}/tune-bad-bound.yaml"],
                                        "--dropout must be below 1"),
    # outputs of rag, rlhf eval and feedback: under a file, an input, or the current directory
    "rag index store under a file": (["rag", "index", f"{W}/texts.txt", "--store", f"{W}/data.csv/store"], "which is a file"),
    "rag index store is the documents": (["rag", "index", f"{W}/corpus.work", "--store", f"{W}/corpus.work"], "is the input"),
    "rag index store holds an input": (["rag", "index", f"{W}/texts.txt", "--store", W], "contains the input"),
    "rag index store inside an input": (["rag", "index", f"{W}/corpus.work", "--store", f"{W}/corpus.work/store"], "lies inside"),
    "rag eval under a file": (["rag", "eval", "--queries", f"{W}/chat.jsonl", "--store", f"{W}/corpus.work", "-o",
                               f"{W}/data.csv/out"], "which is a file"),
    "rag eval onto its store": (["rag", "eval", "--queries", f"{W}/chat.jsonl", "--store", f"{W}/corpus.work", "-o",
                                 f"{W}/corpus.work"], "is the input"),
    "rag eval -o .": (["rag", "eval", "--queries", f"{W}/chat.jsonl", "--store", f"{W}/corpus.work", "-o", "."],
                      "is the current directory"),
    "rlhf eval under a file": (["rlhf", "eval", f"{W}/lora", "--reward", f"{W}/lora", "--prompts", f"{W}/chat.jsonl",
                                "-o", f"{W}/data.csv/out"], "which is a file"),
    "rlhf eval onto its prompts": (["rlhf", "eval", f"{W}/lora", "--reward", f"{W}/lora", "--prompts", f"{W}/chat.jsonl",
                                    "-o", f"{W}/chat.jsonl"], "is a file"),
    "rlhf eval onto its policy": (["rlhf", "eval", f"{W}/lora", "--reward", f"{W}/lora", "--prompts", f"{W}/chat.jsonl",
                                   "-o", f"{W}/lora"], "is the input"),
    "feedback new under a file": (["feedback", "new", f"{W}/data.csv/project", "--candidates", f"{W}/chat.jsonl"],
                                  "which is a file"),
    "feedback new in .": (["feedback", "new", ".", "--candidates", f"{W}/chat.jsonl"], "is the current directory"),
    # huge counts are refused, not an OverflowError
    "rag search -k 2**70": (["rag", "search", "eiffel", "--store", f"{W}/lora", "-k", str(2**70)], "less than or equal to"),
    "train --grad-accum 2**70": ([*TRAIN[:1], "lora", *TRAIN[2:], "--grad-accum", str(2**70)], "--grad-accum must be below"),
    "train --batch-size 2**70": ([*TRAIN[:1], "lora", *TRAIN[2:], "--batch-size", str(2**70)], "--batch-size must be below"),
    # a feedback.sqlite that is not adaptlab's is refused before anything writes to it (it stays byte-identical)
    "feedback export another program's sqlite": (["feedback", "export", f"{W}/fb-foreign", "-o", "x.jsonl"],
                                                 "not a feedback database made by adaptlab"),
    "feedback export empty sqlite": (["feedback", "export", f"{W}/fb-empty", "-o", "x.jsonl"], "not a feedback database"),
    "feedback export sqlite is a folder": (["feedback", "export", f"{W}/fb-dir", "-o", "x.jsonl"], "is not a file"),
    # damaged model directories
    "model tokenizer.json garbage": ([*TRAIN[:1], "lora", *TRAIN[2:], "--model", f"{W}/bad-tokenizer"], "damaged or incomplete"),
    "model config.json empty": ([*TRAIN[:1], "lora", *TRAIN[2:], "--model", f"{W}/bad-config"], "damaged or incomplete"),
    "model weights truncated": ([*TRAIN[:1], "lora", *TRAIN[2:], "--model", f"{W}/bad-weights"], "damaged or incomplete"),
    # the YAML file's own values are checked even where the command line overrides them
    "compare yaml size 1.5 under --train-size": (["compare", "--data", f"{W}/data.csv", *SMALL, "--config",
                                                  f"{W}/size-float.yaml"], "train_size"),
    "compare yaml unknown strategy under --strategies": (["compare", "--data", f"{W}/data.csv", *SMALL, "--strategies", "head",
                                                          "--config", f"{W}/strategies-unknown.yaml"], "not-a-strategy"),
    "train yaml epochs: x under --epochs": ([*TRAIN[:1], "lora", *TRAIN[2:], "--epochs", "1", "--config",
                                            f"{W}/epochs-text.yaml"], "--epochs must be an integer"),
    # outputs never inside a model, never a user's folder; empty values that used to mean "the current directory"
    "train -o inside the model": ([*TRAIN[:1], "lora", *TRAIN[2:], "--model", f"{W}/bert", "-o", f"{W}/bert/run"], "lies inside"),
    "rlhf eval -o a user's folder": (["rlhf", "eval", f"{W}/lora", "--reward", f"{W}/lora", "--prompts", f"{W}/texts.txt",
                                      "-o", f"{W}/results-user"], "holds files adaptlab did not write"),
    "rag index an empty path": (["rag", "index", "", "--store", "new-store"], "a document path is empty"),
    "compare --task ''": (["compare", "--data", f"{W}/data.csv", *SMALL, "--task", ""], "--task is empty"),
    "compare --seeds 101": (["compare", "--data", f"{W}/data.csv", *SMALL, "--seeds", "101"], "from 1 to 100"),
    "generate examples of the wrong type": (["generate", "hi", "--model", f"{W}/llama", "--examples",
                                             f"{W}/examples-number.jsonl"], "'input' and 'output' strings"),
    # late: what a comparison needs is checked before its first run trains
    "compare missing preferences": (["compare", "--task", "generation", "--data", f"{W}/chat.jsonl", *SMALL,
                                     "--preferences", f"{W}/missing.jsonl"], "does not exist"),
    "compare broken preferences": (["compare", "--task", "generation", "--data", f"{W}/chat.jsonl", *SMALL,
                                    "--preferences", f"{W}/prefs-broken.jsonl"], "prefs-broken.jsonl"),
    "compare missing documents": (["compare", "--task", "generation", "--data", f"{W}/chat.jsonl", *SMALL,
                                   "--documents", f"{W}/no-such-docs"], "does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_destroys_nothing(name, workspace, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(cli, *CASES[name], workspace)
    assert not (tmp_path / "runs").exists(), "a refused run wrote its default output"


def test_a_work_directory_adaptlab_made_is_still_replaced(workspace, tmp_path, tiny_bert):
    """The guard must not refuse what it exists to clean up: an interrupted run's own work directory."""
    import adaptlab
    from adaptlab.jobs import RUN_RECORD, work_dir

    splits = adaptlab.load_splits(workspace / "data.csv")
    output = tmp_path / "art"
    work_dir(output).mkdir()
    (work_dir(output) / RUN_RECORD).write_text(json.dumps({"data": {}, "params": {}}), encoding="utf-8")
    (work_dir(output) / "checkpoints").mkdir()
    adaptlab.train("features", splits, output, model=str(tiny_bert), progress=False)
    assert (output / "manifest.json").is_file() and not work_dir(output).exists()


def test_the_python_api_refuses_with_adaptlab_errors(workspace, tmp_path):
    import adaptlab
    from adaptlab import AdaptlabError
    from adaptlab.sft import SFTJob, train_sft

    splits = adaptlab.load_splits(workspace / "data.csv")
    chat = adaptlab.load_generation_splits(workspace / "chat.jsonl")
    calls = {
        "load_artifact(None)": (lambda: adaptlab.load_artifact(None), "needs the path of an artifact"),
        "load_artifact(device='foo')": (lambda: adaptlab.load_artifact(workspace / "lora", device="foo"), "--device must be"),
        "load_artifact(bogus=1)": (lambda: adaptlab.load_artifact(workspace / "lora", bogus=1), "unknown option"),
        "SFTJob(method=None)": (lambda: SFTJob(method=None), "--method needs a value"),
        "train_sft(classification splits)": (lambda: train_sft(splits, tmp_path / "o"), "needs generation splits"),
        "train_sft(output=None)": (lambda: train_sft(chat, None), "needs an output path"),
        "train_sft into a user's .work": (lambda: train_sft(chat, workspace / "user", epochs=1), "did not write"),
    }
    before = snapshot(workspace)
    for name, (call, message) in calls.items():
        with pytest.raises(AdaptlabError, match=message):
            call()
    assert snapshot(workspace) == before and not (tmp_path / "o").exists()
