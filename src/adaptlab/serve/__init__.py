"""``adaptlab serve``: trained artifacts over HTTP (FastAPI), with dynamic micro-batching.

FastAPI and the models load on first use of these names, so ``adaptlab serve`` checks its options first."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptlab.serve.app import ServeOptions, create_app
    from adaptlab.serve.registry import Registry, load_registry

_LAZY = {"ServeOptions": "adaptlab.serve.app", "create_app": "adaptlab.serve.app",
         "Registry": "adaptlab.serve.registry", "load_registry": "adaptlab.serve.registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptlab.serve' has no attribute '{name}'")


__all__ = ["Registry", "ServeOptions", "create_app", "load_registry"]
