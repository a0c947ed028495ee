"""Batched generation for the server: concurrent requests for one base model share every forward pass.

Requests queue per base model. A worker takes the first waiting request and whatever else arrives within a
short window (up to ``max_batch``), left-pads the prompts into one batch and decodes it with the KV cache,
token by token, on the compute thread: a static batch, new requests wait for the next one. Each row has its
own sampling settings (greedy or temperature/top-p with its own seeded generator), its own stop strings and
token limit, and, when the base carries several LoRA adapters, its own adapter (PEFT's mixed-adapter batches:
``adapter_names`` per row, ``__base__`` for none), so requests for different adapters of one base are served
from the same weights in the same pass. Pieces of text reach each request's queue as soon as they are decoded,
so streaming stays token by token; a request whose client went away is dropped from the batch.

A row may also ask for log-probabilities (``logprobs``: the chosen token's under the model's own distribution,
before temperature or any constraint, and the ``k`` most likely), for its prompt's tokens (``prompt_logprobs``,
read from the prompt's forward pass: what ``echo`` with ``max_tokens: 0`` returns), and be held to a grammar
(``constraint``, an ``adaptlab.structured.Constraint``: disallowed tokens are masked before the row's token is
chosen). Free and constrained rows share the batch; the mask is computed for constrained rows only.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from adaptlab.models.loading import pad_batch, pad_id

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


@dataclass(eq=False)  # compared by identity: requests live in a weak set
class Request:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    adapter: str | None = None
    logprobs: int | None = None  # the chosen token's log-probability and this many alternatives; None: none
    prompt_logprobs: int | None = None  # the same for every prompt token (the first has none)
    constraint: object | None = None  # an adaptlab.structured.Constraint the reply must follow
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        _LIVE.add(self)


#: every request not yet garbage: an adapter's weights are deleted only when none still running uses it
_LIVE: weakref.WeakSet = weakref.WeakSet()


def requests_using(adapter: str | None) -> int:
    """Requests for ``adapter`` created and not finished, cancelled or dropped (their stream sets ``cancelled``)."""
    return sum(1 for request in list(_LIVE) if request.adapter == adapter and not request.cancelled.is_set())


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float | None  # None: the prompt's first token, which nothing predicts
    top: tuple[tuple[int, float], ...] = ()  # (token, log-probability), most likely first


class Piece(str):
    """A piece of a reply's text; ``logprobs``: the tokens decoded since the previous piece (when asked for)."""

    logprobs: tuple = ()


@dataclass
class Finished:
    """The last item a request's queue receives."""

    reason: str  # "stop" (end of turn or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # the reply's tokens (those of the text returned, and the end token
    # when the reply ended with it), when asked for
    prompt_logprobs: list[TokenLogprob] | None = None


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
        for i, row in enumerate(rows):
            if row.request.prompt_logprobs is not None:
                row.prompt_records = _prompt_logprobs(output.logits[i], row.request.prompt_ids, row.request.prompt_logprobs)
            if row.request.max_new_tokens == 0:  # the prompt's log-probabilities only (echo)
                for item in row.finish("length"):
                    emit(row.request, item)
        for _ in range(max(r.max_new_tokens for r in batch)):
            if all(row.done or row.request.cancelled.is_set() for row in rows):
                break
            tokens = []
            for i, (row, r, g) in enumerate(zip(rows, batch, generators)):
                if row.done:
                    tokens.append(self.pad)
                    continue
                logits = output.logits[i, -1]
                scores = logits if r.constraint is None else r.constraint.mask(logits.float().clone())
                token = _next_token(scores, r.temperature, r.top_p, g)
                if r.constraint is not None:
                    r.constraint.accept(token)
                record = None if r.logprobs is None else _token_logprob(logits, token, r.logprobs)
                tokens.append(token)
                for item in row.add(token, self.eos, record):
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
        self.records: list[TokenLogprob] = []  # the tokens' log-probabilities, when the request asks for them
        self.prompt_records: list[TokenLogprob] | None = None
        self.sent = 0  # characters of the decoded text already emitted
        self.sent_records = 0
        self.done = False
        self.hold = max((len(s) for s in request.stop), default=1) - 1  # a stop string may be forming

    def add(self, token: int, eos: int | None, record: TokenLogprob | None = None) -> list:
        if token == eos:  # scored too: a completions reply ends with its end token's entry (lm-eval reads it)
            if record is not None:
                self.records.append(record)
            return self.finish("stop")
        self.tokens.append(token)
        if record is not None:
            self.records.append(record)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        for stop in self.request.stop:
            at = text.find(stop)
            if at >= 0:
                self.records = self.records[: self._tokens_before(at)]
                return self._emit(text[:at]) + self.finish("stop", counted=True)
        if len(self.tokens) >= self.request.max_new_tokens:
            return self._emit(text) + self.finish("length", counted=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return []
        return self._emit(text[: len(text) - self.hold] if self.hold else text)

    def _tokens_before(self, at: int) -> int:
        """How many of the tokens it takes to reach character ``at`` (a stop string's start) of the text."""
        count = 0
        while count < len(self.tokens) and len(self.tokenizer.decode(self.tokens[:count], skip_special_tokens=True)) < at:
            count += 1
        return count

    def _emit(self, text: str) -> list:
        piece, self.sent = Piece(text[self.sent:]), max(self.sent, len(text))
        if not piece:
            return []
        piece.logprobs, self.sent_records = tuple(self.records[self.sent_records:]), len(self.records)
        return [piece]

    def finish(self, reason: str, counted: bool = False) -> list:
        items = [] if counted else self._emit(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
        self.done = True
        return items + [Finished(reason, len(self.request.prompt_ids), len(self.tokens),
                                 None if self.request.logprobs is None else self.records, self.prompt_records)]


def _token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under the model's distribution ``logits`` and the ``top`` most likely."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = logprobs.topk(top) if top else None
    return TokenLogprob(token, float(logprobs[token]),
                        () if best is None else tuple(zip(best.indices.tolist(), best.values.tolist())))


def _prompt_logprobs(logits: torch.Tensor, prompt: list[int], top: int) -> list[TokenLogprob]:
    """Every prompt token's log-probability given the tokens before it (``logits``: one left-padded row of the
    prompt's forward pass, so the prompt is its last ``len(prompt)`` positions)."""
    start = logits.shape[0] - len(prompt)
    logprobs = torch.log_softmax(logits[start:-1].float(), dim=-1)
    targets = torch.tensor(prompt[1:], device=logprobs.device)
    chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    best = logprobs.topk(top, dim=-1) if top else None
    records = [TokenLogprob(prompt[0], None)]
    for position, token in enumerate(prompt[1:]):
        alternatives = () if best is None else tuple(zip(best.indices[position].tolist(), best.values[position].tolist()))
        records.append(TokenLogprob(token, chosen[position], alternatives))
    return records


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
