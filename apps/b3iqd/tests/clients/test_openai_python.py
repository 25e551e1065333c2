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
