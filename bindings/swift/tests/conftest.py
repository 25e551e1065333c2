"""Loads uniffi's generated Python module (b3iq_uniffi), built by ci.sh into $B3IQ_UNIFFI_PY."""

import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(os.environ.get("B3IQ_REPO") or pathlib.Path(__file__).resolve().parents[3])
VECTORS = REPO / "testdata" / "vectors"

GENERATED = os.environ.get("B3IQ_UNIFFI_PY")
if not GENERATED or not (pathlib.Path(GENERATED) / "b3iq_uniffi.py").is_file():
    raise RuntimeError(
        "B3IQ_UNIFFI_PY must name a folder holding the generated b3iq_uniffi.py and libb3iq_ffi; "
        "run bindings/swift/ci.sh (it generates them)"
    )
sys.path.insert(0, GENERATED)


def load_vectors(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def keys() -> dict:
    import b3iq_uniffi as b

    return {
        k["name"]: dict(k, key=b.NodeKey.from_seed(bytes.fromhex(k["secret_seed_hex"])))
        for k in load_vectors("keys")["keys"]
    }


def model_path() -> str:
    """The default model: $B3IQ_TEST_MODEL, else scripts/fetch-model. Missing is a failure."""
    import subprocess

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
