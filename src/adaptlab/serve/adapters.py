"""LoRA adapters loaded and unloaded while the server runs: vLLM's ``POST /v1/load_lora_adapter`` and
``POST /v1/unload_lora_adapter``, with vLLM's bodies (``lora_name``, ``lora_path``, ``load_inplace``) and replies.

Loading a file from a path the caller names is a privilege, so the routes answer only on a server started with
``--api-key`` (vLLM gates them behind an environment variable instead). An adapter goes onto the served base it was
trained on (same base fingerprint or name; any other base is refused in one line) as one more named adapter of that
base's ``PeftModel``, so it costs its own weights only; a base served plain is wrapped in a ``PeftModel`` the first
time. ``GET /v1/models`` lists the new name at once.

No request is lost to an unload: the name leaves the registry at once (new requests get 404), but its weights are
deleted only once no request admitted before that is still running (``decoding.requests_using``). Weight changes run
on the one compute thread, between forward passes. PEFT cannot hold zero adapters, so served names map to internal
adapter names (``name#N``) and the last adapter of a base is deleted when the next one arrives instead.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import StrictStr

from adaptlab.serve.validation import CheckedBody


class LoadLoraAdapter(CheckedBody):
    lora_name: StrictStr
    lora_path: StrictStr
    load_inplace: bool = False  # vLLM: replace an adapter already loaded under this name


class UnloadLoraAdapter(CheckedBody):
    lora_name: StrictStr
    lora_int_id: int | None = None  # vLLM's; names are unique here, so it is accepted and not needed


@dataclass
class AdapterHost:
    """What runtime loading needs to know: internal adapter names, and adapters waiting to be deleted."""

    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    retired: dict = field(default_factory=dict)  # id(PeftModel) -> internal names kept only because PEFT needs one


def adapter_router(registry, decoders: dict, executor, options, api_error) -> APIRouter:
    from adaptlab.serve.decoding import BatchedDecoder, requests_using

    router, host, lock = APIRouter(), AdapterHost(), asyncio.Lock()

    def allowed() -> None:
        if not options.api_key:
            raise api_error(403, "permission_denied", "adapters are loaded at run time only on a server started "
                            "with --api-key (loading a file from a path the caller names needs a key)")

    def bases() -> dict:
        """Served names that can host an adapter: base models (no adapter of their own) decoded in batches, not the
        causal LM a classifier artifact (in-context learning) scores with."""
        return {name: g for name, g in registry.generators.items() if g.adapter is None and name not in registry.parents
                and name not in registry.artifacts and isinstance(decoders.get(name), BatchedDecoder)}

    def host_for(name: str, path: Path) -> str:
        wanted = _trained_on(path, name, api_error)
        for served, generator in bases().items():
            if wanted.get("fingerprint") == generator.ref.fingerprint() or served in wanted["names"] \
                    or generator.ref.name in wanted["names"]:
                return served
        offered = ", ".join(f"'{n}' ({g.ref.name})" for n, g in bases().items()) or "none"
        raise api_error(400, "invalid_request_error", f"the adapter '{name}' was trained on '{wanted['label']}', which "
                        f"this server does not serve (bases here: {offered}); serve that base with --generator to load it")

    @router.post("/v1/load_lora_adapter")
    async def load(body: LoadLoraAdapter):
        allowed()
        async with lock:  # one weight change at a time
            if body.lora_name in registry.generators and not body.load_inplace:
                raise api_error(400, "invalid_request_error", f"the adapter '{body.lora_name}' has already been loaded "
                                "(send load_inplace: true to replace it)")
            if body.lora_name in registry.generators and body.lora_name not in registry.parents:
                raise api_error(400, "invalid_request_error", f"'{body.lora_name}' is a served model, not an adapter; "
                                "choose another lora_name")
            path = Path(body.lora_path).expanduser()
            base_name = host_for(body.lora_name, path)
            internal = f"{body.lora_name}#{next(host.counter)}"
            loop = asyncio.get_running_loop()
            try:
                view = await loop.run_in_executor(executor, _attach, registry, decoders, base_name, path, internal, host)
            except Exception as exc:  # e.g. shapes that do not fit: the base keeps serving as before
                raise api_error(400, "invalid_request_error", f"the adapter at '{body.lora_path}' does not load onto "
                                f"'{base_name}': {str(exc).splitlines()[0][:300]}") from None
            old = registry.generators.get(body.lora_name)
            registry.generators[body.lora_name], registry.parents[body.lora_name] = view, base_name
            decoders[body.lora_name] = decoders[base_name]
            if old is not None:  # load_inplace: the old weights go once the requests already sent to them are done
                await _retire(old, executor, host, requests_using)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @router.post("/v1/unload_lora_adapter")
    async def unload(body: UnloadLoraAdapter):
        allowed()
        async with lock:
            if body.lora_name not in registry.generators:
                raise api_error(404, "not_found", f"the adapter '{body.lora_name}' cannot be found")
            if body.lora_name not in registry.parents:
                raise api_error(400, "invalid_request_error", f"'{body.lora_name}' is a base model, not an adapter")
            generator = registry.generators.pop(body.lora_name)
            registry.parents.pop(body.lora_name)
            await _retire(generator, executor, host, requests_using)
            decoders.pop(body.lora_name)  # only now: a stream admitted before the unload looks its decoder up late
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    return router


def _trained_on(path: Path, name: str, api_error) -> dict:
    """The base a LoRA adapter directory (an adaptlab artifact or a plain PEFT folder) was trained on."""
    from adaptlab.artifacts import read_manifest

    config = path / "adapter" / "adapter_config.json"
    if not config.is_file():
        config = path / "adapter_config.json"
    if not config.is_file():
        raise api_error(400, "invalid_request_error", f"no LoRA adapter at '{path}' (neither an adaptlab LoRA artifact "
                        "nor a folder with adapter_config.json)")
    settings = json.loads(config.read_text(encoding="utf-8"))
    if settings.get("peft_type") != "LORA":
        raise api_error(400, "invalid_request_error", f"the adapter at '{path}' is {settings.get('peft_type')}, not LoRA; "
                        "serve it with --generator instead")
    if (path / "manifest.json").is_file():
        base = read_manifest(path)["base_model"]
        names = {n for n in (base.get("name"), base.get("hub_id")) if n}
        return {"fingerprint": base.get("fingerprint"), "names": names, "label": base.get("name"), "config": config}
    recorded = settings.get("base_model_name_or_path") or "an unrecorded base"
    return {"fingerprint": None, "names": {recorded}, "label": recorded, "config": config}


def _attach(registry, decoders: dict, base_name: str, path: Path, internal: str, host: AdapterHost):
    """On the compute thread: add the adapter to the base's ``PeftModel`` (wrapping a plain base first) and
    return the served view of it; adapters kept only for PEFT's sake are deleted now that another exists."""
    from peft import PeftModel

    from adaptlab.models.causal import artifact_tokenizer

    base = registry.generators[base_name]
    folder = path / "adapter" if (path / "adapter" / "adapter_config.json").is_file() else path
    if isinstance(base.model, PeftModel):
        base.model.load_adapter(str(folder), adapter_name=internal)
        base.model.eval()
    else:  # the first adapter of a base served plain: every name and decoder on those weights moves to the wrapper
        plain = base.model
        wrapped = PeftModel.from_pretrained(plain, str(folder), adapter_name=internal).eval()
        for name, generator in list(registry.generators.items()):
            if generator.model is plain:
                registry.generators[name] = generator.view(None) if generator.adapter is None else generator
                registry.generators[name].model = wrapped
        for decoder in {id(d): d for d in decoders.values()}.values():
            if getattr(decoder, "model", None) is plain:
                decoder.model, decoder.shared = wrapped, True
        base = registry.generators[base_name]
    for old in host.retired.pop(id(base.model), []):
        base.model.delete_adapter(old)
    tokenizer = artifact_tokenizer(path) if (path / "manifest.json").is_file() else base.tokenizer
    return base.view(internal, tokenizer)


async def _retire(generator, executor, host: AdapterHost, requests_using) -> None:
    """Delete an adapter's weights once no request that was admitted for it is still running."""
    for waited in itertools.count(1):
        if not requests_using(generator.adapter):
            break
        if waited % 50 == 0:  # a refused request can linger in a reference cycle (its exception's traceback)
            gc.collect()
        await asyncio.sleep(0.02)
    model = generator.model

    def delete() -> None:
        if len(model.peft_config) > 1:
            model.delete_adapter(generator.adapter)
        else:  # PEFT cannot hold zero adapters: this one goes when the next arrives
            host.retired.setdefault(id(model), []).append(generator.adapter)

    await asyncio.get_running_loop().run_in_executor(executor, delete)
