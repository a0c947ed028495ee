"""``adaptlab serve``: trained artifacts over HTTP (FastAPI), with dynamic micro-batching."""

from adaptlab.serve.app import ServeOptions, create_app
from adaptlab.serve.registry import Registry, load_registry, parse_artifact_arguments

__all__ = ["Registry", "ServeOptions", "create_app", "load_registry", "parse_artifact_arguments"]
