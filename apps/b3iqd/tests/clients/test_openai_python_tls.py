"""The official `openai` Python package against b3iqd serving HTTPS with its self-signed
certificate: trusted by file, pinned by fingerprint, refused when not trusted."""
import hashlib
import json
import ssl
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI


def _fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def test_streaming_chat_over_tls_with_the_node_certificate(tls_node):
    assert tls_node["base"].startswith("https://")
    client = OpenAI(base_url=tls_node["base"] + "/v1", api_key=tls_node["key"], max_retries=0,
                    http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=tls_node["cert"])))
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "no tokens streamed"
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens >= 1


def test_the_printed_fingerprint_is_the_presented_certificate(tls_node):
    host, port = tls_node["base"].removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    assert _fingerprint(ssl.PEM_cert_to_DER_cert(pem)) == tls_node["fingerprint"]


def test_an_untrusting_client_is_refused_before_any_credential_is_sent(tls_node):
    client = OpenAI(base_url=tls_node["base"] + "/v1", api_key=tls_node["key"], max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


def test_plain_http_on_the_tls_port_says_to_use_https(tls_node):
    plain = tls_node["base"].replace("https://", "http://")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(plain + "/healthz", timeout=30)
    assert e.value.code == 400
    body = json.loads(e.value.read())
    assert body["error"]["code"] == "https_required"
    assert tls_node["base"] in body["error"]["message"]
