"""Structured output and log-probabilities on the OpenAI-compatible routes, driven by the official ``openai``
client: ``response_format`` (json_object, json_schema), ``tools`` + ``tool_choice`` in OpenAI's reply shape,
``logprobs``/``top_logprobs`` on chat, ``logprobs``/``echo``/``max_tokens: 0`` on completions, bad input as one
400, and ``adaptlab generate --json-schema``."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import torch
from fastapi.testclient import TestClient

MODEL = "tiny"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["mood", "score", "tag"],
          "properties": {"mood": {"enum": ["happy", "sad"]}, "score": {"type": "integer", "minimum": 0, "maximum": 99},
                         "tag": {"type": "string", "maxLength": 6}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                                                          "properties": {"city": {"type": "string", "maxLength": 8}}}}},
         {"type": "function", "function": {"name": "add", "parameters": {
             "type": "object", "additionalProperties": False, "required": ["a", "b"],
             "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "integer", "minimum": 0, "maximum": 9}}}}}]
HI = [{"role": "user", "content": "Tell me about your day."}]


@pytest.fixture(scope="module")
def served(tiny_llama):
    from adaptlab.serve import ServeOptions, create_app, load_registry

    registry = load_registry({}, [f"{MODEL}={tiny_llama}"], None, "cpu")
    test_client = TestClient(create_app(registry, ServeOptions()))
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=test_client, max_retries=0)
    with test_client:
        yield registry, test_client, client


def test_json_schema_and_json_object_replies_parse_and_validate(served):
    _, _, client = served
    fmt = {"type": "json_schema", "json_schema": {"name": "mood", "schema": SCHEMA, "strict": True}}
    for seed in range(3):  # sampled as well as greedy: the grammar, not luck, makes them valid
        reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=64, temperature=0 if seed == 0 else 1.0,
                                               seed=seed, response_format=fmt)
        assert reply.choices[0].finish_reason == "stop", reply
        jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)
    anything = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=96, temperature=0,
                                              response_format={"type": "json_object"})
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(anything.choices[0].message.content), dict)
    completion = client.completions.create(model=MODEL, prompt="A record:", max_tokens=64, temperature=0,
                                           extra_body={"response_format": fmt})
    jsonschema.validate(json.loads(completion.choices[0].text), SCHEMA)


def test_tools_required_named_and_auto_reply_in_openai_shape(served):
    _, _, client = served
    required = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=64, temperature=0, tools=TOOLS,
                                              tool_choice="required")
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in ("get_weather", "add")
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[[t["function"]["name"] for t in TOOLS].index(call.function.name)]["function"]["parameters"])

    named = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=64, temperature=0, tools=TOOLS,
                                           tool_choice={"type": "function", "function": {"name": "add"}})
    (call,) = named.choices[0].message.tool_calls
    assert named.choices[0].finish_reason == "tool_calls" and call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[1]["function"]["parameters"])

    streamed = list(client.chat.completions.create(model=MODEL, messages=HI, max_tokens=64, temperature=0, tools=TOOLS,
                                                   tool_choice={"type": "function", "function": {"name": "add"}}, stream=True))
    calls = [tc for chunk in streamed if chunk.choices for tc in chunk.choices[0].delta.tool_calls or []]
    assert [c.function.arguments for c in calls] == [named.choices[0].message.tool_calls[0].function.arguments]
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    # "auto" lets the model answer in text; a history that called a tool (its result as a tool turn) is accepted
    history = HI + [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "3"}]
    auto = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0, tools=TOOLS)
    assert auto.choices[0].finish_reason in ("stop", "length", "tool_calls")
    none = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4, temperature=0, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def test_auto_tool_calls_are_parsed_from_the_tagged_text():
    from adaptlab.structured import parse_tool_calls

    text = 'Sure. <tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    assert parse_tool_calls(text) == ("Sure.", [{"name": "add", "arguments": {"a": 1, "b": 2}}])
    assert parse_tool_calls("no call here") == ("no call here", [])


def test_chat_logprobs_in_openai_shape_and_equal_to_the_model(served):
    _, _, client = served
    reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens and all(len(entry.top_logprobs) == 3 for entry in content)
    assert "".join(entry.token for entry in content) == reply.choices[0].message.content
    for entry in content:  # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob) and bytes(entry.bytes).decode() == entry.token
    streamed = [c for c in client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0,
                                                          logprobs=True, stream=True) if c.choices and c.choices[0].logprobs]
    assert [e.logprob for c in streamed for e in c.choices[0].logprobs.content] == pytest.approx([e.logprob for e in content])


def test_echo_with_max_tokens_0_returns_the_prompts_log_probabilities(served):
    """What lm-evaluation-harness's loglikelihood requests read: echo, logprobs, token-id prompts."""
    registry, _, client = served
    generator = registry.generators[MODEL]
    ids = generator.tokenizer("The quick brown fox jumps over the lazy dog", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(generator.model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    expected = expected.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    for prompt in ("The quick brown fox jumps over the lazy dog", ids, [ids, ids[:4]]):
        reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
        first = reply.choices[0]
        assert first.text == "The quick brown fox jumps over the lazy dog" and first.finish_reason == "length"
        assert first.logprobs.token_logprobs[0] is None and first.logprobs.top_logprobs[0] is None
        assert first.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
        assert "".join(first.logprobs.tokens) == first.text and first.logprobs.text_offset[:2] == [0, len(first.logprobs.tokens[0])]
        assert reply.usage.completion_tokens == 0
    # lm-eval's request: echo, one new token, logprobs 1: the prompt's tokens then the new one
    reply = client.completions.create(model=MODEL, prompt=[ids], max_tokens=1, echo=True, logprobs=1, temperature=0)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.token_logprobs) == len(ids) + 1 and logprobs.token_logprobs[-1] == max(logprobs.top_logprobs[-1].values())
    plain = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=0, logprobs=2)
    assert len(plain.choices[0].logprobs.tokens) - plain.usage.completion_tokens in (0, 1)  # + the end token, if it ended
    assert plain.choices[0].logprobs.text_offset[0] == len("Once upon a time")


def test_constrained_and_free_requests_share_a_batch(served):
    """A constrained row does not change its free neighbours: each matches its own single request."""
    import concurrent.futures

    _, test_client, client = served
    fmt = {"type": "json_schema", "json_schema": {"name": "mood", "schema": SCHEMA}}
    prompts = [f"Story number {i}:" for i in range(6)]
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0).choices[0].text for p in prompts]
    before = test_client.get("/health").json()["generation_batches"][MODEL]["batches"]

    def ask(i: int):
        extra = {"response_format": fmt} if i % 2 else {}
        return client.completions.create(model=MODEL, prompt=prompts[i], max_tokens=48 if i % 2 else 12, temperature=0,
                                         extra_body=extra).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ask, range(6)))
    assert [together[i] for i in range(0, 6, 2)] == [alone[i] for i in range(0, 6, 2)]
    for i in range(1, 6, 2):
        jsonschema.validate(json.loads(together[i]), SCHEMA)
    assert test_client.get("/health").json()["generation_batches"][MODEL]["batches"] - before < 6  # batched


@pytest.mark.parametrize("route, body, needle", [
    ("chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "foo"}}}}, "not a valid JSON schema"),
    ("chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema is missing"),
    ("chat/completions", {"response_format": {"type": "yaml"}}, "is not one of text, json_object, json_schema"),
    ("chat/completions", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "names the function 'nope', which is not in tools (get_weather, add)"),
    ("chat/completions", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice 'sometimes' is not one of"),
    ("chat/completions", {"tool_choice": "required"}, "tools is empty"),
    ("chat/completions", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
     "parameters of tool 'f' is not a valid JSON schema"),
    ("chat/completions", {"tools": [{"type": "function"}]}, "tools[0] must be"),
    ("chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs 21; at most 20"),
    ("chat/completions", {"top_logprobs": 2}, "top_logprobs needs logprobs: true"),
    ("completions", {"logprobs": 6}, "logprobs 6; at most 5"),
    ("completions", {"max_tokens": 0}, "max_tokens 0 generates nothing"),
    ("completions", {"echo": True, "stream": True}, "echo is not streamed"),
    ("completions", {"prompt": [1, 2, 10**9]}, "holds the token id 1000000000"),
])
def test_bad_structured_requests_are_one_400(served, route, body, needle):
    _, test_client, _ = served
    base = {"model": MODEL, **({"prompt": "hi"} if route == "completions" else {"messages": HI})}
    response = test_client.post(f"/v1/{route}", json={**base, **body})
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"], response.text


def test_generate_cli_json_schema(cli, tiny_llama, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    code, out, err = cli("generate", "--model", tiny_llama, "--json-schema", schema, "--max-new-tokens", "64", "--no-stream", "Hi")
    assert code == 0, err
    jsonschema.validate(json.loads(out.strip()), SCHEMA)
    code, out, _ = cli("generate", "--model", tiny_llama, "--json-schema", schema, "--max-new-tokens", "64", "Hi")
    jsonschema.validate(json.loads(out.strip()), SCHEMA)
    (tmp_path / "bad.json").write_text('{"type": "object", "properties": {"a": {"type": "nope"}}}')
    code, _, err = cli("generate", "--model", tiny_llama, "--json-schema", tmp_path / "bad.json", "Hi")
    assert code != 0 and "not a valid JSON schema at properties/a/type" in err
    code, _, err = cli("generate", "--model", tiny_llama, "--json-schema", tmp_path / "missing.json", "Hi")
    assert code != 0 and "does not exist" in err


def test_a_reply_that_ends_at_once_still_lists_its_end_token(served):
    """lm-eval reads the last entry of an echoed reply as the generated token: when the model's next token is the end
    token, that entry is it (with "" as its text), or the prompt's last token would be dropped from the score."""
    from adaptlab.serve.decoding import Request, TokenLogprob, _Row

    registry, _, _ = served
    tokenizer = registry.generators[MODEL].tokenizer
    row = _Row(Request([5, 6], 1, logprobs=1, prompt_logprobs=1), tokenizer)
    end = TokenLogprob(tokenizer.eos_token_id, -0.1, ((tokenizer.eos_token_id, -0.1),))
    (finished,) = row.add(tokenizer.eos_token_id, tokenizer.eos_token_id, end)
    assert finished.reason == "stop" and finished.logprobs == [end] and finished.completion_tokens == 0
    from adaptlab.serve.openai_shapes import chat_logprobs as _chat_logprobs, completion_logprobs as _completion_logprobs
    from adaptlab.structured import Grammars

    vocabulary = Grammars.of(tokenizer).token_bytes
    prompt = [TokenLogprob(5, None), TokenLogprob(6, -1.0, ((6, -1.0),))]
    shaped = _completion_logprobs(prompt + finished.logprobs, vocabulary, 0, tokenizer.eos_token_id)
    assert shaped["token_logprobs"] == [None, -1.0, -0.1] and shaped["tokens"][-1] == ""
    assert _chat_logprobs(finished.logprobs, vocabulary, tokenizer.eos_token_id) == []
