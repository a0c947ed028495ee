"""The request bodies of the OpenAI-compatible routes (``adaptlab.serve.openai_api``), checked by pydantic: what a
client may send, with OpenAI's bounds; fields a server may not implement are accepted and ignored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adaptlab.serve.validation import CheckedBody


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields a server may not implement


class ContentPart(_Lenient):
    """One part of a message's content; only text parts are read (typed, so ``"text": 3`` is a 422, not a 500)."""

    type: str
    text: str | None = None


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict] | None = None  # an assistant turn that called tools

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class Sampling(_Lenient, CheckedBody):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: dict | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)  # accepted, not implemented
    frequency_penalty: float = Field(0.0, ge=-2, le=2)  # accepted, not implemented
    response_format: dict | None = None  # {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatRequest(Sampling):
    messages: list[Message]  # an empty list is refused by the route, with the other empty inputs (400)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)  # at most 20: checked by the route (400)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None  # accepted: a reply holds one call


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)  # OpenAI's default for completions; 0 only with echo
    logprobs: int | None = Field(None, ge=0)  # at most 5: checked by the route (400)
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=20)  # accepted, not implemented

MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS = 5, 20  # OpenAI's limits


class EmbeddingRequest(_Lenient, CheckedBody):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
