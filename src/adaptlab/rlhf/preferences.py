"""Human preference data: pairs, full rankings and Anthropic HH-RLHF dialogues, validated and split by prompt.

Accepted rows (JSONL, optionally gzipped, JSON arrays, CSV, a Hugging Face dataset id, or an ``adaptlab
feedback`` project directory, read as its exported pairs):

- pairs: ``{"prompt", "chosen", "rejected"}``
- rankings: ``{"prompt", "responses": [best, ..., worst]}``, expanded into every ordered pair
  (InstructGPT). Each pair of a K-response ranking weighs ``1 / C(K, 2)``, so one prompt counts as much as one
  pair-labelled prompt instead of K(K-1)/2 of them.
- HH-RLHF: ``{"chosen", "rejected"}`` full dialogues sharing their history; the prompt is the shared text up
  to and including the last ``Assistant:`` turn, the responses are what follows.

The split holds out whole prompts: no prompt of the test pairs is seen in training.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from adaptlab.data.files import read_jsonl
from adaptlab.errors import AdaptlabError
from adaptlab.schemas import Dialogues, PreferencePair, Ranking, json_value, parse

ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    group: int  # index of the prompt the pair is about (the unit of the train/val/test split)
    weight: float = 1.0


@dataclass(frozen=True)
class PreferenceSplit:
    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "pairs": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                "prompts": {name: len({p.group for p in getattr(self, name)}) for name in ("train", "val", "test")}}


def _rows(source: str) -> list[tuple[str, object]]:
    """(where, row) for every row of ``source``: ``where`` names the file and the JSONL line, the CSV row (after
    the header) or the JSON array's item, for the error lines."""
    path = Path(source)
    if not path.exists():
        if "/" in source and not source.startswith((".", "/")):
            return _numbered(source, _hub_rows(source))
        raise AdaptlabError(f"preference data '{source}' does not exist; give a .jsonl(.gz)/.json/.csv file or a Hub dataset id")
    if (path / "feedback.sqlite").exists():  # a ranking project of `adaptlab feedback`: its pairs, as exported
        from adaptlab.feedback.project import export

        return _numbered(source, export(path, "pairs"))
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    if not name.endswith((".csv", ".json")):  # JSON Lines, the default
        return [(f"'{source}' line {number}", row) for number, row in read_jsonl(path, f"'{source}'")]
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            if name.endswith(".csv"):
                return _numbered(source, _csv_rows(handle, source))
            rows = json_value(handle.read(), f"'{source}'")
            if not isinstance(rows, list):
                raise AdaptlabError(f"'{source}': a .json file must hold a list of objects")
            return [(f"'{source}' item {number}", row) for number, row in enumerate(rows, start=1)]
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
        raise AdaptlabError(f"'{source}' cannot be read ({type(exc).__name__}: {exc})") from None


def _numbered(source: str, rows: list) -> list[tuple[str, object]]:
    return [(f"'{source}' row {number}", row) for number, row in enumerate(rows, start=1)]


def _csv_rows(handle, source: str) -> list[dict]:
    """Every cell as text (a prompt "42" stays a string); pandas' parse errors (an unclosed quote) as one line."""
    import pandas as pd

    try:
        return pd.read_csv(handle, dtype=str, keep_default_na=False).to_dict("records")
    except pd.errors.EmptyDataError:
        raise AdaptlabError(f"'{source}' is empty; a preference CSV needs a header (prompt,chosen,rejected) and rows") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).removeprefix("Error tokenizing data. C error: ").strip().splitlines()[0]
        unclosed = re.fullmatch(r"EOF inside string starting at row (\d+)", reason)  # pandas counts the header as row 0
        if unclosed:
            raise AdaptlabError(f"'{source}' row {unclosed.group(1)}: a quoted field opens with \" and is never closed; "
                                'close it ("..."), and quote fields that hold commas or line breaks') from None
        raise AdaptlabError(f"'{source}' is not valid CSV ({reason}); quote fields that hold commas or line breaks") from None


def _hub_rows(name: str) -> list[dict]:
    try:
        import datasets

        loaded = datasets.load_dataset(name, split="train")
    except Exception as exc:  # offline, unknown id, gated...
        raise AdaptlabError(f"cannot load Hub dataset '{name}' ({type(exc).__name__}); offline, use a local file") from None
    return list(loaded)


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """HH-RLHF: (prompt, chosen response, rejected response) from two dialogues with a shared history."""
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(ASSISTANT, 0, common + 1)
    if cut < 0:
        return None
    cut += len(ASSISTANT)
    return chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()


def read_preferences(source: str | Path, skip_invalid: bool = False) -> tuple[list[Pair], str]:
    """All pairs in ``source`` and the detected format, with one-line errors naming the line or row and field
    (each row is parsed against its schema in ``adaptlab.schemas``). ``skip_invalid`` drops bad rows instead
    (real data has a few: HH-RLHF has empty responses)."""
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise AdaptlabError(f"preference data must be a file, a feedback project or a Hub dataset id, not {source!r}")
    source = str(source)
    rows = _rows(source)
    if not rows:
        raise AdaptlabError(f"'{source}' holds no rows")
    pairs: list[Pair] = []
    formats: set[str] = set()
    skipped = 0
    for number, (where, row) in enumerate(rows, start=1):
        try:
            pairs += _row_pairs(row, number, where, formats)
        except AdaptlabError:
            if not skip_invalid:
                raise
            skipped += 1
    if not pairs:
        raise AdaptlabError(f"'{source}': no valid rows ({skipped} skipped)")
    # Group by prompt text, so every pair about one prompt (from one ranking or several rows) is held out together.
    groups: dict[str, int] = {}
    pairs = [dataclasses.replace(p, group=groups.setdefault(p.prompt, len(groups))) for p in pairs]
    if skipped:
        from adaptlab.progress import stderr

        stderr.print(f"skipped {skipped} invalid row(s) of {source}")
    return pairs, "+".join(sorted(formats))


def _row_pairs(row, number: int, where: str, formats: set[str]) -> list[Pair]:
    """The pairs one row contributes (a ranking gives several); adds the row's format to ``formats``. The format
    is told by the keys: ``responses`` a ranking, ``prompt`` a pair, neither two HH-RLHF dialogues."""
    if not isinstance(row, dict):
        raise AdaptlabError(f"{where}: expected an object with prompt/chosen/rejected or prompt/responses, got {type(row).__name__}")
    if "responses" in row:
        formats.add("rankings")
        ranking = parse(Ranking, row, where)
        k = len(ranking.responses)
        weight = 1.0 / (k * (k - 1) / 2)
        return [Pair(ranking.prompt, ranking.responses[better], ranking.responses[worse], number, weight)
                for better, worse in combinations(range(k), 2)]
    if "prompt" in row:
        formats.add("pairs")
        pair = parse(PreferencePair, row, where)
        return [Pair(pair.prompt, pair.chosen, pair.rejected, number)]
    formats.add("hh-rlhf dialogues")
    dialogues = parse(Dialogues, row, where)
    parts = split_dialogue(dialogues.chosen, dialogues.rejected)
    if parts is None:
        raise AdaptlabError(f"{where}: field 'prompt': missing, and the dialogues have no shared '{ASSISTANT.strip()}' turn "
                            "to take it from; expected prompt/chosen/rejected, prompt/responses or HH-RLHF dialogues")
    prompt, chosen, rejected = parts
    if not chosen.strip() or not rejected.strip():
        raise AdaptlabError(f"{where}: empty response after the last shared '{ASSISTANT.strip()}' turn; drop the row")
    if chosen == rejected:
        raise AdaptlabError(f"{where}: chosen and rejected are identical; drop the row")
    return [Pair(prompt, chosen, rejected, number)]


def split_preferences(pairs: list[Pair], source: str, *, seed: int = 0, test: float = 0.2, val: float = 0.1,
                      train_size: int | None = None) -> PreferenceSplit:
    """Hold out whole prompts (groups) for test and validation."""
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1):
        raise AdaptlabError(f"--train-size must be a whole number of at least 1, not {train_size!r}")
    groups = sorted({p.group for p in pairs})
    if len(groups) < 5:
        raise AdaptlabError(f"'{source}' has {len(groups)} prompts; at least 5 are needed to hold some out")
    order = np.random.default_rng(seed).permutation(groups)
    n_test, n_val = max(1, round(test * len(groups))), max(1, round(val * len(groups)))
    test_ids, val_ids = set(order[:n_test].tolist()), set(order[n_test:n_test + n_val].tolist())
    train = [p for p in pairs if p.group not in test_ids | val_ids]
    if train_size is not None:
        keep = set(np.random.default_rng([seed, 1]).permutation(len(train))[:train_size].tolist())
        train = [p for i, p in enumerate(train) if i in keep]
    return PreferenceSplit(train, [p for p in pairs if p.group in val_ids], [p for p in pairs if p.group in test_ids], source)
