"""`client.embeddings.create` of the official `openai` package against a real b3iqd: the default
base64 encoding (what the client asks for unless told otherwise), `encoding_format="float"`,
batches, token-id input, the refusals, and the receipt."""
import base64
import json
import math
import struct
import urllib.request

import openai
import pytest
from openai import OpenAI


@pytest.fixture(scope="module")
def client(node):
    return OpenAI(base_url=node["base"] + "/v1", api_key=node["key"], max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (_norm(a) * _norm(b))


def _max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def test_default_base64_and_float_agree(client, model):
    text = "The cat sat on the mat."
    # No encoding_format: the client sends "base64" and decodes the little-endian f32 bytes.
    r = client.embeddings.create(model=model, input=text)
    assert r.object == "list" and r.model == model
    assert len(r.data) == 1 and r.data[0].object == "embedding" and r.data[0].index == 0
    v = r.data[0].embedding
    assert len(v) == 576  # SmolLM2-135M's hidden size
    assert abs(_norm(v) - 1.0) < 1e-4
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    f = client.embeddings.create(model=model, input=text, encoding_format="float")
    assert _max_diff(v, f.data[0].embedding) < 1e-6
    # On the wire the default answer really is base64 of little-endian f32s.
    raw = client.embeddings.with_raw_response.create(model=model, input=text)
    wire = json.loads(raw.http_response.text)
    b64 = wire["data"][0]["embedding"]
    assert isinstance(b64, str)
    decoded = struct.unpack("<576f", base64.b64decode(b64))
    # The float answer is each f32's shortest decimal form: read back as f32 it is the same number.
    as_f32 = struct.unpack("<576f", struct.pack("<576f", *f.data[0].embedding))
    assert decoded == as_f32
    assert len(wire["b3iq_receipt_id"]) == 64


def test_batch_order_meaning_and_token_ids(client, model):
    texts = ["The cat is sleeping on the sofa.", "A cat naps on the couch.",
             "Quarterly tax returns must be filed before the end of April."]
    r = client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    vs = [d.embedding for d in r.data]
    assert _cos(vs[0], vs[1]) > _cos(vs[0], vs[2])
    for i, t in enumerate(texts):
        alone = client.embeddings.create(model=model, input=t, encoding_format="float").data[0].embedding
        assert _max_diff(alone, vs[i]) < 1e-4, i
    # Token ids (one input, then a batch of them) give the text's vector.
    toks = client.embeddings.create(model=model, input=[1, 504, 2365, 30], encoding_format="float")
    assert toks.usage.prompt_tokens == 4
    both = client.embeddings.create(model=model, input=[[1, 504, 2365, 30], [42, 43]], encoding_format="float")
    assert len(both.data) == 2 and both.usage.prompt_tokens == 6
    assert _max_diff(both.data[0].embedding, toks.data[0].embedding) < 1e-4


def test_dimensions_equal_to_the_model_size_is_accepted(client, model):
    r = client.embeddings.create(model=model, input="x", dimensions=576, user="u-1")
    assert len(r.data[0].embedding) == 576


def test_refusals_name_the_field(client, model):
    cases = [
        (dict(input=""), "input"),
        (dict(input=[]), "input"),
        (dict(input=["a", ""]), "input"),
        (dict(input=["x"] * 2049), "input"),
        (dict(input=[7] * 5000), "input"),  # longer than the context window
        (dict(input=[10 ** 6]), "input"),  # outside the vocabulary
        (dict(input="x", dimensions=64), "dimensions"),
        (dict(input="x", encoding_format="int8"), "encoding_format"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model=model, **kwargs)
        assert e.value.status_code == 400
        assert e.value.body["param"] == param, (kwargs if len(str(kwargs)) < 200 else param, e.value.body)
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="no-such-model", input="x")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=model, input=[7] * 5000)
    assert e.value.body["code"] == "context_length_exceeded"
    bad = OpenAI(base_url=client.base_url, api_key="b3iq_local_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=model, input="x")


def test_embeddings_are_receipted_and_metered(node, client, model):
    def get(path):
        req = urllib.request.Request(node["base"] + path, headers={"cookie": node["cookie"]})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    raw = client.embeddings.with_raw_response.create(model=model, input=["one", "two three"], encoding_format="float")
    answer = json.loads(raw.http_response.text)
    rid = answer["b3iq_receipt_id"]
    receipt = get("/api/receipts/" + rid)
    assert receipt["valid"] is True and receipt["outcome"] == "completed"
    assert receipt["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    assert receipt["completion_tokens"] == 0
    assert receipt["model"] == model
    assert any(r["id"] == rid for r in get("/api/receipts?limit=20")["receipts"])
