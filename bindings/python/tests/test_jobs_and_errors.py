"""Job checks, the exception hierarchy, key files and fork safety."""

import os

import pytest

import b3iq
from conftest import load_vectors


def _job_case(name="install_model_profile"):
    return next(c for c in load_vectors("job")["cases"] if c["name"] == name)


def _open(signed, keys, now_ms, seen, issuer="control_plane", audience="node"):
    roots = b3iq.TrustRoots([keys[issuer]["key"].public_key])
    return signed.open(roots, keys[audience]["key"].node_id, now_ms, seen)


def test_job_opens_once_then_is_refused_as_replay(keys):
    case = _job_case()
    signed = b3iq.SignedJob.decode(bytes.fromhex(case["encoded_hex"]))
    seen = b3iq.SeenSet()
    now = case["body"]["issued_at_ms"] + 1000
    verified = _open(signed, keys, now, seen)
    assert verified["job"] == case["body"]
    assert verified["job_hash"] == case["object_hash_hex"]
    with pytest.raises(b3iq.B3iqReplayError) as err:
        _open(signed, keys, now, seen)
    assert err.value.code == "replayed"
    assert isinstance(err.value, b3iq.B3iqAuthError)


def test_job_checks_trust_audience_and_time(keys):
    case = _job_case()
    signed = b3iq.SignedJob.decode(bytes.fromhex(case["encoded_hex"]))
    body = case["body"]
    with pytest.raises(b3iq.B3iqAuthError) as err:
        _open(signed, keys, body["issued_at_ms"], b3iq.SeenSet(), issuer="ones")
    assert err.value.code == "untrusted_issuer"
    with pytest.raises(b3iq.B3iqAuthError) as err:
        _open(signed, keys, body["issued_at_ms"], b3iq.SeenSet(), audience="ones")
    assert err.value.code == "wrong_audience"
    with pytest.raises(b3iq.B3iqExpiredError) as err:
        _open(signed, keys, body["expires_at_ms"] + 3_600_000, b3iq.SeenSet())
    assert err.value.code == "expired"
    with pytest.raises(b3iq.B3iqExpiredError) as err:
        _open(signed, keys, body["issued_at_ms"] - 3_600_000, b3iq.SeenSet())
    assert err.value.code == "not_yet_valid"
    # a refused job was not recorded: it still opens afterwards
    seen = b3iq.SeenSet()
    with pytest.raises(b3iq.B3iqExpiredError):
        _open(signed, keys, body["expires_at_ms"] + 3_600_000, seen)
    _open(signed, keys, body["issued_at_ms"], seen)


def test_job_policy_by_mode():
    kind = {"type": "restart_runtime"}
    assert b3iq.decide_job(kind, "local")["verdict"] == "refuse"
    assert b3iq.decide_job(kind, "managed")["verdict"] == "run"
    assert b3iq.decide_job(kind, "managed", auto_approve_up_to=None)["verdict"] == "needs_owner_approval"
    change = {"type": "change_mode", "mode": "network"}
    decision = b3iq.decide_job(change, "managed", auto_approve_up_to="medium")
    assert decision["verdict"] == "needs_owner_approval" and decision["risk"] == "high"
    with pytest.raises(b3iq.B3iqValueError):
        b3iq.decide_job({"type": "run_shell", "command": "rm -rf /"}, "managed")
    with pytest.raises(ValueError):
        b3iq.decide_job(kind, "offline")


def test_signing_a_job_with_another_key_is_refused(keys):
    job = b3iq.Job.from_dict(_job_case()["body"])
    with pytest.raises(b3iq.B3iqError):
        job.sign(keys["ones"]["key"])


def test_bad_input_raises_value_errors_with_causes_kept():
    with pytest.raises(ValueError):
        b3iq.NodePublicKey.from_bytes(b"short")
    with pytest.raises(ValueError):
        b3iq.NodeKey.from_seed(b"\x00" * 31)
    with pytest.raises(b3iq.B3iqValueError) as err:
        b3iq.Receipt.from_dict({"node_id": "b3n_x"})
    assert "receipt" in str(err.value)
    with pytest.raises(b3iq.B3iqValueError):
        b3iq.PayoutTree([{"index": 1, "account": "0x00", "amount": "1"}])


def test_key_files_load_and_missing_files_are_os_errors(tmp_path, keys):
    path = tmp_path / "identity.key"
    path.write_bytes(keys["node"]["key"].to_key_file())
    assert b3iq.NodeKey.load(str(path)).node_id == keys["node"]["key"].node_id
    missing = tmp_path / "nope.key"
    with pytest.raises(OSError) as err:
        b3iq.NodeKey.load(str(missing))
    assert isinstance(err.value, b3iq.B3iqIOError)
    assert str(missing) in str(err.value)
    assert err.value.__cause__ is not None
    path.write_text("garbage\n")
    with pytest.raises(b3iq.B3iqValueError) as err:
        b3iq.NodeKey.load(str(path))
    assert err.value.code == "invalid_key_file"


def test_secrets_stay_out_of_reprs(keys):
    key = keys["node"]["key"]
    assert keys["node"]["secret_seed_hex"] not in repr(key)
    cred = b3iq.Credential.generate("local")
    assert cred.expose_secret() not in repr(cred)
    assert b3iq.Credential.parse(cred.expose_secret(), kind="local").kind == "local"
    with pytest.raises(b3iq.B3iqValueError) as err:
        b3iq.Credential.parse(cred.expose_secret(), kind="support")
    assert err.value.code == "wrong_credential_kind"


def test_generated_keys_differ_and_sign():
    a, b = b3iq.NodeKey.generate(), b3iq.NodeKey.generate()
    assert a.node_id != b.node_id
    assert a.public_key.verify(b"m", a.sign(b"m"))
    assert not b.public_key.verify(b"m", a.sign(b"m"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() exists only on POSIX")
def test_runtime_is_rebuilt_after_fork():
    parent_pid = b3iq._b3iq._runtime_pid()
    assert parent_pid == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the runtime must be rebuilt for this pid, and work
        try:
            child = b3iq._b3iq._runtime_pid()
            ok = child == os.getpid() and child != parent_pid
            os.write(write, b"ok" if ok else f"bad {child}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"ok"
    assert status == 0
    assert b3iq._b3iq._runtime_pid() == parent_pid


# The one category -> class table (docs/bindings.md), with the builtin each class also derives.
CATEGORY_CLASSES = {
    "invalid_input": (b3iq.B3iqValueError, ValueError),
    "unauthenticated": (b3iq.B3iqAuthError, b3iq.B3iqError),
    "expired": (b3iq.B3iqExpiredError, b3iq.B3iqAuthError),
    "replayed": (b3iq.B3iqReplayError, b3iq.B3iqAuthError),
    "policy_denied": (b3iq.B3iqPolicyError, b3iq.B3iqError),
    "state": (b3iq.B3iqStateError, RuntimeError),
    "io": (b3iq.B3iqIOError, OSError),
    "runtime": (b3iq.B3iqRuntimeError, RuntimeError),
    "internal": (b3iq.B3iqError, Exception),
}


def test_every_error_category_raises_its_class_with_code_and_cause():
    # Every category the core defines, in its order: a new one fails here until it is mapped.
    assert b3iq._b3iq._error_categories() == list(CATEGORY_CLASSES)
    for category, (cls, builtin) in CATEGORY_CLASSES.items():
        with pytest.raises(b3iq.B3iqError) as err:
            b3iq._b3iq._error_for_category(category)
        assert type(err.value) is cls, category
        assert isinstance(err.value, builtin), category
        assert err.value.code == "error_probe", category
        assert category in str(err.value)
        assert isinstance(err.value.__cause__, RuntimeError), category
        assert str(err.value.__cause__) == "the probe's cause", category
    with pytest.raises(b3iq.B3iqValueError) as err:
        b3iq._b3iq._error_for_category("nope")
    assert err.value.code == "invalid_input"
    assert "invalid_input" in str(err.value) and "internal" in str(err.value)
