"""Hard prompt templates: an instruction, demonstrations and the query, plain or in the model's chat format.

An example template is a format string with ``{text}`` and ``{label}``, e.g. ``"Review: {text}\\nSentiment:
{label}"``. The prompt for a query renders the demonstrations in full and the query up to ``{label}``; the
label word is then the continuation whose likelihood is scored. Chat modes (for instruct models) put the
instruction in a system turn and either give each demonstration its own user/assistant turns (``turns``) or
write them inline in one user message (``inline``); ``off`` renders plain text, as for base models.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from adaptlab.errors import AdaptlabError
from adaptlab.params import param

CHAT_MODES = ("auto", "turns", "inline", "off")
DEFAULT_EXAMPLE = "Text: {text}\nAnswer: {label}"
SENTIMENT_EXAMPLE = "Review: {text}\nSentiment: {label}"
GENERIC_EXAMPLE = "Text: {text}\nLabel: {label}"
SENTINEL = "\u2063QUERY\u2063"  # invisible separator around a marker that never occurs in real text


def is_sentiment(label_names: list[str]) -> bool:
    return sorted(n.lower() for n in label_names) == ["negative", "positive"]


def default_example(label_names: list[str]) -> str:
    """The task's default example format: review/sentiment for negative/positive labels, else generic."""
    return SENTIMENT_EXAMPLE if is_sentiment(label_names) else GENERIC_EXAMPLE


@dataclass(frozen=True)
class Demonstration:
    text: str
    label: int


@dataclass
class PromptTemplate:
    instruction: str
    example: str = DEFAULT_EXAMPLE
    separator: str = "\n\n"
    chat: str = "auto"

    def __post_init__(self) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(self.example) if name is not None}
        if "text" not in fields:
            raise AdaptlabError(f"--template must contain the {{text}} placeholder, got {self.example!r}")
        if "label" not in fields:
            raise AdaptlabError(f"--template must contain the {{label}} placeholder, got {self.example!r}")
        unknown = fields - {"text", "label"}
        if unknown:
            raise AdaptlabError(f"--template may only use {{text}} and {{label}}, not {{{', '.join(sorted(unknown))}}}")
        if self.example.index("{label}") < self.example.index("{text}"):
            raise AdaptlabError("--template must put {label} after {text}: the label is what the model continues with")
        if self.chat not in CHAT_MODES:
            raise AdaptlabError(f"--chat must be one of {', '.join(CHAT_MODES)}, not '{self.chat}'")

    def _query_part(self, text: str) -> str:
        return self.example[: self.example.index("{label}")].format(text=text).rstrip(" ")

    def _full_example(self, text: str, word: str) -> str:
        before = self.example[: self.example.index("{label}")].format(text=text)
        after = self.example[self.example.index("{label}") + len("{label}") :].format(text=text)
        return before + word + after

    def chat_mode(self, tokenizer) -> str:
        if self.chat == "auto":
            return "turns" if getattr(tokenizer, "chat_template", None) else "off"
        if self.chat != "off" and not getattr(tokenizer, "chat_template", None):
            raise AdaptlabError(f"--chat {self.chat} needs a model with a chat template; use --chat off")
        return self.chat

    def render(self, tokenizer, demos: list[Demonstration], words: list[str], text: str) -> tuple[str, str, str]:
        """(shared prefix, query part, label lead) for one query.

        The prefix (instruction + demonstrations) is the same for every query with the same demonstrations, so
        its key/value cache is computed once. ``lead`` is the whitespace the label word follows with (" " in
        plain text after "Sentiment:", nothing at the start of an assistant turn).
        """
        mode = self.chat_mode(tokenizer)
        if mode == "off":
            shown = [self._full_example(d.text, words[d.label]) for d in demos]
            full = self.separator.join(([self.instruction] if self.instruction else []) + shown + [self._query_part(SENTINEL)])
            lead = " " if self.example[: self.example.index("{label}")].endswith(" ") else ""
        else:
            messages = [{"role": "system", "content": self.instruction}] if self.instruction else []
            if mode == "turns":
                for d in demos:
                    messages += [{"role": "user", "content": self._query_part(d.text)},
                                 {"role": "assistant", "content": words[d.label]}]
                messages.append({"role": "user", "content": self._query_part(SENTINEL)})
            else:
                shown = [self._full_example(d.text, words[d.label]) for d in demos]
                messages.append({"role": "user", "content": self.separator.join(shown + [self._query_part(SENTINEL)])})
            full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            lead = ""
        cut = full.index(SENTINEL)
        prefix = full[:cut].rstrip(" ")  # the space before the text travels with the text: natural tokens
        query = full[len(prefix) : cut] + text + full[cut + len(SENTINEL) :]
        return prefix, query, lead

    def label_continuations(self, tokenizer, words: list[str]) -> list[str]:
        """Each label word as the prompt continues with it (with the leading space a plain template needs)."""
        _, _, lead = self.render(tokenizer, [], words, "x")
        return [lead + word for word in words]


@dataclass(kw_only=True, eq=False)
class PromptOptions:
    """The hard-prompt parameters shared by in-context learning and the soft-prompt classifier, which score the
    same label words under the same template (so the two compare like for like)."""

    template: str | None = param(None, "Example format with {text} and {label}, e.g. 'Review: {text}\\nSentiment: {label}'.")
    instruction: str | None = param(None, "Instruction placed before the examples.")
    label_words: str | dict | None = param(None, "Words the model should say per label, e.g. 'negative=terrible,positive=great'.")
    chat: str = param("auto", "auto (chat template if the model has one), turns, inline, off.", choices=CHAT_MODES)
    normalize_length: bool = param(False, "Average label log-likelihood per token (multi-token labels).")

    def check_template(self) -> None:
        """A --template of the wrong form is refused when the strategy is built, not after its model loads."""
        if self.template is not None:
            PromptTemplate(instruction="", example=self.template, chat=self.chat)
