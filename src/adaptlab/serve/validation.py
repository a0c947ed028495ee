"""Request bodies that cannot reach a model: every string of a request is checked before the request joins a batch.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``), which Python accepts as a ``str`` but no tokenizer can
encode; left in, it fails the whole forward pass and with it every request batched alongside. Both the
native and the OpenAI-compatible request models derive from ``CheckedBody``, so such a request gets 422 alone.
"""

from __future__ import annotations

from pydantic import BaseModel, model_validator


def first_unencodable(value, where: str) -> str | None:
    """The path of the first string under ``value`` that is not valid Unicode, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, BaseModel):
        value = value.__dict__
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for key, item in items:
        key = str(key)
        found = first_unencodable(item, f"{where}{key}" if key.startswith("[") else f"{where}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


class CheckedBody(BaseModel):
    @model_validator(mode="after")
    def _valid_unicode(self):
        where = first_unencodable(self, "")
        if where is not None:
            raise ValueError(f"{where} is not valid Unicode (a lone surrogate such as \\ud800); send UTF-8 text")
        return self
