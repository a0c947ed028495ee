"""The stores live in ``adaptlab.rag.stores`` (``base``, ``lance``, ``pgvector``); this module keeps the old
import path for the benchmark scripts (``benchmarks/rag.py``) that use it."""

from adaptlab.rag.stores.base import ChunkRow
from adaptlab.rag.stores.lance import LanceStore

__all__ = ["ChunkRow", "LanceStore"]
