"""Wall time and peak memory of a block of work, for the cost columns of every run.

Peak RSS is sampled from /proc in a background thread, because the process-wide ``ru_maxrss`` cannot be
reset between strategies run in one process; on CUDA the allocator's own peak is recorded too.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: the vector extensions that change CPU timings by integer factors (native bf16, AVX-512, AVX2)
TIMING_FLAGS = {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"}


def cpu_description() -> dict:
    """The processor model and its timing-relevant flags, read from /proc/cpuinfo (``platform.processor()`` only
    says "x86_64"): figures taken on different CPUs must never be divided by each other."""
    import platform

    from pathlib import Path

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "cpu_features": sorted(flags & TIMING_FLAGS)}


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the lifetime peak (KiB on Linux/BSD, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_cuda_bytes: int | None = None

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
            "peak_cuda_mb": None if self.peak_cuda_bytes is None else round(self.peak_cuda_bytes / 2**20, 1),
        }


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[Measurement]:
    import torch

    result = Measurement(peak_rss_bytes=current_rss_bytes())
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            result.peak_rss_bytes = max(result.peak_rss_bytes, current_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    sampler.start()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        result.peak_rss_bytes = max(result.peak_rss_bytes, current_rss_bytes())
        if torch.cuda.is_available():
            result.peak_cuda_bytes = torch.cuda.max_memory_allocated()
