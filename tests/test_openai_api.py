"""The OpenAI-compatible routes, driven by the official ``openai`` client: chat, completions, streaming,
embeddings, the model list, adapters on one shared base, batched decoding, errors and the API key."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from fastapi.testclient import TestClient


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def learnable_llama(tmp_path_factory) -> Path:
    """A tiny random decoder whose LoRA adapters can learn in a few steps: with the default 0.02 initialisation
    and a frozen norm and LM head, a 16-wide model's logits stay near uniform whatever LoRA does."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from adaptlab.models import resolve_model

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("learnable-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256, initializer_range=0.3,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def adapters(learnable_llama, tmp_path_factory) -> dict[str, Path]:
    """Two SFT LoRA adapters of the tiny decoder, trained to answer differently."""
    import adaptlab

    tiny_llama = learnable_llama
    root = tmp_path_factory.mktemp("openai-adapters")
    out = {}
    for name, word in (("red", "red red red"), ("blue", "blue blue blue")):
        rows = [{"prompt": f"Say something {i}.", "completion": word} for i in range(24)]
        splits = adaptlab.load_generation_splits(write_jsonl(root / f"{name}.jsonl", rows))
        adaptlab.train_sft(splits, root / name, model=str(tiny_llama), method="lora", lr=5e-2, epochs=3, batch_size=4,
                           forgetting=False, max_new_tokens=2, generate_limit=2, progress=False)
        out[name] = root / name
    return out


def make_client(registry, **options):
    from adaptlab.serve import ServeOptions, create_app

    test_client = TestClient(create_app(registry, ServeOptions(**options)))
    key = options.get("api_key") or "unused"
    return test_client, openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=test_client, max_retries=0)


@pytest.fixture(scope="module")
def served(learnable_llama, tiny_bert, adapters):
    from adaptlab.serve import load_registry

    tiny_llama = learnable_llama
    registry = load_registry({}, [f"base={tiny_llama}", f"red={adapters['red']}", f"blue={adapters['blue']}"], None, "cpu",
                             embedders=[str(tiny_bert)])
    test_client, client = make_client(registry)
    with test_client:
        yield registry, test_client, client


def test_models_list_in_openai_shape_with_adapter_parents(served, learnable_llama):
    registry, _, client = served
    tiny_llama = learnable_llama
    listed = {m.id: m for m in client.models.list().data}
    assert {"base", "red", "blue"} <= set(listed)
    assert listed["red"].model_extra["parent"] == listed["blue"].model_extra["parent"] == str(tiny_llama)
    # two adapters, one copy of the base weights
    assert registry.generators["red"].model is registry.generators["blue"].model
    assert sum(1 for g in registry.generators.values() if g.model is registry.generators["red"].model) == 3


def test_chat_completion_and_its_stream_agree(served):
    _, _, client = served
    messages = [{"role": "user", "content": "Say something 3."}]
    reply = client.chat.completions.create(model="red", messages=messages, max_tokens=6, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and "red" in choice.message.content
    assert reply.usage.completion_tokens <= 6 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="red", messages=messages, max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [choice.finish_reason]
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_each_adapter_answers_as_trained_and_the_base_as_before(served):
    _, _, client = served
    ask = lambda model: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say something 5."}],
                                                       max_tokens=4, temperature=0).choices[0].message.content
    red, blue, base = ask("red"), ask("blue"), ask("base")
    assert red.split()[0] == "red" and blue.split()[0] == "blue" and not {"red", "blue"} & set(base.split())


def test_concurrent_requests_share_forward_passes_and_match_single_requests(served):
    registry, test_client, client = served
    prompts = [f"Say something {i}." for i in range(6)]
    models = ["red", "blue", "base"] * 2
    alone = [client.completions.create(model=m, prompt=p, max_tokens=5, temperature=0).choices[0].text
             for m, p in zip(models, prompts)]
    before = test_client.get("/health").json()["generation_batches"]["red"]["batches"]
    results = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        barrier.wait()
        results[i] = client.completions.create(model=models[i], prompt=prompts[i], max_tokens=5, temperature=0).choices[0].text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == alone  # mixed adapters in one left-padded batch give each request its own answer
    after = test_client.get("/health").json()["generation_batches"]["red"]["batches"]
    assert after - before < len(prompts)  # fewer passes than requests: they were batched


def test_completions_with_lists_n_seeds_and_stop(served):
    _, _, client = served
    many = client.completions.create(model="base", prompt=["one", "two"], max_tokens=3, temperature=0)
    assert many.object == "text_completion" and [c.index for c in many.choices] == [0, 1]
    sampled = client.completions.create(model="base", prompt="hello", max_tokens=5, temperature=1.0, n=2, seed=3)
    again = client.completions.create(model="base", prompt="hello", max_tokens=5, temperature=1.0, n=2, seed=3)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]  # seeded
    full = client.completions.create(model="red", prompt="Say something 1.", max_tokens=8, temperature=0).choices[0].text
    word = full.strip().split()[1] if len(full.strip().split()) > 1 else full.strip()
    cut = client.completions.create(model="red", prompt="Say something 1.", max_tokens=8, temperature=0, stop=[word])
    assert word not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64(served, tiny_bert):
    _, _, client = served
    floats = client.embeddings.create(model=str(tiny_bert), input=["a cat", "a dog"])
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 32
    raw = client.embeddings.with_raw_response.create(model=str(tiny_bert), input="a cat", encoding_format="base64")
    encoded = json.loads(raw.text)["data"][0]["embedding"]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), floats.data[0].embedding, atol=1e-6)
    assert abs(np.linalg.norm(floats.data[0].embedding) - 1) < 1e-4


def test_errors_use_openai_envelope(served):
    _, test_client, client = served
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "nope" in missing.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="base", prompt="hi", max_tokens=100_000)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="base", messages=[])
    body = test_client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_api_key_and_the_concurrency_limit(tiny_llama, monkeypatch):
    """A request larger than --max-concurrent runs in pieces of that size; 429 only while others hold the room."""
    from adaptlab.serve import load_registry
    from adaptlab.serve.decoding import BatchedDecoder

    sizes, started, release = [], threading.Event(), threading.Event()
    decode = BatchedDecoder.decode

    def observed(self, batch, emit):
        sizes.append(len(batch))
        started.set()
        assert release.wait(60)
        return decode(self, batch, emit)

    monkeypatch.setattr(BatchedDecoder, "decode", observed)
    registry = load_registry({}, [str(tiny_llama)], None, "cpu")
    model = str(tiny_llama)
    test_client, client = make_client(registry, api_key="s3cret", max_concurrent=2)
    with test_client:
        assert client.models.list().data
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="guess", http_client=test_client, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert test_client.get("/health").status_code == 200  # health needs no key
        release.set()
        many = client.completions.create(model=model, prompt=["a", "b", "c"], max_tokens=2, n=3)
        assert [c.index for c in many.choices] == list(range(9)) and max(sizes) == 2  # 9 generations, 2 at a time
        assert len(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=2, n=5).choices) == 5
        release.clear()
        started.clear()
        first = []
        holder = threading.Thread(target=lambda: first.append(client.completions.create(model=model, prompt="hi", max_tokens=2)))
        holder.start()
        try:
            assert started.wait(60)  # one generation in flight, stopped inside the model
            with pytest.raises(openai.RateLimitError) as limited:
                client.completions.create(model=model, prompt=["x", "y"], max_tokens=2)
            assert "1 of 2 generations running, this request needs 2" in limited.value.message
            assert "--max-concurrent" in limited.value.message
        finally:
            release.set()
            holder.join(60)
        assert first[0].choices[0].finish_reason in ("stop", "length")
        assert len(client.completions.create(model=model, prompt=["x", "y"], max_tokens=2).choices) == 2  # room again


def test_a_request_larger_than_the_default_limit_is_served(served):
    """100 prompts under the default --max-concurrent 64: answered (64 at a time), every choice its own prompt's."""
    _, _, client = served
    prompts = [f"Say something {i}." for i in range(100)]
    reply = client.completions.create(model="base", prompt=prompts, max_tokens=2, temperature=0)
    assert [c.index for c in reply.choices] == list(range(100))
    for i in (0, 63, 64, 99):
        alone = client.completions.create(model="base", prompt=prompts[i], max_tokens=2, temperature=0)
        assert reply.choices[i].text == alone.choices[0].text
    stream = client.completions.create(model="base", prompt=prompts, max_tokens=2, temperature=0, stream=True)
    assert sorted(c.choices[0].index for c in stream if c.choices[0].finish_reason) == list(range(100))


CHAT, HI = {"model": "base", "max_tokens": 2}, {"role": "user", "content": "hi"}


@pytest.mark.parametrize("route, body, needle", [
    ("completions", {"prompt": ""}, "prompt is empty or only whitespace"),
    ("completions", {"prompt": " \n\t"}, "prompt is empty or only whitespace"),
    ("completions", {"prompt": "", "stream": True}, "prompt is empty"),
    ("completions", {"prompt": ["fine", ""]}, "prompt[1] is empty"),
    ("completions", {"prompt": []}, "prompt must hold 1 to 256 strings"),
    ("chat/completions", {"messages": []}, "messages is empty"),
    ("chat/completions", {"messages": [{"role": "user", "content": ""}]}, "messages[0] (user) has no text"),
    ("chat/completions", {"messages": [{"role": "user", "content": "  \n "}]}, "messages[0] (user) has no text"),
    ("chat/completions", {"messages": [{"role": "user"}]}, "messages[0] (user) has no text"),
    ("chat/completions", {"messages": [{"role": "system", "content": ""}, HI]}, "messages[0] (system) has no text"),
    ("chat/completions", {"messages": [HI, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[1] (user) has no text"),
    ("chat/completions", {"messages": [{"role": "user", "content": ""}], "stream": True}, "has no text"),
])
def test_empty_prompts_and_messages_are_refused_with_400(served, route, body, needle):
    _, test_client, _ = served
    response = test_client.post(f"/v1/{route}", json={**CHAT, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert needle in error["message"]


def test_an_assistant_turn_without_content_is_still_accepted(served):
    """Assistant turns that only called tools carry no content: they are not refused as empty. A text part that is
    not a string is a 422 (it was a 500)."""
    _, test_client, _ = served
    messages = [HI, {"role": "assistant", "content": None}, {"role": "user", "content": [{"type": "text", "text": "again"}]}]
    response = test_client.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant", response.text
    numbered = test_client.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})
    assert numbered.status_code == 422 and "messages.0.content" in numbered.json()["error"]["message"], numbered.text


@pytest.mark.parametrize("route, field, value, status", [
    ("completions", "max_tokens", 0, 400), ("completions", "max_tokens", -1, 422), ("completions", "max_tokens", 2**70, 400),
    ("chat/completions", "max_tokens", -5, 422), ("chat/completions", "max_tokens", 2**70, 400),
    ("chat/completions", "max_completion_tokens", 0, 422), ("chat/completions", "max_completion_tokens", 2**70, 400),
    ("completions", "n", 0, 422), ("completions", "n", -1, 422), ("completions", "n", 17, 422), ("chat/completions", "n", 2**70, 422),
    ("chat/completions", "top_logprobs", -1, 422), ("chat/completions", "top_logprobs", 21, 400),
    ("chat/completions", "top_logprobs", 2**70, 400),
    ("completions", "logprobs", -1, 422), ("completions", "logprobs", 6, 400), ("completions", "logprobs", 2**70, 400),
    ("completions", "best_of", 0, 422), ("completions", "best_of", 2**70, 422),
    ("completions", "seed", -1, 422), ("chat/completions", "seed", 2**70, 422),
    ("chat/completions", "presence_penalty", 3, 422), ("completions", "frequency_penalty", -2**70, 422),
    ("completions", "temperature", 2**70, 422), ("chat/completions", "top_p", 0, 422),
])
def test_out_of_range_numbers_are_refused(served, route, field, value, status):
    _, test_client, _ = served
    body = {"model": "base", field: value, **({"prompt": "hi"} if route == "completions" else {"messages": [HI]})}
    response = test_client.post(f"/v1/{route}", json=body)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert (field in message) if status == 422 else ("at most 1024" in message or field in message)


def test_batched_decoder_matches_transformers_generate(tiny_llama):
    """One request through the batched loop gives exactly what ``model.generate`` gives."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from adaptlab.generation import Generator
    from adaptlab.serve.decoding import BatchedDecoder, Finished, Request

    generator = Generator(str(tiny_llama), "cpu")
    ids = generator.tokenizer("The quick brown fox", add_special_tokens=False)["input_ids"]
    decoder = BatchedDecoder(generator.model, generator.tokenizer, ThreadPoolExecutor(1))

    async def collect():
        return [item async for item in decoder.stream(Request(ids, 8))]

    items = asyncio.run(collect())
    assert isinstance(items[-1], Finished) and items[-1].completion_tokens <= 8
    with torch.no_grad():
        expected = generator.model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                            pad_token_id=generator.tokenizer.pad_token_id)[0, len(ids):]
    text = generator.tokenizer.decode([t for t in expected.tolist() if t != generator.tokenizer.eos_token_id],
                                      skip_special_tokens=True)
    assert "".join(i for i in items if isinstance(i, str)) == text


@pytest.mark.slow
def test_smollm2_and_its_sft_adapter_through_the_openai_client(tmp_path):
    import adaptlab
    from adaptlab.serve import load_registry

    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=48, val_size=8, test_size=4)
    adaptlab.train_sft(splits, tmp_path / "sft", method="lora", epochs=1, batch_size=8, lr=1e-3, forgetting=False,
                       max_new_tokens=2, generate_limit=1, progress=False)
    registry = load_registry({}, ["smollm2-135m", f"wiki={tmp_path / 'sft'}"], None, "cpu")
    assert registry.generators["wiki"].model is registry.generators["smollm2-135m"].model  # one copy of SmolLM2
    test_client, client = make_client(registry)
    with test_client:
        messages = [{"role": "user", "content": splits.test.records[0][-2]["content"]}]
        tuned = client.chat.completions.create(model="wiki", messages=messages, max_tokens=24, temperature=0)
        base = client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=24, temperature=0)
        assert tuned.choices[0].finish_reason in ("stop", "length") and tuned.choices[0].message.content.strip()
        assert tuned.usage.completion_tokens <= 24 and base.usage.prompt_tokens == tuned.usage.prompt_tokens
        assert tuned.choices[0].message.content != base.choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="wiki", messages=messages, max_tokens=24, temperature=0, stream=True) if c.choices)
        assert streamed == tuned.choices[0].message.content


def test_prompt_learning_adapters_are_served_one_request_at_a_time(learnable_llama, tmp_path):
    """Prefix tuning's virtual tokens only PEFT's own generate adds: such a generator is served unbatched."""
    import adaptlab
    from adaptlab.serve import load_registry

    rows = [{"prompt": f"Say something {i}.", "completion": "ok"} for i in range(24)]
    splits = adaptlab.load_generation_splits(write_jsonl(tmp_path / "ok.jsonl", rows))
    adaptlab.train_sft(splits, tmp_path / "prefix", model=str(learnable_llama), method="prefix-tuning", epochs=1,
                       forgetting=False, max_new_tokens=2, generate_limit=2, progress=False)
    registry = load_registry({}, [f"prefix={tmp_path / 'prefix'}"], None, "cpu")
    test_client, client = make_client(registry)
    with test_client:
        reply = client.completions.create(model="prefix", prompt="Say something 1.", max_tokens=4, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 4
        assert test_client.get("/health").json()["generation_batches"]["prefix"]["requests"] == 1


def test_adapters_load_and_unload_at_run_time_without_losing_requests(learnable_llama, tiny_llama, adapters, tmp_path,
                                                                       monkeypatch):
    """vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter on a base served plain: the adapter answers as
    when served from the start, /v1/models follows at once, and requests already running when their adapter is
    unloaded all finish (the weights go after them)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from adaptlab.serve import load_registry
    from adaptlab.serve.decoding import BatchedDecoder, requests_using

    registry = load_registry({}, [f"base={learnable_llama}"], None, "cpu")
    test_client, client = make_client(registry, api_key="k")
    auth = {"Authorization": "Bearer k"}
    post = lambda route, body: test_client.post(f"/v1/{route}_lora_adapter", json=body, headers=auth)
    ask = lambda model: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say something 5."}],
                                                       max_tokens=4, temperature=0).choices[0].message.content
    with test_client:
        base = ask("base")
        loaded = post("load", {"lora_name": "red", "lora_path": str(adapters["red"])})
        assert loaded.status_code == 200 and loaded.text == "Success: LoRA adapter 'red' added successfully."
        listed = {m.id: m.model_extra for m in client.models.list().data}
        assert listed["red"]["parent"] == "base"
        assert ask("red").split()[0] == "red" and ask("base") == base  # the base wrapped, its answers unchanged
        assert post("load", {"lora_name": "blue", "lora_path": str(adapters["blue"])}).status_code == 200
        assert ask("blue").split()[0] == "blue" and ask("red").split()[0] == "red"
        assert registry.generators["blue"].model is registry.generators["base"].model  # one copy of the base

        # refusals, one line each
        duplicate = post("load", {"lora_name": "red", "lora_path": str(adapters["red"])})
        assert duplicate.status_code == 400 and "has already been loaded" in duplicate.json()["error"]["message"]
        other = tmp_path / "other-base"
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=2, target_modules="all-linear")).save_pretrained(other)
        refused = post("load", {"lora_name": "other", "lora_path": str(other)}).json()["error"]["message"]
        assert f"trained on '{tiny_llama}'" in refused and "'base'" in refused and "\n" not in refused
        assert "no LoRA adapter" in post("load", {"lora_name": "x", "lora_path": str(tmp_path / "none")}).json()["error"]["message"]
        assert post("unload", {"lora_name": "base"}).status_code == 400
        assert post("unload", {"lora_name": "green"}).status_code == 404
        assert test_client.post("/v1/unload_lora_adapter", json={"lora_name": "red"}).status_code == 401  # no key

        # unload while requests for it are inside the model: they all finish, the unload waits for them
        started, release, decode = threading.Event(), threading.Event(), BatchedDecoder.decode

        def held(self, batch, emit):
            started.set()
            assert release.wait(60)
            return decode(self, batch, emit)

        monkeypatch.setattr(BatchedDecoder, "decode", held)
        replies, unloaded = [], []
        running = [threading.Thread(target=lambda: replies.append(ask("red"))) for _ in range(4)]
        running[0].start()
        assert started.wait(60)  # one request inside the model, the next three queued behind it
        for thread in running[1:]:
            thread.start()
        adapter = registry.generators["red"].adapter
        for _ in range(500):
            if requests_using(adapter) == 4:
                break
            threading.Event().wait(0.02)
        assert requests_using(adapter) == 4
        unloading = threading.Thread(target=lambda: unloaded.append(post("unload", {"lora_name": "red"})))
        unloading.start()
        for _ in range(100):  # the name leaves the list at once, before the weights go
            if "red" not in {m.id for m in client.models.list().data}:
                break
            threading.Event().wait(0.02)
        assert "red" not in {m.id for m in client.models.list().data} and not unloaded
        with pytest.raises(openai.NotFoundError):
            ask("red")
        release.set()
        for thread in running + [unloading]:
            thread.join(60)
        assert len(replies) == 4 and all(r.split()[0] == "red" for r in replies)  # none lost
        assert unloaded[0].text == "Success: LoRA adapter 'red' removed successfully."
        assert ask("blue").split()[0] == "blue" and ask("base") == base
        assert post("unload", {"lora_name": "blue"}).status_code == 200  # the last adapter: kept until the next one
        assert post("load", {"lora_name": "red", "lora_path": str(adapters["red"])}).status_code == 200
        assert ask("red").split()[0] == "red" and ask("base") == base
        assert list(registry.generators["base"].model.peft_config) == [registry.generators["red"].adapter]


def test_adapters_are_not_loaded_at_run_time_without_an_api_key(learnable_llama, adapters):
    from adaptlab.serve import load_registry

    test_client, _ = make_client(load_registry({}, [f"base={learnable_llama}"], None, "cpu"))
    with test_client:
        refused = test_client.post("/v1/load_lora_adapter", json={"lora_name": "red", "lora_path": str(adapters["red"])})
    assert refused.status_code == 403 and "--api-key" in refused.json()["error"]["message"]
