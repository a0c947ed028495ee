"""Dynamic micro-batching: concurrent requests for one model become one forward pass.

Requests queue up per model. A single worker coroutine takes the first waiting request, then keeps taking
more until ``max_batch`` texts are gathered or ``window`` seconds pass with nothing new; the batch runs on
the compute thread while new requests queue behind it. Under load the window never matters (the queue is
full when a forward pass ends). The window is only waited for when the previous batch gathered several
requests, i.e. while clients are concurrent: a lone client never pays it.

Requests are validated before they queue (``adaptlab.serve.validation``); should a batched pass still fail, its
requests are retried one by one, so one bad request never fails the others that shared its pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np


class MicroBatcher:
    def __init__(self, predict: Callable[[list[str]], np.ndarray], executor: Executor, *, max_batch: int = 32,
                 window: float = 0.005, enabled: bool = True) -> None:
        self.predict, self.executor = predict, executor
        self.max_batch, self.window, self.enabled = max_batch, window, enabled
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.batches = self.texts = 0  # counters, reported by /health
        self.concurrent = False  # did the last batch gather more than one request?

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.batches, self.texts = self.batches + 1, self.texts + len(texts)
            return await loop.run_in_executor(self.executor, self.predict, list(texts))
        if self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._run())
        future = loop.create_future()
        await self.queue.put((list(texts), future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            count = len(batch[0][0])
            deadline = loop.time() + (self.window if self.concurrent else 0.0)
            while count < self.max_batch:
                try:
                    item = self.queue.get_nowait() if not self.queue.empty() else await asyncio.wait_for(
                        self.queue.get(), max(0.0, deadline - loop.time()))
                except (asyncio.TimeoutError, TimeoutError):
                    break
                batch.append(item)
                count += len(item[0])
            self.concurrent = len(batch) > 1
            try:
                await self._forward(batch)
            except Exception as exc:  # the worker goes on
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                    continue
                for item, future in batch:  # each request alone, so only the one that fails gets an error
                    try:
                        await self._forward([(item, future)])
                    except Exception as single_error:
                        _fail(future, single_error)

    async def _forward(self, batch: list) -> None:
        """One forward pass over every text of ``batch``; each request's future gets its rows."""
        texts = [text for item, _ in batch for text in item]
        proba = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, texts)
        self.batches, self.texts = self.batches + 1, self.texts + len(texts)
        start = 0
        for item, future in batch:
            if not future.done():
                future.set_result(proba[start:start + len(item)])
            start += len(item)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
