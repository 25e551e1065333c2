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
                                            max_tokens=10, stream=True, stream_options={"include_usage": True})
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
    chunks = list(client.completions.create(model=model, prompt="One two", max_tokens=4, stream=True))
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
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[], max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=0)


# Issue 17: each fault's input, with the right value asserted, through the official client.

def test_context_length_exceeded_is_400(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4096)
    assert e.value.body["code"] == "context_length_exceeded"


def test_stream_chunks_have_null_usage(client, model):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                            stream=True, stream_options={"include_usage": True})
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


def test_answer_changing_fields_are_refused_by_name(client, model):
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    for field, kw in [("tools", {"tools": tools, "tool_choice": "required"}),
                      ("logprobs", {"logprobs": True, "top_logprobs": 2}),
                      ("logit_bias", {"logit_bias": {"1": -100}})]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, messages=msgs, max_tokens=4, **kw)
        assert field in e.value.body["message"], field


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


def test_n_choices(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a fruit."}],
                                       max_tokens=4, n=2, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
