"""Token-aware chunking: windows of the embedder's own tokens, so no chunk is ever silently truncated.

A chunk is ``size`` tokens with ``overlap`` tokens shared with the previous one; its text is the exact
span of the original document those tokens cover (via the fast tokenizer's offsets), so citations quote
the document, not a detokenised approximation. Windows end at a sentence or line break when one lies in
their last quarter, which keeps chunks readable without giving up the size guarantee.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adaptlab.errors import AdaptlabError

SPECIAL_TOKENS = 2  # [CLS] and [SEP] (or BOS/EOS) take two of the model's positions


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets in the record's text
    end: int
    tokens: int


#: longer than any embedding model reads: a larger --chunk-size is a typo (the model's own limit is checked on load)
MAX_CHUNK_TOKENS = 32_768


def check_chunking(size: int | None, overlap: int | None, max_tokens: int | None = None) -> None:
    """The chunk size and overlap, as far as they can be checked without the embedding model (``max_tokens``: the
    longest input it reads, when known). ``None`` is a value not given."""
    limit = (max_tokens - SPECIAL_TOKENS) if max_tokens else MAX_CHUNK_TOKENS
    if size is not None and size < 8:
        raise AdaptlabError(f"--chunk-size must be at least 8 tokens, not {size}")
    if size is not None and size > limit:
        raise AdaptlabError(f"--chunk-size {size} exceeds what the embedding model reads ({limit} tokens plus "
                            f"{SPECIAL_TOKENS} special); use at most {limit}")
    most = MAX_CHUNK_TOKENS // 2 if size is None else size // 2
    if overlap is not None and not 0 <= overlap <= most:
        raise AdaptlabError(f"--chunk-overlap must be between 0 and half the chunk size ({most}), not {overlap}")


class Chunker:
    def __init__(self, tokenizer, size: int = 200, overlap: int = 40, max_tokens: int | None = None) -> None:
        check_chunking(size, overlap, max_tokens)
        if not getattr(tokenizer, "is_fast", False):
            raise AdaptlabError("chunking needs a fast (Rust) tokenizer for character offsets")
        self.tokenizer, self.size, self.overlap = tokenizer, size, overlap

    def split(self, text: str) -> list[Chunk]:
        text = text.strip()
        if not text:
            return []
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if not offsets:
            return []
        chunks, start = [], 0
        while start < len(offsets):
            end = min(start + self.size, len(offsets))
            if end < len(offsets):
                end = self._break_point(text, offsets, start, end)
            span_start, span_end = offsets[start][0], offsets[end - 1][1]
            chunks.append(Chunk(text[span_start:span_end], span_start, span_end, end - start))
            if end == len(offsets):
                break
            start = max(end - self.overlap, start + 1)
        return chunks

    def _break_point(self, text: str, offsets: list, start: int, end: int) -> int:
        """The last token in the window's final quarter that ends a sentence or a line, else ``end``."""
        floor = start + (3 * (end - start)) // 4
        for index in range(end - 1, floor - 1, -1):
            following = text[offsets[index][1]: offsets[index][1] + 2]
            token = text[offsets[index][0]: offsets[index][1]]
            if re.fullmatch(r"[.!?;:]", token[-1:] or "") and (following[:1].isspace() or not following) or "\n" in following[:1]:
                return index + 1
        return end
