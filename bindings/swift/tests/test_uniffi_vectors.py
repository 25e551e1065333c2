"""The uniffi layer (what the Swift package calls) against the shared golden vectors, through
uniffi's generated Python bindings: the same FFI functions, the same lowering/lifting of bytes,
strings, records, objects and errors that Swift uses."""

import json

import pytest

import b3iq_uniffi as b
from conftest import load_vectors

SIGNED = {
    "receipt": (b.Receipt, b.SignedReceipt),
    "receipt_v2": (b.Receipt, b.SignedReceipt),
    "job": (b.Job, b.SignedJob),
    "manifest": (b.ModelManifest, b.SignedManifest),
}


def test_keys_match_vectors(keys):
    assert len(keys) >= 3
    for v in keys.values():
        key = v["key"]
        assert key.public_key().hex() == v["public_key_hex"]
        assert key.node_id().text() == v["node_id"]
        assert key.node_id().to_bytes().hex() == v["node_id_hex"]
        assert key.node_id().short_code() == v["short_code"]
        assert b.NodeId.parse(v["node_id"]).to_bytes() == key.node_id().to_bytes()
        message = bytes.fromhex(v["raw_message_hex"])
        signature = key.sign(message)
        assert signature.hex() == v["raw_signature_hex"]
        assert key.public_key().verify(message, signature)
        assert not key.public_key().verify(message + b"x", signature)
        assert key.to_key_file().decode() == v["key_file"]
        assert b.NodeKey.from_key_file(v["key_file"].encode()).public_key().hex() == v["public_key_hex"]


def test_invalid_node_ids_are_refused_with_their_code():
    for case in load_vectors("keys")["invalid_node_ids"]:
        with pytest.raises(b.B3iqError.InvalidInput) as err:
            b.NodeId.parse(case["text"])
        assert err.value.code == case["error"], case["name"]


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_signed_objects_match_vectors(name, keys):
    body_cls, signed_cls = SIGNED[name]
    vectors = load_vectors(name)
    assert vectors["cases"]
    for case in vectors["cases"]:
        encoded = bytes.fromhex(case["encoded_hex"])
        signed = signed_cls.decode(encoded)
        assert signed.encode() == encoded
        assert signed.body_bytes().hex() == case["body_hex"]
        assert signed.signing_message().hex() == case["signing_message_hex"]
        assert signed.object_hash().hex() == case["object_hash_hex"]
        assert signed.signature().hex() == case["signature_hex"]
        assert signed.signer().hex() == case["signer_public_key_hex"]
        assert json.loads(signed.to_json()) == case["signed_json"]
        assert signed_cls.from_json(json.dumps(case["signed_json"])).encode() == encoded
        signer = keys[case["signer"]]["key"]
        signed.verify(signer.public_key())
        body = body_cls.from_json(json.dumps(case["body"]))
        assert json.loads(body.to_json()) == case["body"]
        assert body.sign(signer).encode() == encoded


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_signed_negative_cases_fail_with_their_code(name, keys):
    _, signed_cls = SIGNED[name]
    vectors = load_vectors(name)
    signer = keys[vectors["cases"][0]["signer"]]["key"].public_key()
    for case in vectors["negative_cases_of_first"]:
        data = bytes.fromhex(case["encoded_hex"])
        if case["decodes"]:
            signed = signed_cls.decode(data)
            with pytest.raises(b.B3iqError.Auth) as err:
                signed.verify(signer)
        else:
            with pytest.raises(b.B3iqError.InvalidInput) as err:
                signed_cls.decode(data)
        assert err.value.code == case["error"], case["name"]


def test_receipt_ids_summaries_and_commitments(keys):
    cases = load_vectors("receipt")["cases"]
    assert any("commitment_opening" in c for c in cases)
    for case in cases:
        signed = b.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"]))
        assert signed.receipt_id().hex() == case["object_hash_hex"]
        assert signed.verify_self_certified().text() == keys[case["signer"]]["node_id"]
        summary = json.loads(signed.summary_json())
        assert summary["receipt_id"] == case["object_hash_hex"]
        assert "prompt_commitment" not in summary
        body = case["body"]
        assert signed.receipt().total_tokens() == body["prompt_tokens"] + body["completion_tokens"]
        o = case.get("commitment_opening")
        if o is None:
            continue
        salt = bytes.fromhex(o["salt_hex"])
        assert b.commit_prompt(salt, o["prompt_utf8"].encode()).hex() == body["prompt_commitment"]
        assert b.commit_output(salt, o["output_utf8"].encode()).hex() == body["output_commitment"]


def test_v1_receipts_still_verify_and_v2_receipts_say_their_version(keys):
    for name, version in (("receipt", 1), ("receipt_v2", 2)):
        vectors = load_vectors(name)
        assert vectors["version"] == version
        for case in vectors["cases"]:
            signed = b.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"]))
            assert signed.version() == version and signed.receipt().version() == version
            assert json.loads(signed.to_json())["version"] == version
            signed.verify(keys[case["signer"]]["key"].public_key())
            assert signed.receipt_id().hex() == case["object_hash_hex"]


def test_receipt_v2_prices_salts_and_openings():
    cases = load_vectors("receipt_v2")["cases"]
    assert {c["commitment_opening"]["commitment_basis"] for c in cases} == {"token_ids", "utf8_text"}
    salts = []
    for case in cases:
        body, price, o = case["body"], case["price"], case["commitment_opening"]
        schedule = b.PriceSchedule.from_json(json.dumps(price["schedule"]))
        assert json.loads(schedule.to_json()) == price["schedule"]
        assert schedule.price(body["prompt_tokens"], body["completion_tokens"]) == body["price_micro_credits"] == price["price_micro_credits"]
        salt = b.receipt_salt(bytes.fromhex(o["node_salt_hex"]), bytes.fromhex(body["request_id"]))
        assert salt.hex() == o["receipt_salt_hex"]
        receipt = b.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"])).receipt()
        if o["commitment_basis"] == "token_ids":
            p, c = o["prompt_token_ids"], o["completion_token_ids"]
            assert b.commit_prompt_token_ids(salt, p).hex() == body["prompt_commitment"]
            assert b.commit_completion_token_ids(salt, c).hex() == body["output_commitment"]
            assert receipt.opens_token_ids(salt, p, c)
            assert not receipt.opens_token_ids(salt, c, p)
            assert not receipt.opens_text(salt, "", "")
        else:
            p, c = o["prompt_utf8"], o["completion_utf8"]
            assert b.commit_prompt_text(salt, p).hex() == body["prompt_commitment"]
            assert b.commit_completion_text(salt, c).hex() == body["output_commitment"]
            assert receipt.opens_text(salt, p, c)
            assert not receipt.opens_token_ids(salt, [], [])
        salts.append((salt, receipt, o))
    # one receipt's revealed salt opens no other receipt
    for i, (salt, _, _) in enumerate(salts):
        for j, (_, other, o) in enumerate(salts):
            if i == j:
                continue
            if o["commitment_basis"] == "token_ids":
                assert not other.opens_token_ids(salt, o["prompt_token_ids"], o["completion_token_ids"])
            else:
                assert not other.opens_text(salt, o["prompt_utf8"], o["completion_utf8"])
    with pytest.raises(b.B3iqError.InvalidInput):
        b.receipt_salt(b"short", bytes(16))


def test_merkle_trees_match_vectors():
    vectors = load_vectors("merkle")
    assert b.MerkleTree([]).root().hex() == vectors["empty_root"]
    for t in vectors["trees"]:
        leaves = [bytes.fromhex(h) for h in t["leaves_hex"]]
        tree = b.MerkleTree(leaves)
        assert tree.len() == t["leaf_count"]
        assert tree.root().hex() == t["root"]
        assert b.merkle_root(leaves).hex() == t["root"]
        assert [b.merkle_leaf_hash(l).hex() for l in leaves] == t["leaf_hashes"]
        assert b.MerkleTree.from_leaf_hashes([bytes.fromhex(h) for h in t["leaf_hashes"]]).root().hex() == t["root"]
        root = bytes.fromhex(t["root"])
        for p in t["proofs"]:
            proof = tree.prove_json(p["index"])
            assert json.loads(proof) == {"leaf_count": t["leaf_count"], "siblings": p["siblings"]}
            assert b.verify_inclusion(root, leaves[p["index"]], p["index"], proof)
            assert not b.verify_inclusion(root, leaves[p["index"]] + b"\x00", p["index"], proof)
        with pytest.raises(b.B3iqError.InvalidInput) as err:
            tree.prove_json(t["leaf_count"])
        assert err.value.code == "index_out_of_range"


def test_payout_trees_match_vectors():
    for t in load_vectors("payout")["trees"]:
        entries = [{"index": e["index"], "account": e["account"], "amount": e["amount"]} for e in t["entries"]]
        tree = b.PayoutTree(json.dumps(entries))
        assert tree.root().hex() == t["root"]
        root = bytes.fromhex(t["root"])
        for entry, e in zip(entries, t["entries"]):
            assert b.payout_leaf(json.dumps(entry)).hex() == e["leaf"]
            proof = tree.proof(e["index"])
            assert [p.hex() for p in proof] == e["proof"]
            assert b.verify_payout(root, json.dumps(entry), proof)
            cheat = dict(entry, amount=str(int(entry["amount"]) + 1))
            assert not b.verify_payout(root, json.dumps(cheat), proof)


def test_splits_match_vectors():
    vectors = load_vectors("split")
    policies = {
        p["name"]: b.SplitPolicy(
            p["policy"]["host_bps"],
            p["policy"]["publisher_bps"],
            p["policy"]["protocol_bps"],
            p["policy"]["verifier_bps"],
            p["policy"]["no_publisher_to"],
        )
        for p in vectors["policies"]
    }
    for case in vectors["cases"]:
        total = int(case["total"])
        got = policies[case["policy"]].split(total, case["has_publisher"])
        parts = {"host": got.host, "publisher": got.publisher, "protocol": got.protocol, "verifier": got.verifier}
        assert parts == {k: int(case[k]) for k in parts}, case
        assert sum(parts.values()) == total
        if case["policy"] == "default":
            d = b.split(total, case["has_publisher"])
            assert (d.host, d.publisher, d.protocol, d.verifier) == tuple(parts.values())


def test_credentials_match_vectors():
    vectors = load_vectors("credentials")
    for case in vectors["valid"]:
        cred = b.Credential.parse(case["token"], None)
        assert cred.kind() == case["kind"]
        assert cred.hint() == case["hint"]
        assert cred.hash_for_storage().hex() == case["storage_hash_sha256"]
    for case in vectors["invalid"]:
        with pytest.raises(b.B3iqError.InvalidInput) as err:
            b.Credential.parse(case["token"], None)
        assert err.value.code == case["error"], case["name"]


def test_jobs_open_once_and_check_time(keys):
    case = next(c for c in load_vectors("job")["cases"] if c["name"] == "install_model_profile")
    signed = b.SignedJob.decode(bytes.fromhex(case["encoded_hex"]))
    roots = b.TrustRoots([keys["control_plane"]["key"].public_key()], None)
    seen = b.SeenSet()
    audience = keys["node"]["key"].node_id()
    now = case["body"]["issued_at_ms"] + 1000
    verified = json.loads(signed.open_json(roots, audience, now, seen))
    assert verified == {"job": case["body"], "job_hash": case["object_hash_hex"]}
    with pytest.raises(b.B3iqError.Replay) as err:
        signed.open_json(roots, audience, now, seen)
    assert err.value.code == "replayed"
    with pytest.raises(b.B3iqError.Expired) as err:
        signed.open_json(roots, audience, case["body"]["expires_at_ms"] + 3_600_000, b.SeenSet())
    assert err.value.code == "expired"
    decision = json.loads(b.decide_job(json.dumps({"type": "restart_runtime"}), "local", "low"))
    assert decision["verdict"] == "refuse"


def test_missing_key_file_is_an_io_error(tmp_path):
    with pytest.raises(b.B3iqError.Io) as err:
        b.NodeKey.load(str(tmp_path / "nope.key"))
    assert "nope.key" in str(err.value)
