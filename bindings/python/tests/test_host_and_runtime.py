"""LocalNode and Runtime with the real default model (llama.cpp), sync and async."""

import asyncio

import pytest

import b3iq
from conftest import model_path


@pytest.fixture(scope="module")
def runtime():
    return b3iq.Runtime.load(model_path(), threads=2)


def test_runtime_streams_and_is_deterministic_when_greedy(runtime):
    model = runtime.models()[0]
    assert model["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    prompt = [{"role": "user", "content": "Name three colors."}]
    with runtime.generate(prompt, max_tokens=12, temperature=0) as stream:
        pieces = list(stream)
    assert len(pieces) >= 2 and all(isinstance(p, str) for p in pieces)
    result = stream.result
    assert result["usage"]["completion_tokens"] == 12 or result["finish_reason"] == "stop"
    again = runtime.generate(prompt, max_tokens=12, temperature=0).text()
    assert again == "".join(pieces)


def test_closing_a_stream_cancels_it(runtime):
    stream = runtime.generate("Count from one to one hundred:", max_tokens=200, temperature=0)
    first = next(stream)
    assert first
    stream.close()
    assert stream.closed
    with pytest.raises(StopIteration):
        next(stream)
    assert stream.result is None  # it did not run to its end


def test_async_generation_matches_sync(runtime):
    prompt = "The capital of France is"
    want = runtime.generate(prompt, max_tokens=8, temperature=0).text()

    async def collect():
        stream = await runtime.agenerate(prompt, max_tokens=8, temperature=0)
        return "".join([piece async for piece in stream])

    assert asyncio.run(collect()) == want


def test_unknown_model_is_a_value_error(runtime):
    with pytest.raises(b3iq.B3iqValueError):
        runtime.generate("hi", model="no-such-model")


def test_local_node_async_lifecycle_and_errors(tmp_path):
    async def scenario():
        async with await b3iq.LocalNode.astart(tmp_path / "home") as node:
            assert node.running and node.port > 0
            assert node.node_id.startswith("b3n_")
            assert node.setup_url and "#token=" in node.setup_url
            with pytest.raises(b3iq.B3iqValueError) as err:
                await node.aclaim("owner", "short")
            assert err.value.code == "weak_password"
            await node.aclaim("owner", "correct horse battery staple")
            with pytest.raises((b3iq.B3iqStateError, b3iq.B3iqAuthError)):
                await node.aclaim("owner", "correct horse battery staple")
            key_id, secret = await node.acreate_key("app")
            assert b3iq.Credential.parse(secret, kind="local").kind == "local"
            assert await node.areceipts() == []
        assert not node.running
        with pytest.raises(b3iq.B3iqStateError):
            node.create_key("late")

    asyncio.run(scenario())
    # the home survives: a restart keeps the identity
    with b3iq.LocalNode.start(tmp_path / "home") as again:
        assert again.setup_url is None
