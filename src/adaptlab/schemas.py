"""Declared schemas for the files users hand to adaptlab, and one way to say where a file breaks them.

Readers parse rows against these pydantic models instead of reading ``row["key"]`` and hoping: a missing or
mistyped field is then one line naming the file, the line or row, the field, what was found and what was
expected, raised as ``AdaptlabError`` (exit 2, no traceback) before any model loads, not a ``KeyError`` deep in
a run. One validation library for every format: the chat and YAML readers can declare their schemas here too.
What each field expects is written once, as its ``description``, and quoted by the error line.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from adaptlab.errors import AdaptlabError

Schema = TypeVar("Schema", bound=BaseModel)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty text")
    return text


def _as_list(value: Any) -> Any:
    """One value where a list is expected is a list of one (``"relevant": "Mars#0"``)."""
    return value if isinstance(value, list) else [value]


def _id_text(value: Any) -> Any:
    """Ids may be written as JSON numbers (``"relevant": [12]``); they are compared as strings."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _json_list(value: Any) -> Any:
    """A CSV cell holds a list as JSON text (``["best", "worst"]``)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ValueError("not a JSON list") from None


Text = Annotated[str, AfterValidator(_not_blank)]
Id = Annotated[str, BeforeValidator(_id_text)]


class Row(BaseModel):
    """Unknown keys are ignored: real files carry ids, answer offsets and metadata the readers do not need."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# -- SQuAD (rag eval --squad, rag reader-data, rag train-retriever) -------------------------------------------
class SquadAnswer(Row):
    text: str = Field(description="the answer span, a string")


class SquadQuestion(Row):
    question: Text = Field(description="the question, a non-empty string")
    answers: list[SquadAnswer] = Field(default_factory=list, description='a list of {"text": ...} answers (may be empty)')


class SquadParagraph(Row):
    context: Text = Field(description="the paragraph's text, a non-empty string")
    qas: list[SquadQuestion] = Field(description="a list of {question, answers}")


class SquadArticle(Row):
    title: str = Field(description="the article's title, a string")
    paragraphs: list[SquadParagraph] = Field(description="a list of paragraphs, each {context, qas}")


class SquadFile(Row):
    data: list[SquadArticle] = Field(description='SQuAD format: {"data": [{title, paragraphs: [{context, qas}]}]}')


# -- RAG queries (rag eval --queries) and retriever pairs (rag train-retriever --pairs) -------------------------
class QueryRow(Row):
    question: Text = Field(description="the question, a non-empty string")
    relevant: Annotated[list[Id], BeforeValidator(_as_list)] = Field(
        min_length=1, description="the ids of the documents that answer it: JSONL record ids, file paths or file names")
    answers: Annotated[list[Id], BeforeValidator(_as_list)] = Field(default_factory=list, description="gold answers, strings")


class PassagePair(Row):
    question: Text = Field(description="the question, a non-empty string")
    passage: Text = Field(description="the passage that answers it, a non-empty string")


# -- preferences (rlhf reward / dpo --data, read_preferences) -----------------------------------------------------
class PreferencePair(Row):
    prompt: Text = Field(description="the prompt, a non-empty string")
    chosen: Text = Field(description="the preferred response, a non-empty string")
    rejected: Text = Field(description="the other response, a non-empty string")

    @model_validator(mode="after")
    def _different(self) -> PreferencePair:
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen and rejected are identical; drop the row")
        return self


class Ranking(Row):
    prompt: Text = Field(description="the prompt, a non-empty string")
    responses: Annotated[list[Text], BeforeValidator(_json_list)] = Field(
        min_length=2, description="a list of at least two different non-empty responses, best first")

    @model_validator(mode="after")
    def _distinct(self) -> Ranking:
        if len(set(self.responses)) < len(self.responses):
            raise ValueError("the ranking lists the same response twice")
        return self


class Dialogues(Row):
    """Anthropic HH-RLHF: two whole conversations that share their history."""

    chosen: Text = Field(description="the preferred dialogue, a non-empty string")
    rejected: Text = Field(description="the other dialogue, a non-empty string")


# -- a RAG store's own description (adaptlab-index.json, or the pgvector meta table) -----------------------------
class EmbeddingIdentity(Row):
    model: str = Field(description="the embedding model's name")
    fingerprint: str = Field(description="the embedding model's content fingerprint")


class StoreMeta(Row):
    embedding: EmbeddingIdentity = Field(description="{model, fingerprint} of the embedder that built the store")
    dim: int | None = Field(ge=1, description="the vectors' dimension (null before the first document)")
    chunk_size: int = Field(ge=1, description="tokens per chunk, at least 1")
    chunk_overlap: int = Field(ge=0, description="tokens shared by consecutive chunks, at least 0")
    adapted: dict | None = Field(None, description="what `rag adapt` chose: retrieval {mode, dense_weight, bm25_weight}, "
                                                   "rerank {spec, depth}, and the scores it chose them by")
    reembedding: dict | None = Field(None, description="while `rag adapt` re-embeds the store: the new embedder and the "
                                                       "chunks done (searches are refused until it is finished)")


# -- parsing ----------------------------------------------------------------------------------------------------
def read_text(path: str | Path, where: str) -> str:
    """A UTF-8 file's text; a missing, unreadable or non-UTF-8 file is one line naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdaptlabError(f"{where} cannot be read ({type(exc).__name__}: {exc})") from None


def json_value(text: str, where: str, *, one_line: bool = False) -> Any:
    """``text`` decoded as JSON; a syntax error names its line and column (only the column for ``one_line``: a
    JSONL line, whose number ``where`` already gives)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" column {exc.colno}" if one_line else f" line {exc.lineno} column {exc.colno}"
        raise AdaptlabError(f"{where}{at}: not valid JSON ({exc.msg})") from None


def parse(schema: type[Schema], value: Any, where: str) -> Schema:
    """``value`` as a ``schema`` instance, or ``AdaptlabError`` with ``error_line``. ``where`` names the file and
    the line or row (``"'prefs.jsonl' line 3"``)."""
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        raise AdaptlabError(error_line(exc, schema, where)) from None


def error_line(exc: ValidationError, schema: type[BaseModel], where: str) -> str:
    """The first problem of ``exc`` as one line: ``FILE line N: field 'x': what is wrong (got ...); expected ...``
    (a row that is not an object, or breaks a rule across fields, has no field to name)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc, kind = first["loc"], first["type"]
    message = re.sub(r" or instance of \w+$", "", first["msg"].removeprefix("Value error, "))  # no class names
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if not loc:
        if kind in ("model_type", "model_attributes_type"):
            return f"{where}: expected an object with {', '.join(schema.model_fields)}, got {_shown(first['input'])}"
        return f"{where}: {message}{more}"
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    problem = "missing" if kind == "missing" else f"{message[:1].lower()}{message[1:]} (got {_shown(first['input'])})"
    expected = _description(schema, loc)
    return f"{where}: field '{field}': {problem}" + (f"; expected {expected}" if expected else "") + more


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _description(schema: type[BaseModel], loc: tuple) -> str | None:
    """The ``description`` of the field at ``loc``, following nested models through lists."""
    model: Any = schema
    description = None
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the same field's description still applies
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            break
        description = fields[part].description
        model = _inner_model(fields[part].annotation)
    return description


def _inner_model(annotation: Any) -> Any:
    """``list[SquadParagraph]`` -> ``SquadParagraph``; ``EmbeddingIdentity | None`` -> ``EmbeddingIdentity``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
