"""Data for generative adaptation (SFT): conversations to imitate, or plain text to continue pretraining on.

Three shapes, each validated row by row like classification data (one line naming the file, row and fix):

- prompt/completion rows (``{"prompt", "completion"}``; other names with ``prompt_column``/``completion_column``),
  read as a two-turn conversation (user, assistant), with an optional system message;
- chat rows (``{"messages": [{"role", "content"}, ...]}``, OpenAI's fine-tuning format): loss on assistant turns;
- plain text (``.txt`` files, folders of them, ``{"text"}`` rows, the offline ``wikipedia`` corpus): every token
  in the loss, packed into blocks.

Named tasks work offline: ``wiki-descriptions`` (a Wikipedia article's opening -> its short description, e.g.
"Painting by Georges Seurat") and ``wikipedia`` (the same articles as plain text). A fixed sample of articles
is kept out of both, for measuring forgetting (``general_text_sample``): no training run ever sees it.
Splits are by group (an article, a file, a row), deterministic in the seed, and the test split is never
used for selection.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptlab.data.files import FILE_SUFFIXES, read_table, read_utf8
from adaptlab.data.splits import check_fractions, check_split_options
from adaptlab.data.wikipedia import opening, wikipedia_articles
from adaptlab.errors import AdaptlabError
from adaptlab.hub import HUB_ID, check_hub_name

NAMED_TASKS = {
    "wiki-descriptions": "Wikipedia article opening -> its short description (9,799 rows, offline)",
    "wikipedia": "Wikipedia summaries as plain text, for domain adaptation (about 10,000 articles, offline)",
    "arithmetic": "Arithmetic word problems with a numeric answer, generated offline (4,000 rows): the verifiable task "
                  "for GRPO and RLOO with --reward numeric",
}
WIKI_INSTRUCTION = "Write the short description of the Wikipedia article that begins:\n\n"
ROLES = ("system", "user", "assistant")
TEXT_SUFFIXES = {".txt", ".md"}


@dataclass(frozen=True)
class GenerationData:
    """Conversations (``kind="chat"``: each a list of ``{"role", "content"}`` turns) or documents (``kind="text"``).

    ``groups`` name what must stay in one split (an article, a source file); ``source`` is what the user gave.
    """

    kind: str
    records: list
    groups: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, indices) -> "GenerationData":
        return GenerationData(self.kind, [self.records[i] for i in indices], [self.groups[i] for i in indices], self.source)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.records, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GenerationSplits:
    train: GenerationData
    val: GenerationData
    test: GenerationData
    seed: int
    origins: dict | None = None  # where each split came from, when the user gave them (``adaptlab.data.given``)

    @property
    def kind(self) -> str:
        return self.train.kind

    def describe(self) -> dict:
        return {
            "source": self.train.source, "kind": self.kind, "seed": self.seed,
            "sizes": {name: len(getattr(self, name)) for name in ("train", "val", "test")},
            "fingerprints": {name: getattr(self, name).fingerprint() for name in ("train", "val", "test")},
            **({"split_origins": self.origins} if self.origins else {}),
        }


def load_generation_data(source: str | Path, *, prompt_column: str = "prompt", completion_column: str = "completion",
                         messages_column: str = "messages", text_column: str = "text",
                         system: str | None = None) -> GenerationData:
    """A named task, a file or folder, or a Hub dataset id, as validated ``GenerationData``.

    The shape is read from the columns: ``messages`` -> chat, ``prompt`` + ``completion`` -> prompt/completion,
    ``text`` -> plain text. ``system`` is prepended to prompt/completion rows as a system message.
    """
    name = str(source)
    columns = (prompt_column, completion_column, messages_column, text_column)
    if name == "wiki-descriptions":
        return _wiki_descriptions(system)
    if name == "arithmetic":
        from adaptlab.data.arithmetic import INSTRUCTION, arithmetic_problems

        problems = arithmetic_problems()
        return GenerationData("chat", [_conversation(INSTRUCTION + q, a, system) for q, a in problems],
                              [q for q, _ in problems], name)
    if name == "wikipedia":
        titles, articles = wikipedia_articles(held_out=False)
        return GenerationData("text", [a["extract"] for a in articles], titles, name)
    path = Path(name).expanduser()
    if path.is_dir() or path.suffix.lower() in TEXT_SUFFIXES:
        return _text_files(path)
    if path.exists() or path.suffix.lower() in FILE_SUFFIXES:
        frame, row_name = read_table(path, need="one example per row")
        return _from_rows(frame.to_dict("records"), list(frame.columns), str(path), row_name, columns, system)
    if HUB_ID.match(name):
        check_hub_name(name, "dataset", NAMED_TASKS, "--data")
        return _hub(name, columns, system)
    raise AdaptlabError(f"data '{name}' is not a named task ({', '.join(NAMED_TASKS)}), an existing file or folder, "
                        "or a Hugging Face Hub dataset id; check the spelling or the path")


def split_generation(data: GenerationData, *, seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1,
                     train_size: int | None = None, val_size: int | None = None,
                     test_size: int | None = None) -> GenerationSplits:
    """Split by group: test groups first, then validation, the rest trains; sizes sub-sample each pool (as for
    classification, so the test set does not depend on ``train_size``)."""
    check_split_options(seed, train_size=train_size, val_size=val_size, test_size=test_size)
    check_fractions(test_fraction, val_fraction)
    groups = sorted(set(data.groups))
    if len(groups) < 3:
        raise AdaptlabError(f"data '{data.source}' has {len(groups)} example group(s); a train/validation/test split "
                            "needs at least 3 (add examples)")
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test = max(1, round(len(groups) * test_fraction))
    n_val = max(1, round(len(groups) * val_fraction))
    part = {groups[g]: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, g in enumerate(order)}
    pools = {name: [i for i, g in enumerate(data.groups) if part[g] == name] for name in ("train", "val", "test")}
    if val_size is None and train_size is not None:
        val_size = min(len(pools["val"]), max(train_size // 8, 32))
    chosen = _sub_sampled({name: (data, pools[name]) for name in ("train", "val", "test")}, seed,
                          train=train_size, val=val_size, test=test_size)
    return GenerationSplits(chosen["train"], chosen["val"], chosen["test"], seed)


def load_generation_splits(source: str | Path | None = None, *, seed: int = 0, train_size: int | None = None,
                           val_size: int | None = None, test_size: int | None = None, train_data: str | Path | None = None,
                           val_data: str | Path | None = None, test_data: str | Path | None = None,
                           test_fraction: float = 0.1, val_fraction: float = 0.1, **columns) -> GenerationSplits:
    """``load_generation_data`` then ``split_generation`` (``test_fraction``, ``val_fraction`` of the groups): the
    Python API's one call; or the user's own ``train_data`` + ``test_data`` (+ ``val_data``, else cut from train).

    >>> splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=512, test_size=64)
    """
    sizes = {"seed": seed, "train_size": train_size, "val_size": val_size, "test_size": test_size}
    if train_data or val_data or test_data:
        if source is not None and str(source) != str(train_data):
            raise AdaptlabError(f"give --data '{source}' or your own splits (--train-data, --test-data), not both")
        return _given_generation_splits({"train": train_data, "val": val_data, "test": test_data}, val_fraction=val_fraction,
                                        **sizes, **columns)
    if source is None:
        raise AdaptlabError("no data: give --data, or your own splits with --train-data and --test-data")
    return split_generation(load_generation_data(source, **columns), test_fraction=test_fraction,
                            val_fraction=val_fraction, **sizes)


def _sub_sampled(pools: dict[str, tuple[GenerationData, range | list[int]]], seed: int, **sizes) -> dict:
    """Each split's pool (rows of its data) sub-sampled to its size, each with a generator of its own, so the test
    rows do not depend on ``train_size``."""
    chosen = {}
    for k, name in enumerate(("train", "val", "test")):
        data, pool = pools[name]
        pool, size = np.asarray(pool), sizes[name]
        if size is not None and size < len(pool):
            pool = np.sort(np.random.default_rng([seed, k + 1]).choice(pool, size, replace=False))
        chosen[name] = data.subset(pool.tolist())
    return chosen


def _given_generation_splits(sources: dict[str, str | None], *, seed: int = 0, val_fraction: float = 0.1,
                             train_size: int | None = None, val_size: int | None = None, test_size: int | None = None,
                             **columns) -> GenerationSplits:
    """The user's own splits of generation data (as ``adaptlab.data.given`` does for labelled texts): a validation
    part cut from training by whole groups when not given; a test (or validation) conversation that is also a
    training one is refused with the count."""
    from adaptlab.data.given import PARTS, check_sources, option_name, part_word

    check_split_options(seed, train_size=train_size, val_size=val_size, test_size=test_size)
    check_sources(sources)
    parts = {part: load_generation_data(source, **columns) for part, source in sources.items() if source}
    kinds = {part: data.kind for part, data in parts.items()}
    if len(set(kinds.values())) > 1:
        raise AdaptlabError(f"your splits hold different kinds of data ({', '.join(f'{p}: {k}' for p, k in kinds.items())}); "
                            "give every split the same shape (chat, prompt/completion or plain text)")
    key = lambda record: json.dumps(record, sort_keys=True)
    seen = {key(record) for record in parts["train"].records}
    for part in ("val", "test"):
        if part in parts and (shared := sum(key(record) in seen for record in parts[part].records)):
            raise AdaptlabError(f"{option_name(part)} '{sources[part]}' shares {shared} row(s) with the training data "
                                f"'{sources['train']}' (the same conversation); remove them so the {part_word(part)} rows are unseen")
    rng = np.random.default_rng([seed, 0])
    if "val" not in parts:  # whole groups of the training data, so no conversation sits in both
        train = parts["train"]
        groups = sorted(set(train.groups))
        held = set(rng.permutation(groups)[:max(1, round(len(groups) * val_fraction))].tolist())
        if len(held) == len(groups):
            raise AdaptlabError(f"--train-data '{sources['train']}' has {len(groups)} example group(s); cutting a "
                                "validation part from it needs at least 2 (add examples or give --val-data)")
        parts["val"] = train.subset([i for i, g in enumerate(train.groups) if g in held])
        parts["train"] = train.subset([i for i, g in enumerate(train.groups) if g not in held])
    chosen = _sub_sampled({part: (data, range(len(data))) for part, data in parts.items()}, seed,
                          train=train_size, val=val_size, test=test_size)
    origins = {part: str(sources[part]) if sources.get(part) else "cut from the training data" for part in PARTS}
    return GenerationSplits(chosen["train"], chosen["val"], chosen["test"], seed, origins)


def general_text_sample() -> list[str]:
    """Texts no named task trains on (held-out Wikipedia articles): the default forgetting sample."""
    return [a["extract"] for a in wikipedia_articles(held_out=True)[1]]


def _wiki_descriptions(system: str | None) -> GenerationData:
    titles, articles = wikipedia_articles(held_out=False)
    rows = [(t, a) for t, a in zip(titles, articles) if a.get("description", "").strip()]
    records = [_conversation(WIKI_INSTRUCTION + opening(a["extract"]), a["description"].strip(), system) for _, a in rows]
    return GenerationData("chat", records, [t for t, _ in rows], "wiki-descriptions")


def _conversation(prompt: str, completion: str, system: str | None) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _text_files(path: Path) -> GenerationData:
    if not path.exists():
        raise AdaptlabError(f"data '{path}' does not exist; check the path")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise AdaptlabError(f"folder '{path}' has no .txt or .md files")
    records, groups = [], []
    for file in files:
        # paragraphs (blank-line separated) are the units; a file is one group, so it never spans two splits
        paragraphs = [p.strip() for p in read_utf8(file).split("\n\n") if p.strip()]
        records += paragraphs
        groups += [str(file.relative_to(path) if path.is_dir() else file.name)] * len(paragraphs)
    if not records:
        raise AdaptlabError(f"data '{path}' holds no text; add some or point to another file")
    if len(set(groups)) < 3:  # one or two files: split by paragraph instead
        groups = [f"{g}#{i}" for i, g in enumerate(groups)]
    return GenerationData("text", records, groups, str(path))


def _hub(name: str, columns: tuple[str, ...], system: str | None) -> GenerationData:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split="train")
    except Exception as exc:  # datasets raises many types for "not found" and "no network"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AdaptlabError(f"could not load dataset '{name}' from the Hugging Face Hub ({reason}); if you are "
                            f"offline, use a local file or a named task ({', '.join(NAMED_TASKS)})") from None
    return _from_rows(list(dataset), list(dataset.column_names), name, lambda i: f"row {i + 1}", columns, system)


def _from_rows(rows: list[dict], available: list, origin: str, row_name, columns: tuple[str, ...],
               system: str | None) -> GenerationData:
    prompt_column, completion_column, messages_column, text_column = columns
    if not rows:
        raise AdaptlabError(f"data '{origin}' has no rows; add examples")
    if messages_column in available:
        records = [_messages(row.get(messages_column), f"data '{origin}' {row_name(i)}") for i, row in enumerate(rows)]
        if not any(t["content"].strip() for turns in records for t in turns if t["role"] == "assistant"):
            raise AdaptlabError(f"data '{origin}': every assistant reply is empty, so there is nothing to learn from; "
                                "fill in the replies")
        return GenerationData("chat", records, [str(i) for i in range(len(rows))], origin)
    if prompt_column in available or completion_column in available:
        records = []
        for i, row in enumerate(rows):
            prompt, completion = (_text(row.get(c), c, f"data '{origin}' {row_name(i)}") for c in (prompt_column, completion_column))
            records.append(_conversation(prompt, completion, system))
        return GenerationData("chat", records, [str(i) for i in range(len(rows))], origin)
    if text_column in available:
        records = [_text(row.get(text_column), text_column, f"data '{origin}' {row_name(i)}") for i, row in enumerate(rows)]
        return GenerationData("text", records, [str(i) for i in range(len(rows))], origin)
    raise AdaptlabError(
        f"data '{origin}' has none of the columns '{messages_column}' (chat), '{prompt_column}' + '{completion_column}' "
        f"(prompt/completion) or '{text_column}' (plain text); its columns are {', '.join(map(str, available))}: "
        "pass --prompt-column/--completion-column, --messages-column or --text-column")


def _text(value, column: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        problem = "is missing or empty" if value is None or isinstance(value, (str, float)) else f"is not text ({value!r:.40})"
        raise AdaptlabError(f"{where}: column '{column}' {problem}; fill it in or remove the row")
    return value


def _messages(value, where: str) -> list[dict]:
    """Check one OpenAI-style conversation; CSV cells may hold it as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise AdaptlabError(f"{where}: 'messages' is not valid JSON; write a list of {{\"role\", \"content\"}} objects") from None
    if hasattr(value, "tolist"):  # parquet lists arrive as arrays
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise AdaptlabError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    turns = []
    for k, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise AdaptlabError(f"{where}: message {k} needs a 'role' ({', '.join(ROLES)}) and a 'content' string")
        turns.append({"role": turn["role"], "content": turn["content"]})
    if not any(t["role"] == "assistant" for t in turns):
        raise AdaptlabError(f"{where}: the conversation has no assistant turn to learn from; add one or remove the row")
    return turns


def infer_task(source: str) -> str:
    """generation for a named generation task or a table with ``messages`` or ``prompt``/``completion``
    columns; classification otherwise (a Hub id needs ``--task generation`` to be read as generation data)."""
    if source in NAMED_TASKS:
        return "generation"
    path = Path(source).expanduser()
    if path.is_file():
        try:
            columns = set(read_table(path, need="one example per row")[0].columns)
        except AdaptlabError:
            return "classification"  # the classification loader reports what is wrong with the file
        if "messages" in columns or {"prompt", "completion"} <= columns:
            return "generation"
    return "classification"
