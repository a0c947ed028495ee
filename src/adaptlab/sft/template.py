"""Conversations to token ids and loss masks, through the model's own chat template (exactly as at inference).

The template is rendered turn by turn: the text up to an assistant turn (with the generation prompt, as
``Generator.render_chat`` renders it at inference) is masked, the assistant's reply up to and including the
end-of-turn token is in the loss (so a tuned model learns to stop), and whatever the template adds after it
(a newline) is masked again. Each piece is tokenized on its own, so the prompt's tokens are the ones the model
sees when it generates. A template that rewrites earlier turns (the rendering of a longer conversation does
not start with the rendering of a shorter one) cannot mark assistant turns, and is refused.

Tokenizers without a chat template (base models) get ``PLAIN_TEMPLATE``; it is stored in the artifact, so
inference renders prompts the same way.
"""

from __future__ import annotations

from adaptlab.errors import AdaptlabError

IGNORE = -100  # label of a token outside the loss (PyTorch's cross-entropy ignore_index)
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n### Response:\n"
    "{% else %}{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
)


def ensure_chat_template(tokenizer) -> None:
    """Give a template-less tokenizer the plain instruction template (saved with the artifact)."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_TEMPLATE


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """``(text, in_loss)`` pieces whose concatenation is the rendered conversation."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    eos = tokenizer.eos_token or ""
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        try:
            before = _render(tokenizer, messages[:i], True) if i else ""
        except Exception as exc:  # jinja raises its own errors for templates that need a user turn first
            raise AdaptlabError(f"the chat template cannot render a conversation that starts with an assistant turn ({exc})") from None
        after = _render(tokenizer, messages[: i + 1], False)
        if not before.startswith(done) or not after.startswith(before):
            raise AdaptlabError(
                "the tokenizer's chat template cannot mark assistant turns (rendering a longer conversation changes "
                "the earlier text); use a model whose template renders turns in order, or prompt/completion data "
                "with a base model")
        reply = after[len(before):]
        cut = reply.rfind(eos) + len(eos) if eos and eos in reply else len(reply)
        pieces += [(before[len(done):], False), (reply[:cut], True), (reply[cut:], False)]
        done = after
    rest = _render(tokenizer, messages, False)[len(done):]
    return [(text, loss) for text, loss in pieces + [(rest, False)] if text]


def encode_conversation(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int]] | None:
    """``(input_ids, labels)`` truncated to ``max_length``; None when truncation left nothing to learn from."""
    ids: list[int] = []
    labels: list[int] = []
    eos_id = tokenizer.eos_token_id
    for text, in_loss in segments(tokenizer, messages):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        if in_loss and eos_id is not None and (not piece or piece[-1] != eos_id):
            piece = piece + [eos_id]  # templates that do not close the turn: the model must still learn to stop
        ids += piece
        labels += piece if in_loss else [IGNORE] * len(piece)
    ids, labels = ids[:max_length], labels[:max_length]
    return (ids, labels) if any(label != IGNORE for label in labels) else None


def encode_text(tokenizer, text: str, max_length: int) -> list[tuple[list[int], list[int]]]:
    """A document for continued pretraining: every token (and the closing end-of-text) in the loss, in chunks
    of at most ``max_length``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return [(ids[i : i + max_length], ids[i : i + max_length]) for i in range(0, len(ids), max_length)]


def prompt_and_reference(messages: list[dict]) -> tuple[list[dict], str]:
    """Split a conversation at its last assistant turn: what the model is asked, and the reply to match."""
    last = max(i for i, t in enumerate(messages) if t["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt as inference renders it (``add_generation_prompt``)."""
    return tokenizer(_render(tokenizer, messages, True), add_special_tokens=False)["input_ids"]
