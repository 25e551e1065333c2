"""Start the real b3iqd on a free loopback port with the default model, claim it, create a key."""
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest

PASSWORD = "correct horse battery staple"


def _bin():
    b = os.environ.get("B3IQD_BIN")
    assert b and os.path.isfile(b), "B3IQD_BIN must point at the built b3iqd (apps/b3iqd/ci.sh sets it)"
    return b


def _model():
    m = os.environ.get("B3IQ_TEST_MODEL")
    assert m and os.path.isfile(m), "B3IQ_TEST_MODEL must point at the default model (scripts/fetch-model)"
    return m


def _post(url, body, headers=None, context=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=60, context=context) as r:
        return r.status, dict(r.headers), json.loads(r.read() or b"null")


def _start(extra_args, tls_cert=None):
    """Start b3iqd with `extra_args`, claim it, create an inference and a metrics key. With
    `tls_cert` (a path under the new home), requests trust that certificate."""
    home = tempfile.mkdtemp(prefix="b3iqd-py-")
    proc = subprocess.Popen([_bin(), "serve", "--listen", "127.0.0.1:0", "--model", _model(), *extra_args],
                            env={**os.environ, "B3IQ_HOME": home}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    base, token, fingerprint = None, None, None
    deadline = time.time() + 180
    while time.time() < deadline and (base is None or token is None):
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on (https?://\S+)", line)
        if m:
            base = m.group(1)
        m = re.search(r"SHA-256 fingerprint (\S+)", line)
        if m:
            fingerprint = m.group(1)
        # stdout is a pipe, not a terminal: the daemon names the token file instead of
        # printing the secret.
        if "not claimed yet" in line:
            with open(os.path.join(home, "setup-token")) as f:
                token = f.read().strip()
    assert base and token, "b3iqd did not start"
    cert = os.path.join(home, tls_cert) if tls_cert else None
    context = ssl.create_default_context(cafile=cert) if cert else None
    _, headers, _ = _post(base + "/api/setup/claim", {"setup_token": token, "username": "owner", "password": PASSWORD},
                          context=context)
    cookie = headers["set-cookie"].split(";")[0]
    _, _, key = _post(base + "/api/keys", {"name": "pytest", "scopes": ["inference"]}, {"cookie": cookie}, context)
    _, _, mkey = _post(base + "/api/keys", {"name": "pytest-metrics", "scopes": ["metrics"]}, {"cookie": cookie}, context)
    return proc, {"base": base, "key": key["secret"], "metrics_key": mkey["secret"], "cookie": cookie, "home": home,
                  "cert": cert, "fingerprint": fingerprint}


def _stop(proc, home):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def node():
    proc, n = _start([])
    yield n
    _stop(proc, n["home"])


@pytest.fixture(scope="session")
def tls_node():
    """A node serving HTTPS with its self-signed certificate (b3iqd serve --tls self-signed)."""
    proc, n = _start(["--tls", "self-signed"], tls_cert=os.path.join("tls", "self-signed.crt.pem"))
    yield n
    _stop(proc, n["home"])


@pytest.fixture(scope="session")
def wgpu_node():
    """A node serving the default model on the wgpu backend (b3iqd serve --backend wgpu; Mesa's
    lavapipe in CI)."""
    proc, n = _start(["--backend", "wgpu"])
    yield n
    _stop(proc, n["home"])
