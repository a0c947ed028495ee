"""Read the files users hand to adaptlab: UTF-8 text, JSONL, and tables (CSV, JSONL, JSON, Parquet).

Every reader that takes a user's file goes through here, so a broken file is reported the same way wherever it
is read: one ``AdaptlabError`` line naming the file, the line (or row) and the fix, before any model loads.
Lines are numbered from 1 as an editor numbers them; table rows from 1 after the header.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:  # pandas loads when a table is read, after its path is checked
    import pandas as pd

FILE_SUFFIXES = {".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}


def read_utf8(path: Path) -> str:
    """A file's text (a leading byte-order mark dropped; ``.gz`` files decompressed, as the packaged datasets and
    HH-RLHF's files come); a file that is not UTF-8 names the byte and its line."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        import gzip
        import zlib

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise AdaptlabError(f"file '{path}' cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AdaptlabError(
            f"file '{path}' is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "re-save it with UTF-8 encoding"
        ) from None


def read_jsonl(path: str | Path, where: str | None = None) -> list[tuple[int, Any]]:
    """(line number, decoded value) for every non-blank line of a JSONL file.

    Lines end at ``\n`` only, as JSON Lines defines them (a ``\r`` before it is white space to JSON): a JSON string may
    hold U+2028 or U+0085 unescaped (``json.dumps(..., ensure_ascii=False)`` writes them so, as adaptlab's own
    ``rag reader-data`` does), and ``str.splitlines`` would cut the line there. ``where`` names the file in messages (default: its quoted path; callers pass their option, as in
    ``--queries 'q.jsonl'``). A line that is not JSON is one line naming the file, the line and column and the
    fix; a file that cannot be read says why. The values' shape is the caller's to check: each reader expects
    other keys, and says which."""
    path = Path(path)
    where = f"'{path}'" if where is None else where
    try:
        text = read_utf8(path)
    except OSError as exc:
        raise AdaptlabError(f"{where} cannot be read ({type(exc).__name__}: {exc})") from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise AdaptlabError(f"{where} line {number} column {exc.colno}: not valid JSON ({exc.msg}); "
                                "JSONL needs one JSON object per line") from None
    return rows


def read_table(path: Path, need: str = "a header and at least one row per class") -> tuple[pd.DataFrame, Callable[[int], str]]:
    """A CSV/JSONL/JSON/Parquet file as a frame, plus how to name its rows in messages ("row 3", "line 7").

    ``need`` says, in the message for an empty file, what the file should hold."""
    if not path.exists():
        raise AdaptlabError(f"data file '{path}' does not exist; check the path")
    if path.is_dir():
        raise AdaptlabError(f"data '{path}' is a directory; pass a .csv, .jsonl or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise AdaptlabError(
            f"data file '{path}' has an unsupported type '{suffix}'; use .csv, .jsonl or .parquet"
        )
    if path.stat().st_size == 0:
        raise AdaptlabError(f"data file '{path}' is empty; it needs {need}")
    import pandas as pd  # after the cheap checks, so a wrong path is reported at once

    if suffix in {".parquet", ".pq"}:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise AdaptlabError(f"data file '{path}' is not a readable Parquet file ({exc})") from None
        return frame, lambda i: f"row {i + 1}"
    if suffix == ".csv":
        return _parse_csv(path, read_utf8(path), need), lambda i: f"row {i + 1}"
    frame, lines = _parse_json_records(path, suffix, need)
    return frame, (lambda i: f"line {lines[i]}" if lines else f"record {i + 1}")


def _parse_csv(path: Path, text: str, need: str) -> pd.DataFrame:
    import pandas as pd

    if not text.strip():
        raise AdaptlabError(f"data file '{path}' is empty; it needs {need}")
    try:
        # Everything as strings, nothing turned into NaN: emptiness is checked explicitly below.
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise AdaptlabError(f"data file '{path}' is not valid CSV ({str(exc).strip()})") from None


def _parse_json_records(path: Path, suffix: str, need: str) -> tuple[pd.DataFrame, list[int]]:
    """A JSON array (``.json`` starting with ``[``) or JSONL as records, with each record's line (none for an
    array, whose items are named "record N")."""
    import pandas as pd

    text = read_utf8(path) if suffix == ".json" else ""
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdaptlabError(f"data file '{path}' is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        lines: list[int] = []
    else:
        numbered = read_jsonl(path, f"data file '{path}'")
        records, lines = [record for _, record in numbered], [number for number, _ in numbered]
    if not records:
        raise AdaptlabError(f"data file '{path}' is empty; it needs {need}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"line {lines[i]}" if lines else f"record {i + 1}"
            raise AdaptlabError(f"data file '{path}' {where} is not a JSON object; write one object per record")
    return pd.DataFrame.from_records(records), lines


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts to predict or embed: a .txt file (one per line) or a CSV/JSONL/Parquet file's text column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AdaptlabError(f"input file '{path}' does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        frame = read_table(path, need="one text per row")[0]
        if text_column not in frame.columns:
            available = ", ".join(map(str, frame.columns))
            raise AdaptlabError(f"input '{path}' has no column '{text_column}' (columns: {available}); pass --text-column NAME")
        texts = frame[text_column].tolist()
    else:
        texts = read_utf8(path).splitlines()
        texts = [t for t in texts if t.strip()]
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise AdaptlabError(f"input '{path}' row {i + 1}: text is empty; fill it in or remove the row")
    if not texts:
        raise AdaptlabError(f"input file '{path}' has no texts")
    return texts
