"""LocalNode and Runtime through the uniffi layer (async exports on the binding's tokio
runtime), driven from uniffi's generated Python with asyncio, with the real default model."""

import asyncio
import json

import pytest

import b3iq_uniffi as b
from conftest import model_path

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_local_node_lifecycle(tmp_path):
    async def scenario():
        node = await b.start_local_node(str(tmp_path / "home"), None, None)
        assert node.node_id().startswith("b3n_") and node.port() > 0
        assert "#token=" in (node.setup_url() or "")
        with pytest.raises(b.B3iqError.InvalidInput) as err:
            await node.claim("owner", "short")
        assert err.value.code == "weak_password"
        await node.claim("owner", "correct horse battery staple")
        key = await node.create_key("app", None)
        assert b.Credential.parse(key.secret, "local").kind() == "local"
        assert json.loads(await node.receipts_json()) == []
        await node.shutdown()
        with pytest.raises(b.B3iqError.State):
            await node.create_key("late", None)

    asyncio.run(scenario())


def test_runtime_streams_and_cancels():
    async def scenario():
        rt = await b.create_runtime(2)
        info = json.loads(await rt.load_model(model_path(), None))
        assert info["sha256"] == SHA256
        request = {
            "model": info["id"],
            "prompt": {"kind": "chat", "value": [{"role": "user", "content": "Name three colors."}]},
            "sampling": {"temperature": 0.0},
            "max_tokens": 8,
            "stop": [],
        }
        stream = await rt.generate(json.dumps(request))
        pieces = []
        while (piece := await stream.next()) is not None:
            pieces.append(piece)
        assert pieces
        result = json.loads(await stream.result_json())
        assert 0 < result["usage"]["completion_tokens"] <= 8

        long = dict(request, max_tokens=200, prompt={"kind": "text", "value": "Count from one to one hundred:"})
        stream = await rt.generate(json.dumps(long))
        assert await stream.next()
        await stream.close()
        assert await stream.next() is None
        assert await stream.result_json() is None

        with pytest.raises(b.B3iqError.InvalidInput):
            await rt.generate(json.dumps(dict(request, model="no-such-model")))

    asyncio.run(scenario())
