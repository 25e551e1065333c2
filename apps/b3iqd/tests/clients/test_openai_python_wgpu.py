"""The official `openai` Python package against b3iqd serving on the wgpu backend
(`b3iqd serve --backend wgpu`): chat, streaming, and a receipt that names the backend."""
import json
import urllib.request

import pytest
from openai import OpenAI


@pytest.fixture(scope="module")
def client(wgpu_node):
    return OpenAI(base_url=wgpu_node["base"] + "/v1", api_key=wgpu_node["key"], max_retries=0, timeout=300)


def _get(node, path):
    req = urllib.request.Request(node["base"] + path, headers={"cookie": node["cookie"]})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_chat_on_wgpu_has_a_receipt_naming_the_backend(client, wgpu_node):
    model = client.models.list().data[0].id
    assert model == "smollm2-135m-instruct-q4_1"
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}],
                                       max_tokens=8, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 1 <= r.usage.completion_tokens <= 8
    receipt_id = r.model_extra["b3iq_receipt_id"]
    rc = _get(wgpu_node, f"/api/receipts/{receipt_id}")
    assert rc["valid"] is True
    assert rc["backend"] == "wgpu", rc
    assert rc["completion_tokens"] == r.usage.completion_tokens


def test_streaming_chat_on_wgpu(client):
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Count to three"}],
                                            max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text
    assert finish in ("stop", "length")
    assert usage is not None and 1 <= usage.completion_tokens <= 10
    # Greedy decoding is deterministic: the same request streams the same text.
    again = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Count to three"}],
                                           max_tokens=10, temperature=0)
    assert again.choices[0].message.content == text
