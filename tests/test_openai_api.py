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
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="base", messages=[])
    body = test_client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_api_key_and_the_concurrency_limit(tiny_llama):
    from adaptlab.serve import load_registry

    registry = load_registry({}, [str(tiny_llama)], None, "cpu")
    test_client, client = make_client(registry, api_key="s3cret", max_concurrent=1)
    with test_client:
        assert client.models.list().data
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="guess", http_client=test_client, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert test_client.get("/health").status_code == 200  # health needs no key
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model=str(tiny_llama), prompt="hi", max_tokens=2, n=2)


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
