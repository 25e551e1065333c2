"""The Python binding against the shared golden vectors (testdata/vectors/*.json).

Every value is compared with the JSON, so this binding, the Node one and the uniffi one must
agree byte for byte with the Rust core.
"""

import pytest

import b3iq
from conftest import load_vectors

SIGNED = {
    "receipt": (b3iq.Receipt, b3iq.SignedReceipt),
    "receipt_v2": (b3iq.Receipt, b3iq.SignedReceipt),
    "job": (b3iq.Job, b3iq.SignedJob),
    "manifest": (b3iq.ModelManifest, b3iq.SignedManifest),
}


def test_keys_match_vectors(keys):
    assert len(keys) >= 3
    for v in keys.values():
        key = v["key"]
        assert key.public_key.hex() == v["public_key_hex"]
        assert str(key.node_id) == v["node_id"]
        assert key.node_id.to_bytes().hex() == v["node_id_hex"]
        assert key.node_id.short_code() == v["short_code"]
        assert b3iq.NodeId.parse(v["node_id"]) == key.node_id
        assert key.public_key.node_id == key.node_id
        message = bytes.fromhex(v["raw_message_hex"])
        signature = key.sign(message)
        assert signature.hex() == v["raw_signature_hex"]
        assert key.public_key.verify(message, signature)
        assert not key.public_key.verify(message + b"x", signature)
        # key files: the text form round-trips, and parses to the same key
        assert key.to_key_file().decode() == v["key_file"]
        assert b3iq.NodeKey.from_key_file(v["key_file"].encode()).public_key == key.public_key
        assert b3iq.NodePublicKey.from_hex(v["public_key_hex"]) == key.public_key


def test_invalid_node_ids_are_refused_with_their_code():
    cases = load_vectors("keys")["invalid_node_ids"]
    assert cases
    for case in cases:
        with pytest.raises(b3iq.B3iqValueError) as err:
            b3iq.NodeId.parse(case["text"])
        assert err.value.code == case["error"], case["name"]
        assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_signed_objects_match_vectors(name, keys):
    body_cls, signed_cls = SIGNED[name]
    vectors = load_vectors(name)
    assert vectors["cases"]
    for case in vectors["cases"]:
        encoded = bytes.fromhex(case["encoded_hex"])
        signed = signed_cls.decode(encoded)
        assert signed.encode() == encoded
        assert signed.body_bytes.hex() == case["body_hex"]
        assert signed.signing_message().hex() == case["signing_message_hex"]
        assert signed.object_hash.hex() == case["object_hash_hex"]
        assert signed.signature.hex() == case["signature_hex"]
        assert signed.signer.hex() == case["signer_public_key_hex"]
        assert signed.to_dict() == case["signed_json"]
        assert signed_cls.from_dict(case["signed_json"]).encode() == encoded
        signer = keys[case["signer"]]["key"]
        assert case["verifies"] is True
        signed.verify(signer.public_key)
        # Signing the JSON body again with the vector key gives the same bytes (Ed25519 is
        # deterministic), so encoding, JSON parsing and signing all agree with the core.
        body = body_cls.from_dict(case["body"])
        assert body.to_dict() == case["body"]
        assert body.sign(signer).encode() == encoded


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_signed_negative_cases_fail_with_their_code(name, keys):
    _, signed_cls = SIGNED[name]
    vectors = load_vectors(name)
    signer = keys[vectors["cases"][0]["signer"]]["key"].public_key
    assert vectors["negative_cases_of_first"]
    for case in vectors["negative_cases_of_first"]:
        data = bytes.fromhex(case["encoded_hex"])
        if case["decodes"]:
            signed = signed_cls.decode(data)
            with pytest.raises(b3iq.B3iqAuthError) as err:
                signed.verify(signer)
        else:
            with pytest.raises(b3iq.B3iqValueError) as err:
                signed_cls.decode(data)
        assert err.value.code == case["error"], case["name"]


def test_receipt_ids_summaries_and_commitments(keys):
    cases = load_vectors("receipt")["cases"]
    assert any("commitment_opening" in c for c in cases)
    for case in cases:
        signed = b3iq.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"]))
        assert signed.receipt_id.hex() == case["object_hash_hex"]
        assert signed.verify_self_certified() == keys[case["signer"]]["key"].node_id
        summary = signed.summary()
        assert summary["receipt_id"] == case["object_hash_hex"]
        assert "prompt_commitment" not in summary and "request_id" not in summary
        body = case["body"]
        assert signed.receipt.total_tokens == body["prompt_tokens"] + body["completion_tokens"]
        opening = case.get("commitment_opening")
        if opening is None:
            continue
        salt = bytes.fromhex(opening["salt_hex"])
        assert b3iq.commit_prompt(salt, opening["prompt_utf8"].encode()).hex() == body["prompt_commitment"]
        assert b3iq.commit_output(salt, opening["output_utf8"].encode()).hex() == body["output_commitment"]
        assert b3iq.commit_output(salt, opening["prompt_utf8"].encode()).hex() != body["prompt_commitment"]


def test_v1_receipts_still_verify_and_v2_receipts_say_their_version(keys):
    for name, version in (("receipt", 1), ("receipt_v2", 2)):
        vectors = load_vectors(name)
        assert vectors["version"] == version
        for case in vectors["cases"]:
            signed = b3iq.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"]))
            assert signed.version == version and signed.receipt.version == version
            assert signed.to_dict()["version"] == version
            signed.verify(keys[case["signer"]]["key"].public_key)
            assert signed.receipt_id.hex() == case["object_hash_hex"]
            assert ("commitment_basis" in case["body"]) == (version == 2)


def test_receipt_v2_prices_salts_and_openings():
    cases = load_vectors("receipt_v2")["cases"]
    assert {c["commitment_opening"]["commitment_basis"] for c in cases} == {"token_ids", "utf8_text"}
    salts = []
    for case in cases:
        body, price, o = case["body"], case["price"], case["commitment_opening"]
        schedule = b3iq.PriceSchedule.from_dict(price["schedule"])
        assert schedule.to_dict() == price["schedule"]
        assert schedule.price(body["prompt_tokens"], body["completion_tokens"]) == body["price_micro_credits"] == price["price_micro_credits"]
        salt = b3iq.receipt_salt(bytes.fromhex(o["node_salt_hex"]), bytes.fromhex(body["request_id"]))
        assert salt.hex() == o["receipt_salt_hex"]
        receipt = b3iq.SignedReceipt.decode(bytes.fromhex(case["encoded_hex"])).receipt
        if o["commitment_basis"] == "token_ids":
            p, c = o["prompt_token_ids"], o["completion_token_ids"]
            assert b3iq.commit_prompt_token_ids(salt, p).hex() == body["prompt_commitment"]
            assert b3iq.commit_completion_token_ids(salt, c).hex() == body["output_commitment"]
            assert receipt.opens_token_ids(salt, p, c)
            assert not receipt.opens_token_ids(salt, c, p)
            assert not receipt.opens_text(salt, "", "")
        else:
            p, c = o["prompt_utf8"], o["completion_utf8"]
            assert b3iq.commit_prompt_text(salt, p).hex() == body["prompt_commitment"]
            assert b3iq.commit_completion_text(salt, c).hex() == body["output_commitment"]
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
    with pytest.raises(b3iq.B3iqValueError):
        b3iq.receipt_salt(b"short", bytes(16))


def test_merkle_trees_match_vectors():
    vectors = load_vectors("merkle")
    assert b3iq.MerkleTree([]).root.hex() == vectors["empty_root"]
    assert vectors["trees"]
    for tree_v in vectors["trees"]:
        leaves = [bytes.fromhex(h) for h in tree_v["leaves_hex"]]
        tree = b3iq.MerkleTree(leaves)
        assert len(tree) == tree_v["leaf_count"]
        assert tree.root.hex() == tree_v["root"]
        assert b3iq.merkle_root(leaves).hex() == tree_v["root"]
        assert [b3iq.merkle_leaf_hash(l).hex() for l in leaves] == tree_v["leaf_hashes"]
        hashed = b3iq.MerkleTree.from_leaf_hashes([bytes.fromhex(h) for h in tree_v["leaf_hashes"]])
        assert hashed.root == tree.root
        root = bytes.fromhex(tree_v["root"])
        for proof_v in tree_v["proofs"]:
            i = proof_v["index"]
            proof = tree.prove(i)
            assert proof == {"leaf_count": tree_v["leaf_count"], "siblings": proof_v["siblings"]}
            assert b3iq.verify_inclusion(root, leaves[i], i, proof)
            assert not b3iq.verify_inclusion(root, leaves[i] + b"\x00", i, proof)
            if tree_v["leaf_count"] > 1:
                other = (i + 1) % tree_v["leaf_count"]
                assert not b3iq.verify_inclusion(root, leaves[i], other, proof)
        with pytest.raises(b3iq.B3iqValueError) as err:
            tree.prove(tree_v["leaf_count"])
        assert err.value.code == "index_out_of_range"


def test_payout_trees_match_vectors():
    vectors = load_vectors("payout")
    assert vectors["trees"]
    for tree_v in vectors["trees"]:
        entries = [{"index": e["index"], "account": e["account"], "amount": e["amount"]} for e in tree_v["entries"]]
        tree = b3iq.PayoutTree(entries)
        assert tree.root.hex() == tree_v["root"]
        root = bytes.fromhex(tree_v["root"])
        for entry, e in zip(entries, tree_v["entries"]):
            assert b3iq.payout_leaf(entry).hex() == e["leaf"]
            proof = tree.proof(e["index"])
            assert [p.hex() for p in proof] == e["proof"]
            assert b3iq.verify_payout(root, entry, proof)
            cheat = dict(entry, amount=str(int(entry["amount"]) + 1))
            assert not b3iq.verify_payout(root, cheat, proof)


def test_splits_match_vectors():
    vectors = load_vectors("split")
    policies = {p["name"]: b3iq.SplitPolicy(**p["policy"]) for p in vectors["policies"]}
    assert vectors["cases"]
    for case in vectors["cases"]:
        total = int(case["total"])
        got = policies[case["policy"]].split(total, case["has_publisher"])
        want = {k: int(case[k]) for k in ("host", "publisher", "protocol", "verifier")}
        assert got == want, case
        assert sum(got.values()) == total
        if case["policy"] == "default":
            assert b3iq.split(total, case["has_publisher"]) == want


def test_credentials_match_vectors():
    vectors = load_vectors("credentials")
    assert vectors["valid"] and vectors["invalid"]
    for case in vectors["valid"]:
        cred = b3iq.Credential.parse(case["token"])
        assert cred.kind == case["kind"]
        assert cred.hint == case["hint"]
        assert cred.hash_for_storage().hex() == case["storage_hash_sha256"]
        assert case["token"] not in repr(cred)
        b3iq.Credential.parse(case["token"], kind=case["kind"])
    for case in vectors["invalid"]:
        with pytest.raises(b3iq.B3iqValueError) as err:
            b3iq.Credential.parse(case["token"])
        assert err.value.code == case["error"], case["name"]
        if len(case["token"]) > 8:
            assert case["token"] not in str(err.value)
