"""Keep large tensor buffers in the process heap instead of mapping fresh memory for every forward pass.

glibc serves each allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own ``mmap`` and unmaps it
on free, so every forward pass page-faults its activations in anew. glibc raises the threshold only as large
blocks come and go, so a fresh server ran its first ~800 requests at 55-75% of its later throughput, and
never reached what fixed thresholds give (benchmarks/README.md, serve). Setting the thresholds once, before
the models load, is what PyTorch's CPU performance guide achieves by swapping in jemalloc or tcmalloc,
without a second allocator to install. Freed memory up to ``trim_threshold`` then stays with the process.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses more on 64-bit systems


def keep_large_buffers(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 256 * 2**20) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries: leave their defaults
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
