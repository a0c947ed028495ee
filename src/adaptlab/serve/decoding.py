"""Batched generation for the server: concurrent requests for one base model share every forward pass.

Requests queue per base model. A worker takes the first waiting request and whatever else arrives within a
short window (up to ``max_batch``), left-pads the prompts into one batch and decodes it with the KV cache,
token by token, on the compute thread: a static batch, new requests wait for the next one. Each row has its
own sampling settings (greedy or temperature/top-p with its own seeded generator), its own stop strings and
token limit, and, when the base carries several LoRA adapters, its own adapter (PEFT's mixed-adapter batches:
``adapter_names`` per row, ``__base__`` for none), so requests for different adapters of one base are served
from the same weights in the same pass. Pieces of text reach each request's queue as soon as they are decoded,
so streaming stays token by token; a request whose client went away is dropped from the batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from adaptlab.models.loading import pad_batch, pad_id

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


@dataclass
class Request:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    adapter: str | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Finished:
    """The last item a request's queue receives."""

    reason: str  # "stop" (end of turn or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class BatchedDecoder:
    def __init__(self, model, tokenizer, executor: Executor, *, max_batch: int = 16, window: float = 0.01,
                 shared: bool = False) -> None:
        """``shared``: ``model`` is a PEFT model whose adapters are served under several names (one per request)."""
        self.model, self.tokenizer, self.executor, self.shared = model, tokenizer, executor, shared
        self.max_batch, self.window = max_batch, window
        self.eos = tokenizer.eos_token_id
        self.pad = pad_id(tokenizer)
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.batches = self.requests = 0  # counters, reported by /health

    async def stream(self, request: Request) -> AsyncIterator[str | Finished]:
        """Text pieces of the reply, then a ``Finished``. Closing the iterator early cancels the request."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._run())
        await self.queue.put(request)
        try:
            while True:
                item = await request.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            request.cancelled.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait() if not self.queue.empty()
                                 else await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except (asyncio.TimeoutError, TimeoutError):
                    break
            batch = [r for r in batch if not r.cancelled.is_set()]
            if not batch:
                continue
            emit = lambda request, item: loop.call_soon_threadsafe(request.queue.put_nowait, item)
            try:
                await loop.run_in_executor(self.executor, self.decode, batch, emit)
            except Exception as exc:  # every request of the failed batch gets the error; the worker goes on
                for request in batch:
                    emit(request, exc)
            self.batches, self.requests = self.batches + 1, self.requests + len(batch)

    @torch.inference_mode()
    def decode(self, batch: list[Request], emit) -> None:
        """Decode ``batch`` to the end (blocking; on the compute thread), calling ``emit(request, item)``."""
        device = self.model.device
        ids, mask = pad_batch([r.prompt_ids for r in batch], self.pad, side="left")
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = self._adapter_arguments(batch)
        rows = [_Row(r, self.tokenizer) for r in batch]
        generators = [None if r.temperature == 0 else torch.Generator(device).manual_seed(r.seed or 0) for r in batch]
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        cache = output.past_key_values
        for _ in range(max(r.max_new_tokens for r in batch)):
            tokens = [_next_token(output.logits[i, -1], r.temperature, r.top_p, g) for i, (r, g) in enumerate(zip(batch, generators))]
            for row, token in zip(rows, tokens):
                if not row.done:
                    for item in row.add(token, self.eos):
                        emit(row.request, item)
            if all(row.done or row.request.cancelled.is_set() for row in rows):
                break
            step = torch.tensor([[t if not row.done else self.pad] for t, row in zip(tokens, rows)], device=device)
            mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            output = self.model(input_ids=step, attention_mask=mask, position_ids=positions, past_key_values=cache,
                                use_cache=True, **extra)
            cache = output.past_key_values
        for row in rows:
            if not row.done:
                for item in row.finish("length"):
                    emit(row.request, item)

    def _adapter_arguments(self, batch: list[Request]) -> dict:
        if not self.shared:
            return {}
        return {"adapter_names": [r.adapter or BASE_ADAPTER for r in batch]}


class _Row:
    """One request's reply while it is decoded: incremental detokenization, stop strings, the token limit."""

    def __init__(self, request: Request, tokenizer) -> None:
        self.request, self.tokenizer = request, tokenizer
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already emitted
        self.done = False
        self.hold = max((len(s) for s in request.stop), default=1) - 1  # a stop string may be forming

    def add(self, token: int, eos: int | None) -> list:
        if token == eos:
            return self.finish("stop")
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        for stop in self.request.stop:
            at = text.find(stop)
            if at >= 0:
                return self._emit(text[:at]) + self.finish("stop", counted=True)
        if len(self.tokens) >= self.request.max_new_tokens:
            return self._emit(text) + self.finish("length", counted=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return []
        return self._emit(text[: len(text) - self.hold] if self.hold else text)

    def _emit(self, text: str) -> list:
        piece, self.sent = text[self.sent:], max(self.sent, len(text))
        return [piece] if piece else []

    def finish(self, reason: str, counted: bool = False) -> list:
        items = [] if counted else self._emit(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
        self.done = True
        return items + [Finished(reason, len(self.request.prompt_ids), len(self.tokens))]


def _next_token(logits: torch.Tensor, temperature: float, top_p: float, generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        ordered, order = probabilities.sort(descending=True)
        keep = ordered.cumsum(-1) - ordered < top_p  # the smallest set whose mass reaches top_p
        probabilities = torch.zeros_like(probabilities).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probabilities, 1, generator=generator))


class UnbatchedDecoder:
    """The same interface for models the batched loop cannot drive (prompt-learning adapters, whose virtual
    tokens only PEFT's own ``generate`` adds): one request at a time, the reply as one piece."""

    def __init__(self, generator, executor: Executor) -> None:
        self.generator, self.executor = generator, executor
        self.batches = self.requests = 0

    async def stream(self, request: Request) -> AsyncIterator[str | Finished]:
        text, count, reason = await asyncio.get_running_loop().run_in_executor(self.executor, self._generate, request)
        self.batches, self.requests = self.batches + 1, self.requests + 1
        if text:
            yield text
        yield Finished(reason, len(request.prompt_ids), count)

    @torch.inference_mode()
    def _generate(self, request: Request) -> tuple[str, int, str]:
        model, tokenizer = self.generator.model, self.generator.tokenizer
        ids = torch.tensor([request.prompt_ids], device=model.device)
        sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p} if request.temperature else {"do_sample": False}
        torch.manual_seed(request.seed or 0)
        with self.generator.selected():
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=request.max_new_tokens,
                                    pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id, **sampling)
        new = output[0, ids.shape[1]:].tolist()
        stopped = tokenizer.eos_token_id in new
        new = new[: new.index(tokenizer.eos_token_id)] if stopped else new
        text = tokenizer.decode(new, skip_special_tokens=True)
        for stop in request.stop:
            if stop in text:
                text, stopped = text[: text.index(stop)], True
        return text, len(new), "stop" if stopped else "length"
