"""The HTTP API: classify with any artifact, generate with a causal LM, answer from a RAG store.

Errors are JSON, ``{"error": {"type": ..., "message": ...}}`` with a 4xx status for bad requests (422 invalid
body, 404 unknown model, 413 too large) and 500 for a failure inside a model; the server keeps running.
Model work runs on one compute thread (PyTorch parallelises inside each forward pass), fed by the
micro-batchers, so the event loop stays free to accept requests.

Precision: see ``adaptlab.serve.precision``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab.errors import AdaptlabError
from adaptlab.serve.batching import MicroBatcher
from adaptlab.serve.precision import plan_precision
from adaptlab.serve.registry import Registry
from adaptlab.serve.validation import CheckedBody

log = logging.getLogger("adaptlab.serve")


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 32  # texts per forward pass
    batch_window_ms: float = 5.0
    batching: bool = True
    max_texts: int = 256  # per request
    max_chars: int = 20_000  # per text
    max_body_bytes: int = 2 * 2**20
    max_new_tokens: int = 1024
    precision: str = "auto"  # auto | fp32 | bf16, see adaptlab.serve.precision
    max_concurrent: int = 64  # generations in flight on the OpenAI routes; more get 429
    max_generation_batch: int = 16  # requests decoded together
    api_key: str | None = None  # when set, every /v1 route needs "Authorization: Bearer <key>"


class _Strict(CheckedBody):
    model_config = ConfigDict(extra="forbid")


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty or only whitespace; send text")
    return value


#: a prompt or question: a model given only whitespace answers nothing in particular, so it is refused (422)
Text = Annotated[StrictStr, AfterValidator(_has_text)]


class ClassifyRequest(_Strict):
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify.")
    model: StrictStr | None = Field(None, description="Served model name (optional when one is served).")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class GenerateRequest(_Strict):
    prompt: Text
    model: StrictStr | None = None
    system: StrictStr | None = None
    raw: bool = Field(False, description="Send the prompt as is, without the chat template.")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, lt=2**63)
    stream: bool = Field(False, description="Server-sent events: one `data: {\"text\": ...}` per piece, then `data: [DONE]`.")


class AskRequest(_Strict):
    question: Text
    k: int = Field(3, ge=0, le=20, description="Chunks of context (0 = closed-book).")
    model: StrictStr | None = Field(None, description="Generator name.")
    max_new_tokens: int = Field(160, ge=1)
    stream: bool = False
    retrieval: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="How chunks are found (default: the server's).")
    where: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Exact-match filters: source, title, locator or a record field.")


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _error(status: int, kind: str, message: str) -> JSONResponse:
    """OpenAI's error envelope, on every route (``type`` and ``code`` name the kind of error)."""
    return JSONResponse({"error": {"type": kind, "message": message, "param": None, "code": kind}}, status_code=status)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413) before they are parsed, declared length or not: the body
    is read here (stopping at the limit) and replayed to the app."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        too_large = _error(413, "too_large", f"request body over {self.limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(registry: Registry, options: ServeOptions = ServeOptions()) -> FastAPI:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptlab-compute")
    # The start-up probe runs on the compute thread too: a forward pass on any other thread leaves a second
    # OpenMP team behind that halves single-request throughput on 2 cores (measured: 96 -> 54 texts/s).
    precisions = {name: executor.submit(plan_precision, artifact.predict_proba, options.precision, registry.device).result()
                  for name, artifact in registry.artifacts.items()}
    batchers = {
        name: MicroBatcher(precisions[name].apply(artifact.predict_proba), executor,
                           max_batch=options.max_batch, window=options.batch_window_ms / 1000, enabled=options.batching)
        for name, artifact in registry.artifacts.items()
    }

    decoders = _decoders(registry, executor, options)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        for batcher in batchers.values():
            await batcher.close()
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="adaptlab", description="Serve trained adaptlab artifacts.", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    if options.api_key:
        app.add_middleware(BearerKey, key=options.api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        message = first["msg"].removeprefix("Value error, ")
        return _error(422, "invalid_request", message if where == "body" else f"{where}: {message}")

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return _error(exc.status, exc.kind, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body": not UTF-8, not JSON, nested too deeply
            return _error(422, "invalid_request", "body: not valid JSON in UTF-8 (or nested too deeply)")
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(AdaptlabError)
    async def user_error(_request: Request, exc: AdaptlabError):  # e.g. a prompt longer than the model reads
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        """The details stay in the server's log: an exception's text can hold paths, weights' shapes or input."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the model failed on this request; the server log has the details")

    def lookup(function, name):
        try:
            return function(name)
        except LookupError as exc:
            raise ApiError(404, "unknown_model", str(exc.args[0])) from None

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(registry.artifacts), "generators": list(registry.generators),
                "rag": registry.rag is not None,
                "batches": {name: {"forward_passes": b.batches, "texts": b.texts} for name, b in batchers.items()},
                "generation_batches": {name: {"batches": d.batches, "requests": d.requests} for name, d in decoders.items()}}

    @app.get("/v1/models")
    async def models() -> dict:
        """OpenAI's list (``object``, ``data``: every generator, adapters with their ``parent``, classifiers and
        embedders) plus adaptlab's own detail (``models``, ``generators``, ``rag``)."""
        entry = lambda name, **extra: {"id": name, "object": "model", "created": 0, "owned_by": "adaptlab", **extra}
        data = [entry(n, parent=registry.parents.get(n), kind="generator") for n in registry.generators]
        data += [entry(n, kind="classifier") for n in registry.artifacts] + [entry(n, kind="embedder") for n in registry.embedders]
        return {
            "object": "list", "data": data,
            "models": [{
                "name": name, "strategy": a.manifest["strategy"], "base_model": a.manifest["base_model"]["name"],
                "labels": a.label_names, "test_accuracy": a.manifest["metrics"]["test"]["accuracy"],
                "shares_base_with": registry.shared_bases.get(name), "precision": precisions[name].describe(),
            } for name, a in registry.artifacts.items()],
            "generators": list(registry.generators),
            "rag": None if registry.rag is None else {"store": registry.rag.store.location, "chunks": registry.rag.store.count()},
        }

    from adaptlab.serve.adapters import adapter_router
    from adaptlab.serve.openai_api import openai_router

    app.include_router(openai_router(registry, decoders, executor, options, ApiError))
    app.include_router(adapter_router(registry, decoders, executor, options, ApiError))

    @app.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(request: ClassifyRequest) -> dict:
        artifact = lookup(registry.artifact, request.model)
        if len(request.texts) > options.max_texts:
            raise ApiError(413, "too_large", f"{len(request.texts)} texts; at most {options.max_texts} per request")
        for number, text in enumerate(request.texts):
            if len(text) > options.max_chars:
                raise ApiError(413, "too_large", f"texts[{number}] has {len(text)} characters; at most {options.max_chars}")
        name = request.model or next(n for n, a in registry.artifacts.items() if a is artifact)
        from adaptlab.runner import format_predictions

        proba = await batchers[name].submit(request.texts)
        return {"model": name, "predictions": format_predictions(artifact.label_names, proba)}

    def sse(pieces, final=None):
        for piece in pieces:
            yield f"data: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
        if final is not None:
            yield f"data: {json.dumps(final(), ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/generate")
    async def generate(request: GenerateRequest):
        from adaptlab.sampling import SamplingOptions

        name, generator = lookup(registry.generator, request.model)
        if request.max_new_tokens > options.max_new_tokens:
            raise ApiError(413, "too_large", f"max_new_tokens {request.max_new_tokens}; at most {options.max_new_tokens}")
        sampling = SamplingOptions(request.max_new_tokens, request.temperature, request.top_p, seed=request.seed)
        prompt = request.prompt if request.raw else generator.render_chat(request.prompt, request.system)
        if request.stream:  # stream() checks the prompt before returning: errors come as JSON, not a cut stream
            # the generation itself runs on the compute thread, like every other forward pass
            pieces = generator.stream(prompt, sampling, launch=executor.submit)
            return StreamingResponse(sse(pieces), media_type="text/event-stream")
        text = await _in_thread(executor, generator.generate, prompt, sampling)
        return {"model": name, "text": text}

    @app.post("/v1/rag/ask")
    async def rag_ask(request: AskRequest):
        from adaptlab.sampling import SamplingOptions
        from adaptlab.rag.answer import Answerer
        from adaptlab.rag.stores.base import describe

        if registry.rag is None:
            raise ApiError(404, "no_rag_store", "no RAG store is served; start the server with --store DIR")
        name, generator = lookup(registry.generator, request.model)
        if request.max_new_tokens > options.max_new_tokens:
            raise ApiError(413, "too_large", f"max_new_tokens {request.max_new_tokens}; at most {options.max_new_tokens}")
        answerer = Answerer(registry.rag, generator=generator)
        sampling = SamplingOptions(max_new_tokens=request.max_new_tokens)
        retrieval = dataclasses.replace(registry.rag.retrieval, mode=request.retrieval or registry.rag.retrieval.mode,
                                        where=tuple(request.where.items()) or registry.rag.retrieval.where)
        hits = await _in_thread(executor, answerer.retrieve, request.question, request.k, retrieval)
        summary = lambda: {"model": name, **answer.summary(), "sources": [describe(hit) for hit in answer.sources]}
        if request.stream:  # pieces are read here; the generation runs on the compute thread
            answer, pieces = answerer.stream(request.question, request.k, sampling, hits=hits, launch=executor.submit)
            return StreamingResponse(sse(pieces, summary), media_type="text/event-stream")
        answer = await _in_thread(executor, lambda: answerer.ask(request.question, request.k, sampling, hits=hits))
        return summary()

    return app


def _decoders(registry: Registry, executor, options: ServeOptions) -> dict:
    """One batched decoder per served weights (adapters of one base share their base's), by generator name."""
    from adaptlab.models.causal import decoder_and_head
    from adaptlab.serve.decoding import BatchedDecoder, UnbatchedDecoder

    by_weights: dict[int, object] = {}
    decoders = {}
    for name, generator in registry.generators.items():
        if decoder_and_head(generator.model) is None:
            decoders[name] = UnbatchedDecoder(generator, executor)
            continue
        key = id(generator.model)
        if key not in by_weights:
            by_weights[key] = BatchedDecoder(generator.model, generator.tokenizer, executor,
                                             max_batch=options.max_generation_batch, shared=generator.shared)
        decoders[name] = by_weights[key]
    return decoders


class BearerKey:
    """``--api-key``: every /v1 route needs ``Authorization: Bearer <key>``, compared in constant time (401 otherwise)."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        import hmac

        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.key):
                refusal = _error(401, "invalid_api_key", "missing or wrong API key; send Authorization: Bearer <key>")
                return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


async def _in_thread(executor, function, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)
