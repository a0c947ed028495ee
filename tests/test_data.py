"""Data layer: loading, label maps, validation errors (each one line, exit 2), stratified splits."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from adaptlab import AdaptlabError, load_splits
from adaptlab.data import load_data, read_texts, split_data
from conftest import sentiment_rows, write_csv


def test_named_datasets_load_offline():
    rt = load_data("rotten_tomatoes")
    assert len(rt) == 8530 and rt.label_names == ["negative", "positive"]
    assert rt.class_counts() == {"negative": 4265, "positive": 4265}
    imdb = load_data("imdb")
    assert len(imdb) == 25000
    topics = load_data("wiki-topics")  # Wikipedia openings -> topic, from the offline summaries package
    assert len(topics) == 8976 and len(topics.label_names) == 11 and "Uncategorized" not in topics.label_names
    assert topics.class_counts()["People"] == 1809 and all(0 < len(t) <= 400 for t in topics.texts)


def test_csv_jsonl_parquet_give_the_same_data(tmp_path):
    rows = sentiment_rows(5)
    csv = write_csv(tmp_path / "d.csv", rows)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    parquet = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    loaded = [load_data(p) for p in (csv, jsonl, parquet)]
    for data in loaded:
        assert data.texts == loaded[0].texts
        assert data.label_names == ["neg", "pos"]
        assert (data.labels == loaded[0].labels).all()


def test_custom_columns_and_integer_labels_sort_numerically(tmp_path):
    rows = [{"review": f"text {i}", "stars": [2, 10, 1][i % 3]} for i in range(9)]
    data = load_data(write_csv(tmp_path / "d.csv", rows), text_column="review", label_column="stars")
    assert data.label_names == ["1", "2", "10"]  # numeric, not lexicographic, order
    assert data.labels.tolist()[:3] == [1, 2, 0]


def _bad(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


BAD_INPUTS = {
    # case: (file name, content, extra CLI args, words the one-line message must contain)
    "missing file": ("absent.csv", None, [], ["absent.csv", "does not exist"]),
    "unknown column": ("d.csv", "body,label\na,x\nb,y\n", [], ["no column 'text'", "columns: body, label", "--text-column"]),
    "empty text": ("d.csv", "text,label\nfine,a\n   ,b\n", [], ["row 2", "'text' is empty"]),
    "missing label": ("d.csv", "text,label\nfine,a\nalso fine,\n", [], ["row 2", "label column 'label' is empty"]),
    "single class": ("d.csv", "text,label\na,x\nb,x\n", [], ["only one label", "'x'"]),
    "non-utf8": ("d.csv", b"text,label\ncaf\xe9,a\n", [], ["not UTF-8", "line 2", "UTF-8 encoding"]),
    "empty file": ("d.csv", "", [], ["d.csv", "is empty"]),
    "header only": ("d.csv", "text,label\n", [], ["no rows"]),
    "duplicate ids": ("d.csv", "id,text,label\n1,a,x\n2,b,y\n1,c,y\n", ["--id-column", "id"], ["row 1", "row 3", "share id '1'"]),
    "bad jsonl": ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label}\n', [], ["line 2", "not valid JSON"]),
    "jsonl missing label": ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', [], ["line 2", "label column 'label' is empty"]),
    "unsupported type": ("d.xlsx", "x", [], ["unsupported type", ".xlsx"]),
    "too few per class": ("d.csv", "text,label\na,x\nb,x\nc,x\nd,y\n", [], ["label 'y' has only 1", "at least 3"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_no_traceback(case, tmp_path, cli):
    name, content, extra, words = BAD_INPUTS[case]
    path = str(tmp_path / name) if content is None else _bad(tmp_path, name, content)
    code, out, err = cli("data", "--data", path, *extra)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptlab: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_oversized_sample_names_the_option(cli):
    code, _, err = cli("data", "--train-size", "100000")
    assert code == 2 and "--train-size 100000" in err and "5971" in err


def test_hub_dataset_offline_fails_clearly(monkeypatch):
    from adaptlab.hub import hub_unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_unreachable.cache_clear()
    with pytest.raises(AdaptlabError, match="Hugging Face Hub is not reachable .offline: HF_HUB_OFFLINE"):
        load_data("someone/no-such-dataset-xyz")
    hub_unreachable.cache_clear()


def test_a_typo_of_a_named_dataset_is_refused_with_a_suggestion(cli):
    start = time.perf_counter()
    code, _, err = cli("data", "--data", "rotten_tomato")
    assert code == 2 and "did you mean rotten_tomatoes?" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 10  # no Hub retries (they took 24-41 s offline)


def test_without_network_a_hub_name_fails_fast_with_one_line(monkeypatch):
    """No HF_HUB_OFFLINE, no route to the Hub (as in this sandbox, or a laptop on a plane): the connect check
    answers within seconds instead of datasets' retries."""
    from adaptlab.hub import hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    hub_unreachable.cache_clear()
    start = time.perf_counter()
    with pytest.raises(AdaptlabError, match=r"not reachable \(offline\? 127.0.0.1"):
        load_data("someone/no-such-dataset-xyz")
    assert time.perf_counter() - start < 5
    hub_unreachable.cache_clear()


def test_split_is_deterministic_stratified_and_disjoint():
    data = load_data("rotten_tomatoes")
    a = split_data(data, seed=3)
    b = split_data(data, seed=3)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    assert split_data(data, seed=4).test.texts != a.test.texts
    ids = [set(map(id, s.texts)) for s in (a.train, a.val, a.test)]  # same string objects: index-disjoint
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(a.train) + len(a.val) + len(a.test) == len(data)
    for part in (a.train, a.val, a.test):
        counts = np.array(list(part.class_counts().values()))
        assert counts.max() - counts.min() <= 1  # balanced data stays balanced


def test_test_split_does_not_depend_on_train_size():
    small = load_splits("rotten_tomatoes", train_size=200, test_size=300)
    large = load_splits("rotten_tomatoes", train_size=2000, test_size=300)
    assert small.test.texts == large.test.texts
    assert set(small.train.texts) <= set(load_splits("rotten_tomatoes").train.texts)
    assert len(small.train) == 200 and small.train.class_counts() == {"negative": 100, "positive": 100}


def test_stratification_keeps_imbalance(tmp_path):
    rows = [{"text": f"t{i}", "label": "rare" if i % 10 == 0 else "common"} for i in range(200)]
    splits = split_data(load_data(write_csv(tmp_path / "d.csv", rows)), seed=0)
    for part in (splits.train, splits.val, splits.test):
        share = part.class_counts()["rare"] / len(part)
        assert 0.05 <= share <= 0.15


def test_jsonl_lines_end_at_newlines_only(tmp_path):
    """A string may hold U+2028, U+0085 or a form feed unescaped (json.dumps with ensure_ascii=False writes them so):
    the record stays one line, and lines are numbered as an editor numbers them (CRLF endings included)."""
    from adaptlab.data.files import read_jsonl

    rows = [{"text": "one\u2028line", "label": "a"}, {"text": "next\x85line\x0cstill", "label": "b"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\r\n", encoding="utf-8")
    assert read_jsonl(path) == [(1, rows[0]), (2, rows[1])]
    path.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(AdaptlabError, match="line 2 column 2: not valid JSON"):
        read_jsonl(path)


def test_read_texts_for_prediction(tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("first\n\nsecond\n", encoding="utf-8")
    assert read_texts(txt) == ["first", "second"]
    csv = write_csv(tmp_path / "in.csv", [{"body": "x"}, {"body": "y"}])
    assert read_texts(csv, "body") == ["x", "y"]
    with pytest.raises(AdaptlabError, match="no column 'text'"):
        read_texts(csv)


def test_a_split_column_keeps_the_datas_own_test_set(tmp_path, cli):
    """A benchmark's official test split (a `split` column) is used as it is, never re-cut; without validation rows
    a validation split is cut from training, so early stopping never sees the test rows."""
    import pandas as pd

    import adaptlab

    rows = [{"text": f"text {i} {'good' if i % 2 else 'bad'}", "label": i % 2,
             "split": "test" if i >= 30 else ("validation" if i >= 24 else "train")} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "own.csv", index=False)
    splits = adaptlab.load_splits(tmp_path / "own.csv")
    assert sorted(splits.test.texts) == sorted(r["text"] for r in rows[30:])
    assert sorted(splits.val.texts) == sorted(r["text"] for r in rows[24:30]) and len(splits.train) == 24
    pd.DataFrame([{**r, "split": "train" if r["split"] == "validation" else r["split"]} for r in rows]).to_csv(
        tmp_path / "no-val.csv", index=False)
    cut = adaptlab.load_splits(tmp_path / "no-val.csv")
    assert sorted(cut.test.texts) == sorted(r["text"] for r in rows[30:]) and len(cut.val) == 3 and len(cut.train) == 27
    assert not set(cut.val.texts) & set(cut.test.texts)
    pd.DataFrame([{**rows[0], "split": "holdout"}, *rows[1:]]).to_csv(tmp_path / "bad.csv", index=False)
    code, _, err = cli("data", "--data", tmp_path / "bad.csv")
    assert code == 2 and "row 1: column 'split' is 'holdout'" in err
