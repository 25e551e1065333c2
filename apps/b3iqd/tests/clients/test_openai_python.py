"""The official `openai` Python package against a real b3iqd."""
import openai
import pytest
from openai import OpenAI


@pytest.fixture(scope="module")
def client(node):
    return OpenAI(base_url=node["base"] + "/v1", api_key=node["key"], max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids, "no model served"
    return ids[0]


def test_models_list(client, model):
    # the default model file is recognised as its catalog profile (name + size, sha256 checked)
    assert model == "smollm2-135m-instruct-q4_1"
    m = client.models.list().data[0]
    assert m.object == "model" and m.owned_by == "b3iq"


def test_chat_non_streaming(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}],
                                       max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_with_usage(client, model):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Count to three"}],
                                            max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            d = chunk.choices[0].delta
            text += d.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= 1


def test_completions(client, model):
    r = client.completions.create(model=model, prompt="The sky is", max_tokens=5)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens >= 1
    chunks = list(client.completions.create(model=model, prompt="One two", max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_deterministic_with_temperature_zero(client, model):
    a = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a color"}], max_tokens=6, temperature=0)
    b = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a color"}], max_tokens=6, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_errors(node, client, model):
    bad = OpenAI(base_url=node["base"] + "/v1", api_key="b3iq_local_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401
    metrics_only = OpenAI(base_url=node["base"] + "/v1", api_key=node["metrics_key"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        metrics_only.models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[], max_tokens=2)
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert e.value.param == "max_tokens"
    # A wrong JSON type names its field, in JSON's words (not the server's Rust types).
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], extra_body={"max_tokens": "ten"})
    assert e.value.param == "max_tokens"
    assert "an integer" in e.value.message and "i64" not in e.value.message


# Issue 17: each fault's input, with the right value asserted, through the official client.

def test_context_length_exceeded_is_400(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4096)
    assert e.value.body["code"] == "context_length_exceeded"
    assert "context_tokens" in e.value.message


def test_stream_chunks_have_null_usage(client, model):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    for c in chunks[:-1]:
        assert "usage" in c.model_fields_set and c.usage is None


def test_response_format_json(client, model):
    import json
    msgs = [{"role": "user", "content": "Give me a colour and its hex code as JSON."}]
    schema = {"type": "object", "properties": {"colour": {"type": "string"}, "hex": {"type": "string"}},
              "required": ["colour", "hex"], "additionalProperties": False}
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=200, temperature=0,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "colour", "strict": True, "schema": schema}})
    assert r.choices[0].finish_reason == "stop"
    v = json.loads(r.choices[0].message.content)
    assert set(v) == {"colour", "hex"} and all(isinstance(x, str) for x in v.values())
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=4, response_format={"type": "yaml"})
    assert "response_format" in e.value.body["message"]


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]


def test_tool_choice_required_gives_a_parsed_call(client, model):
    import json
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    plain = client.chat.completions.create(model=model, messages=msgs, max_tokens=2, temperature=0)
    for choice in ["required", {"type": "function", "function": {"name": "get_weather"}}]:
        r = client.chat.completions.create(model=model, messages=msgs, tools=WEATHER, tool_choice=choice,
                                           max_tokens=100, temperature=0)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        assert c.message.content is None
        call = c.message.tool_calls[0]
        assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments)["city"], str)
        # the tools reach the prompt
        assert r.usage.prompt_tokens > plain.usage.prompt_tokens
    # streamed: the client library assembles the tool-call deltas
    stream = client.chat.completions.create(model=model, messages=msgs, tools=WEATHER, tool_choice="required",
                                            max_tokens=100, temperature=0, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        for d in chunk.choices[0].delta.tool_calls or []:
            cur = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            cur["id"] = d.id or cur["id"]
            if d.function:
                cur["name"] += d.function.name or ""
                cur["arguments"] += d.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    assert isinstance(json.loads(calls[0]["arguments"])["city"], str)


def test_tool_call_history_reaches_the_prompt(client, model):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
    user = {"role": "user", "content": "What is the weather in Paris?"}
    result = {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}
    with_call = client.chat.completions.create(
        model=model, max_tokens=16, temperature=0, tools=WEATHER,
        messages=[user, {"role": "assistant", "content": None, "tool_calls": [call]}, result])
    without = client.chat.completions.create(
        model=model, max_tokens=16, temperature=0, tools=WEATHER,
        messages=[user, {"role": "assistant", "content": ""}, result])
    assert with_call.usage.prompt_tokens > without.usage.prompt_tokens
    assert with_call.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_chat_logprobs(client, model):
    msgs = [{"role": "user", "content": "Name a colour."}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for e in content:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    assert "".join(e.token for e in content) == r.choices[0].message.content
    # streamed: each chunk carries its tokens' entries
    stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0, logprobs=True,
                                            top_logprobs=1, stream=True, stream_options={"include_usage": True})
    entries, usage = 0, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            entries += len(chunk.choices[0].logprobs.content)
        usage = chunk.usage or usage
    assert entries == usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=2, logprobs=True, top_logprobs=21)
    assert "top_logprobs" in e.value.body["message"]


def test_completions_logprobs(client, model):
    r = client.completions.create(model=model, prompt="The sky is", max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) \
        == r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert "".join(lp.tokens) == r.choices[0].text
    chunks = list(client.completions.create(model=model, prompt="The sky is", max_tokens=5, temperature=0,
                                            logprobs=1, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert streamed == lp.tokens


def _token_ids(path):
    """bytes -> token id, from the GGUF's `tokenizer.ggml.tokens` (GPT-2 byte-level BPE strings)."""
    import struct
    with open(path, "rb") as f:
        data = f.read(32 << 20)
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    sizes = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(sizes[t])

    assert data[:4] == b"GGUF"
    pos = 8
    take("Q")
    n_kv = take("Q")
    for _ in range(n_kv):
        key, t = string(), take("I")
        v = value(t)
        if key == "tokenizer.ggml.tokens":
            bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
                + list(range(ord("®"), ord("ÿ") + 1))
            cs, k = bs[:], 0
            for b in range(256):
                if b not in bs:
                    bs.append(b)
                    cs.append(256 + k)
                    k += 1
            u2b = {chr(c): b for b, c in zip(bs, cs)}
            ids = {}
            for i, tok in enumerate(v):
                raw = bytes(u2b[ch] for ch in tok) if all(ch in u2b for ch in tok) else tok.encode()
                ids.setdefault(raw, i)
            return ids
    raise AssertionError("no tokenizer.ggml.tokens in the model")


def test_logit_bias(client, model):
    import os
    ids = _token_ids(os.environ["B3IQ_TEST_MODEL"])
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    kw = dict(model=model, messages=msgs, max_tokens=3, temperature=0, logprobs=True, top_logprobs=4)
    base = client.chat.completions.create(**kw).choices[0].logprobs.content
    greedy = ids[bytes(base[0].bytes)]
    banned = client.chat.completions.create(**kw, logit_bias={str(greedy): -100}).choices[0].logprobs.content
    assert banned[0].bytes != base[0].bytes
    alt = base[0].top_logprobs[3]
    forced = client.chat.completions.create(**kw, logit_bias={str(ids[bytes(alt.bytes)]): 100}).choices[0].logprobs.content
    assert all(e.bytes == alt.bytes for e in forced)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kw, logit_bias={"999999": 1})
    assert "logit_bias" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kw, logit_bias={str(i): 1 for i in range(301)})
    assert "logit_bias" in e.value.body["message"]


def test_models_retrieve(client, model):
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_wrong_method_and_route_get_the_error_object(node):
    import json
    import urllib.error
    import urllib.request
    for method, path, allow in [("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/completions", "POST"),
                                ("DELETE", "/v1/models", "GET")]:
        req = urllib.request.Request(node["base"] + path, method=method, headers={"authorization": "Bearer " + node["key"]})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 405 and allow in e.value.headers["allow"]
        assert json.loads(e.value.read())["error"]["code"] == "method_not_allowed"
    req = urllib.request.Request(node["base"] + "/v1/chat/completions", method="OPTIONS",
                                 headers={"origin": "http://localhost:3000", "access-control-request-method": "POST",
                                          "access-control-request-headers": "authorization,content-type"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204 and r.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_responses_api(client, model):
    r = client.responses.create(model=model, input="Say hello.", max_output_tokens=16)
    assert r.status in ("completed", "incomplete")
    assert r.output_text
    assert 1 <= r.usage.output_tokens <= 16
    events = list(client.responses.create(model=model, input=[{"role": "user", "content": "Say hello."}],
                                          instructions="Be brief.", max_output_tokens=8, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and events[-1].response.output_text == deltas


def test_responses_function_call(client, model):
    import json
    tools = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = client.responses.create(model=model, input="What is the weather in Paris?", tools=tools, tool_choice="required",
                                temperature=0, max_output_tokens=100)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    # the call and its output sent back as input items
    r2 = client.responses.create(model=model, tools=tools, max_output_tokens=16, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    assert r2.status in ("completed", "incomplete")
    assert r2.usage.input_tokens > r.usage.input_tokens
    events = list(client.responses.create(model=model, input="What is the weather in Paris?", tools=tools,
                                          tool_choice="required", temperature=0, max_output_tokens=100, stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and isinstance(json.loads(done[0].arguments)["city"], str)
    assert events[-1].type == "response.completed"


def test_n_choices(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a fruit."}],
                                       max_tokens=4, n=2, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)


def _metric(node, name):
    import urllib.request
    req = urllib.request.Request(node["base"] + "/metrics", headers={"authorization": "Bearer " + node["metrics_key"]})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_a_chat_history_is_read_from_the_prompt_cache(node, client, model):
    """The third turn of a chat re-sends the first two: the node reads them from its prompt
    cache (config.json `prompt_cache`, on by default), visible in /metrics."""
    messages = []
    for i, q in enumerate(["Name a big city.", "What country is it in?", "Say one thing about that country."]):
        messages.append({"role": "user", "content": q})
        before = _metric(node, "b3iq_prompt_tokens_cached_total")
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
        cached = _metric(node, "b3iq_prompt_tokens_cached_total") - before
        if i == 2:
            # All but the new question (and the template around it) came from the cache.
            assert cached > r.usage.prompt_tokens // 2, (cached, r.usage.prompt_tokens)
            assert cached < r.usage.prompt_tokens
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
    assert _metric(node, "b3iq_kv_cache_full_evictions_total") == 0


def test_usage_reports_cached_prompt_tokens(client, model):
    # The same prompt twice in a row: the second reads only its last token again (the prompt
    # cache keeps the slot's KV cells), and says so in OpenAI's prompt_tokens_details.
    msgs = [{"role": "user", "content": "List the planets of the solar system in order from the sun."}]
    first = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0)
    again = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0)
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    assert again.choices[0].message.content == first.choices[0].message.content
    r = client.responses.create(model=model, input=msgs[0]["content"], max_output_tokens=8, temperature=0)
    r2 = client.responses.create(model=model, input=msgs[0]["content"], max_output_tokens=8, temperature=0)
    assert r2.usage.input_tokens_details.cached_tokens == r2.usage.input_tokens - 1
