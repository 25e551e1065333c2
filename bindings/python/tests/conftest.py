"""Shared fixtures: the golden vectors in testdata/vectors/ and the default model path."""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(os.environ.get("B3IQ_REPO") or pathlib.Path(__file__).resolve().parents[3])
VECTORS = REPO / "testdata" / "vectors"


def load_vectors(name: str) -> dict:
    path = VECTORS / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"golden vector file {path} is missing; run from a full B3IQ checkout or set B3IQ_REPO")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def keys() -> dict:
    """Key vectors by name, each with a `NodeKey` under "key"."""
    import b3iq

    out = {}
    for k in load_vectors("keys")["keys"]:
        out[k["name"]] = dict(k, key=b3iq.NodeKey.from_seed(bytes.fromhex(k["secret_seed_hex"])))
    return out


def model_path() -> str:
    """The default model: $B3IQ_TEST_MODEL, else scripts/fetch-model. Missing is a failure."""
    env = os.environ.get("B3IQ_TEST_MODEL")
    if env:
        if not os.path.isfile(env):
            pytest.fail(f"B3IQ_TEST_MODEL={env} does not exist; run scripts/fetch-model")
        return env
    try:
        out = subprocess.run([str(REPO / "scripts" / "fetch-model")], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"the default model is missing and scripts/fetch-model failed: {err}")
    return out.stdout.strip()
