"""What a generation request asks for, checked without importing torch: the sampling options and few-shot
examples that ``generate``, ``rag ask``, ``feedback new`` and the server validate before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import AdaptlabError


#: more than any small model's context: a larger value is a typo, not a request
MAX_NEW_TOKENS = 65_536


@dataclass
class SamplingOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy decoding
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise AdaptlabError(f"--max-new-tokens must be from 1 to {MAX_NEW_TOKENS}, not {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or not 0 <= self.temperature <= 100:
            raise AdaptlabError(f"--temperature must be a number from 0 (greedy) to 100, not {self.temperature}")
        if not 0 < self.top_p <= 1:  # also false for nan
            raise AdaptlabError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise AdaptlabError(f"--top-k must be >= 0 (0: off), not {self.top_k}")
        if not 0 <= self.seed < 2**63:
            raise AdaptlabError(f"--seed must be a whole number from 0 to 2**63 - 1, not {self.seed}")

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None,
            "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
        }


def read_examples(path: Path) -> list[tuple[str, str]]:
    """Few-shot (input, output) pairs from a JSONL file of {"input", "output"} objects."""
    if not path.is_file():
        raise AdaptlabError(f"--examples file '{path}' does not exist")
    from adaptlab.data.files import read_jsonl  # with the file: the data package loads numpy

    shots = []
    for number, record in read_jsonl(path, f"--examples '{path}'"):
        if not (isinstance(record, dict) and isinstance(record.get("input"), str) and isinstance(record.get("output"), str)):
            raise AdaptlabError(f"--examples '{path}' line {number}: needs a JSON object with 'input' and 'output' "
                                "strings")
        shots.append((record["input"], record["output"]))
    if not shots:
        raise AdaptlabError(f"--examples '{path}' holds no examples; give one JSON object per line, or leave it out")
    return shots
