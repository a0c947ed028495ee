"""Bad input, one case per class of the input-boundary sweep, for every command that takes it: exit 2, at most two
lines on stderr, no traceback, and every file the user had byte-identical afterwards.

The cases run in-process through the real entry point (``cli``), so an uncaught exception fails the test with its
traceback; speed (no model library before the answer) is ``test_cli_startup.py``'s."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import sentiment_rows, write_csv, write_jsonl


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_bert) -> Path:
    """What a user has: data files, a trained artifact, a feedback project, and a few broken files."""
    import adaptlab
    from adaptlab.data import load_data, split_data
    from adaptlab.feedback import project

    root = tmp_path_factory.mktemp("workspace")
    data = write_csv(root / "data.csv", sentiment_rows(10))
    write_jsonl(root / "chat.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(12)])
    write_jsonl(root / "prefs.jsonl", [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(12)])
    (root / "prefs-broken.jsonl").write_text('{"prompt": "p", "chosen": "a"\n', encoding="utf-8")
    (root / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "responses": ["a", "b"]}\n')
    (root / "texts.txt").write_text("a fine film\n", encoding="utf-8")
    (root / "wrong-types.yaml").write_text("data: [1, 2]\nparams: 3\n", encoding="utf-8")
    adaptlab.train("lora", split_data(load_data(data), seed=0), root / "lora", model=str(tiny_bert), epochs=1, progress=False)
    broken = root / "broken-artifact"
    shutil.copytree(root / "lora", broken)
    (broken / "manifest.json").write_text("[1, 2, 3]", encoding="utf-8")
    project.new_project(root / "project", candidates_path=write_jsonl(root / "c.jsonl", [{"prompt": "p", "responses": ["a", "b"]}]))
    (root / "corrupt-project").mkdir()
    (root / "corrupt-project" / "feedback.sqlite").write_bytes(b"this is not a database" * 10)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


W = "{w}"  # replaced by the workspace path
SMALL = ["--train-size", "8", "--val-size", "2", "--test-size", "4"]  # the comparison's presets ask for more rows
CASES = {
    # outputs that would destroy an input
    "train onto its data": (["train", "features", "--data", f"{W}/data.csv", "-o", f"{W}/data.csv"], "is the input"),
    "train onto a directory holding its data": (["train", "lora", "--data", f"{W}/data.csv", "-o", W, "--overwrite"], "contains the input"),
    "train over an artifact": (["train", "lora", "--data", f"{W}/data.csv", "-o", f"{W}/lora"], "pass --overwrite"),
    "export inside the project": (["feedback", "export", f"{W}/project", "-o", f"{W}/project/feedback.sqlite"], "lies inside the input"),
    "reward model onto its project": (["rlhf", "reward", "--data", f"{W}/project", "-o", f"{W}/project"], "is the input"),
    "merge onto itself": (["merge", f"{W}/lora", "-o", f"{W}/lora", "--overwrite"], "is the input"),
    "merge into user files": (["merge", f"{W}/lora", "-o", f"{W}/project", "--overwrite"], "not an adaptlab artifact"),
    "merge onto the current directory": (["merge", f"{W}/lora", "-o", ""], "is the current directory"),
    "embed over the data": (["embed", "--file", f"{W}/texts.txt", "-o", f"{W}/data.csv"], "must end in .npy"),
    # numbers out of range
    "lr inf": (["train", "lora", "--data", f"{W}/data.csv", "--lr", "inf"], "--lr must be a finite number"),
    "weight decay nan": (["train", "lora", "--data", f"{W}/data.csv", "--weight-decay", "nan"], "--weight-decay must be a finite"),
    "grad clip -1": (["train", "lora", "--data", f"{W}/data.csv", "--grad-clip", "-1"], "--grad-clip must be greater than 0"),
    "alpha 0": (["train", "lora", "--data", f"{W}/data.csv", "--alpha", "0"], "--alpha must be greater than 0"),
    "dropout 2": (["train", "head", "--data", f"{W}/data.csv", "--dropout", "2"], "--dropout must be below 1"),
    "max length 0": (["train", "full", "--data", f"{W}/data.csv", "--max-length", "0"], "--max-length must be at least 1"),
    "train size 0": (["train", "features", "--data", f"{W}/data.csv", "--train-size", "0"], "--train-size must be"),
    "epochs 0": (["sft", "train", "--data", f"{W}/chat.jsonl", "--epochs", "0"], "--epochs must be at least 1"),
    "beta -1": (["rlhf", "dpo", "--data", f"{W}/prefs.jsonl", "--beta", "-1"], "--beta must be greater than 0"),
    "kl coefficient -1": (["rlhf", "ppo", "--reward", f"{W}/lora", "--init-kl-coef", "-1"], "--init-kl-coef must be at least 0"),
    "chunk size 0": (["rag", "index", f"{W}/texts.txt", "--store", f"{W}/new-store", "--chunk-size", "0"], "--chunk-size must be"),
    "set batch size 0": (["compare", "--data", f"{W}/data.csv", *SMALL, "--set", "all.batch_size=0"], "--set): --batch-size must be at least 1"),
    "set wrong type": (["compare", "--data", f"{W}/data.csv", *SMALL, "--set", "lora.r=many"], "must be an integer"),
    "port 70000": (["serve", f"{W}/lora", "--port", "70000"], "--port must be from 1 to 65535"),
    "feedback port 0": (["feedback", "serve", f"{W}/project", "--port", "0"], "--port must be from 1 to 65535"),
    # what used to be a traceback
    "seed -1": (["train", "features", "--data", f"{W}/data.csv", "--seed", "-1"], "--seed must be a whole number"),
    "huge seed": (["sft", "train", "--data", f"{W}/chat.jsonl", "--seed", str(2**40)], "--seed must be"),
    "device foo": (["train", "lora", "--data", f"{W}/data.csv", "--device", "foo"], "--device must be cpu, cuda"),
    "devices 0": (["train", "lora", "--data", f"{W}/data.csv", "--devices", "0"], "--devices must be auto, a count"),
    "strategy foo": (["train", "lora", "--data", f"{W}/data.csv", "--strategy", "foo"], "--strategy must be auto or one of"),
    "C nan": (["train", "features", "--data", f"{W}/data.csv", "--C", "nan"], "--C must be a finite number"),
    "r 0": (["train", "lora", "--data", f"{W}/data.csv", "--r", "0"], "--r must be at least 1"),
    "malformed preferences": (["rlhf", "reward", "--data", f"{W}/prefs-broken.jsonl"], "line 1"),
    "non-UTF-8 candidates": (["feedback", "new", f"{W}/new-project", "--candidates", f"{W}/latin1.jsonl"], "not UTF-8"),
    "corrupt project export": (["feedback", "export", f"{W}/corrupt-project", "-o", f"{W}/out.jsonl"], "not a readable feedback database"),
    "corrupt project annotator": (["feedback", "add-annotator", f"{W}/corrupt-project", "bob"], "not a readable feedback database"),
    "rag eval output is a file": (["rag", "eval", "--queries", f"{W}/prefs.jsonl", "-o", f"{W}/data.csv"], "is a file"),
    "compare output is a file": (["compare", "--data", f"{W}/data.csv", *SMALL, "-o", f"{W}/data.csv"], "is a file"),
    "yaml of the wrong shape": (["train", "lora", "--config", f"{W}/wrong-types.yaml"], "wrong-types.yaml"),
    "corrupted artifact": (["predict", f"{W}/broken-artifact", "a text"], "broken-artifact"),
    "reward not callable": (["rlhf", "ppo", "--reward", "math:pi"], "not callable"),
    # what used to be accepted silently
    "annotator name with a newline": (["feedback", "add-annotator", f"{W}/project", "bob\nsmith"], "printable characters"),
    "invalid base url": (["feedback", "add-annotator", f"{W}/project", "carol", "--base-url", "nowhere"], "--base-url must look like"),
    "serve =PATH": (["serve", f"={W}/lora"], "name"),
    # found by the project's own sweep (benchmarks/bad_input_sweep.py)
    "typer usage error": (["train", "lora", "--epochs", "many"], "(see 'adaptlab train lora --help')"),
    "unknown option": (["compare", "--bogus"], "No such option: --bogus"),
    "compare device foo": (["compare", "--data", f"{W}/data.csv", *SMALL, "--device", "foo"], "--device must be cpu, cuda"),
    "config is a directory": (["train", "lora", "--data", f"{W}/data.csv", "--config", ""], "is a directory"),
    "temperature nan": (["generate", "--temperature", "nan", "hi"], "--temperature must be a number from 0"),
    "generate seed -1": (["generate", "--seed", "-1", "hi"], "--seed must be a whole number"),
    "preference train size 0": (["rlhf", "dpo", "--data", f"{W}/prefs.jsonl", "--train-size", "0"], "--train-size must be"),
    "rag eval answers -1": (["rag", "eval", "--queries", f"{W}/prefs.jsonl", "--answers", "-1"], "--answers must be >= 0"),
    "feedback serve unknown host": (["feedback", "serve", f"{W}/project", "--host", "nowhere.invalid"], "cannot listen on"),
    "batch window nan": (["serve", f"{W}/lora", "--batch-window-ms", "nan"], "--batch-window-ms must be from 0 to 10000"),
    "empty store": (["rag", "search", "eiffel", "--store", ""], "--store is empty"),
    "feedback new top-p nan": (["feedback", "new", f"{W}/new-project", "--candidates", f"{W}/c.jsonl", "--top-p", "nan"], "--top-p must be in"),
}


def assert_refused(cli, argv: list[str], needle: str, workspace: Path) -> None:
    """Exit 2, one or two lines on stderr holding ``needle``, no traceback, every workspace file unchanged."""
    before = snapshot(workspace)
    code, _, err = cli(*[arg.replace(W, str(workspace)) for arg in argv])
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err[-1500:]}"
    assert 1 <= len(lines) <= 2 and needle in err and "Traceback" not in err, err
    assert snapshot(workspace) == before, "an input changed"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_destroys_nothing(name, workspace, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative outputs ("", ".") land in a scratch directory, never the checkout
    assert_refused(cli, *CASES[name], workspace)


def test_the_python_api_takes_one_string_as_one_text_and_refuses_bad_types(workspace, tiny_bert, tmp_path):
    import adaptlab
    from adaptlab import AdaptlabError

    artifact = adaptlab.load_artifact(workspace / "lora", progress=False)
    assert len(artifact.predict("a fine film")) == 1  # not one prediction per character
    assert artifact.predict_proba([]).shape == (0, 2)
    assert adaptlab.embed("a fine film", model=str(tiny_bert)).shape == (1, 32)
    with pytest.raises(AdaptlabError, match=r"texts\[0\] is NoneType, not a string"):
        artifact.predict([None])
    splits = adaptlab.load_splits(workspace / "data.csv")
    for call, message in ((lambda: adaptlab.train("lora", None, tmp_path / "o"), "splits must come from adaptlab.load_splits"),
                          (lambda: adaptlab.train("lora", splits, None), "output must be a directory path"),
                          (lambda: adaptlab.train("lora", splits, tmp_path / "o", epochs=True), "--epochs must be an integer"),
                          (lambda: adaptlab.train("lora", splits, tmp_path / "o", lr="fast"), "--lr must be a number"),
                          (lambda: adaptlab.load_splits(workspace / "data.csv", train_size=2.5), "--train-size must be a whole number")):
        with pytest.raises(AdaptlabError, match=message):
            call()
    assert not (tmp_path / "o").exists()
