"""``adaptlab serve``: every artifact over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adaptlab.cli.common import DEVICE, check_can_listen, preflight
from adaptlab.cli.rag_common import existing_store
from adaptlab.errors import AdaptlabError


def serve(
    artifacts: Annotated[Optional[list[str]], typer.Argument(help="Artifact directories, as PATH or NAME=PATH.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes the server to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    generator: Annotated[Optional[list[str]], typer.Option(help="Causal LM for /v1/chat/completions, /v1/completions, /v1/generate and /v1/rag/ask (repeatable): MODEL or NAME=MODEL, e.g. smollm2-135m or sft=runs/sft-lora (LoRA artifacts of one base share it).")] = None,
    embedder: Annotated[Optional[list[str]], typer.Option(help="Embedding model for /v1/embeddings (repeatable), e.g. minilm.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' on every /v1 route (or set ADAPTLAB_API_KEY); also lets clients load and unload LoRA adapters at run time (POST /v1/load_lora_adapter, /v1/unload_lora_adapter).", envvar="ADAPTLAB_API_KEY")] = None,
    max_concurrent: Annotated[int, typer.Option(help="Most generations in flight on the OpenAI routes; more get 429.")] = 64,
    generation_batch: Annotated[int, typer.Option(help="Most generation requests decoded together (1: one at a time).")] = 16,
    rag_store: Annotated[Optional[str], typer.Option("--store", "--rag-store", help="RAG store for /v1/rag/ask (a LanceDB directory or postgresql:// URL), as `rag --store`.")] = None,
    max_batch: Annotated[int, typer.Option(help="Most texts per forward pass.")] = 32,
    batch_window_ms: Annotated[float, typer.Option(help="How long a lone request waits for company, in ms.")] = 5.0,
    batching: Annotated[bool, typer.Option(help="Dynamic micro-batching (--no-batching: one forward pass per request).", metavar="")] = True,
    share_lora: Annotated[bool, typer.Option(help="Serve LoRA adapters of the same base on one copy of it.", metavar="")] = True,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast for passes of 8+ texts where the hardware has native bf16 and a start-up probe shows bf16 leaves the model's answers within 0.01), fp32 or bf16.")] = "auto",
    max_texts: Annotated[int, typer.Option(help="Most texts per classify request.")] = 256,
    max_chars: Annotated[int, typer.Option(help="Longest text accepted, in characters.")] = 20_000,
    device: DEVICE = None,
) -> None:
    """Serve artifacts over HTTP: OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings and
    /v1/models, plus /v1/classify, /v1/generate, /v1/rag/ask, /health; docs at /docs."""
    from adaptlab.runtime import Runtime
    from adaptlab.serve.precision import check_serve_precision

    for name, value in (("--max-batch", max_batch), ("--max-texts", max_texts), ("--max-chars", max_chars),
                        ("--max-concurrent", max_concurrent), ("--generation-batch", generation_batch)):
        if value < 1:
            raise AdaptlabError(f"{name} must be at least 1, not {value}")
    if not 1 <= port <= 65535:
        raise AdaptlabError(f"--port must be from 1 to 65535, not {port}")
    if not 0 <= batch_window_ms <= 10_000:  # also nan
        raise AdaptlabError(f"--batch-window-ms must be from 0 to 10000 (10 s), not {batch_window_ms}")
    check_serve_precision(precision)
    check_can_listen(host, port)
    named = parse_artifact_arguments(artifacts or [])
    if not named and not generator and not embedder and rag_store is None:
        raise AdaptlabError("nothing to serve: give artifact directories, --generator MODEL, --embedder MODEL or --store DIR")
    if rag_store is not None:
        existing_store(rag_store)
        generator = generator or ["smollm2-135m"]
    # every name is checked before torch is imported: a typo is one line at once, not after the first models load
    from adaptlab.serve.generators import parse_generator_arguments

    preflight({"device": device})
    _check_artifacts(named)
    for model in parse_generator_arguments(generator or []).values():
        preflight({"model": model}, decoder=True)
    for model in embedder or []:
        preflight({"model": model})
    Runtime(device, precision).resolved_precision()  # a device this machine lacks fails before any model loads
    import uvicorn

    from adaptlab.serve import ServeOptions, create_app, load_registry
    from adaptlab.serve.allocator import keep_large_buffers

    keep_large_buffers()  # steady throughput from the first request (see adaptlab.serve.allocator)
    registry = load_registry(named, generator or [], rag_store, device, share_lora, embedder or [])
    options = ServeOptions(max_batch=max_batch, batch_window_ms=batch_window_ms, batching=batching,
                           max_texts=max_texts, max_chars=max_chars, precision=precision,
                           max_concurrent=max_concurrent, max_generation_batch=generation_batch, api_key=api_key or None)
    Console(stderr=True).print(f"serving {', '.join([*registry.artifacts, *registry.generators, *registry.embedders]) or 'RAG'} on "
                               f"http://{host}:{port} (docs: /docs)")
    uvicorn.run(create_app(registry, options), host=host, port=port, log_level="warning")


def _check_artifacts(named: dict[str, Path]) -> None:
    """Every artifact's manifest and checksums, and that its strategy is a classifier this server can load, before
    torch is imported (a generator artifact goes to --generator)."""
    from adaptlab.artifacts import read_manifest
    from adaptlab.families import family_of

    for name, path in named.items():
        manifest = read_manifest(path)
        family = family_of(manifest["strategy"], f"artifact '{path}'")
        if family.name != "classifier":
            hint = f"; serve generators with --generator {name}={path}" if family.generator else ""
            raise AdaptlabError(f"artifact '{path}' is a '{manifest['strategy']}' artifact, not a classifier{hint}")


def parse_artifact_arguments(values: list[str]) -> dict[str, Path]:
    """``PATH`` or ``NAME=PATH`` -> {name: path}; names default to the directory name and must be unique."""
    named: dict[str, Path] = {}
    for value in values:
        name, equals, path = value.partition("=")
        path = Path(path if equals else value)
        name = name if equals else path.resolve().name
        if not name.strip() or not str(path):
            raise AdaptlabError(f"'{value}': give an artifact as PATH or NAME=PATH, with a non-empty name and path")
        if not (path / "manifest.json").is_file():
            raise AdaptlabError(f"'{path}' is not an adaptlab artifact (no manifest.json); train one with `adaptlab train`")
        if name in named:
            raise AdaptlabError(f"two artifacts are named '{name}'; name them with NAME=PATH")
        named[name] = path
    return named

