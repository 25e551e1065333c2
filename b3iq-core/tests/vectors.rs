//! Golden vectors: the committed files must equal the generator's output, and every file must
//! decode and verify independently of the generator.

#[path = "support/vectors_gen.rs"]
mod vectors_gen;

use std::path::PathBuf;

use b3iq_core::benchmark::BenchmarkRecord;
use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::attestation::{InferenceAttestation, VerificationVerdict};
use b3iq_core::heartbeat::Heartbeat;
use b3iq_core::identity::{NodeId, NodeKey, NodePublicKey, Signature};
use b3iq_core::job::Job;
use b3iq_core::manifest::ModelManifest;
use b3iq_core::merkle::{self, MerkleProof, MerkleTree};
use b3iq_core::payout::{self, EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{
    Commitment, CommitmentBasis, CommitmentSalt, NodeSalt, Receipt, ReceiptId, SignedReceipt, OUTPUT_COMMITMENT_TAG, PROMPT_COMMITMENT_TAG,
};
use b3iq_core::split::SplitPolicy;
use b3iq_core::{Hash32, Signed, SignedKind};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors")
}

fn load(name: &str) -> Value {
    let p = dir().join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}; run `cargo run -p b3iq-core --example gen-vectors`", p.display()));
    serde_json::from_str(&s).expect("valid JSON")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn h32(v: &Value) -> Hash32 {
    Hash32::from_hex(v.as_str().expect("hex string")).expect("32-byte hex")
}

#[test]
fn committed_vectors_match_the_generator() {
    let mut stale = Vec::new();
    for (name, content) in vectors_gen::generate() {
        let on_disk = std::fs::read_to_string(dir().join(&name)).unwrap_or_default();
        if on_disk != content {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "golden vectors differ from the generator: {stale:?}. If the format change is intended, run `cargo run -p b3iq-core --example gen-vectors` and commit testdata/vectors/"
    );
}

#[test]
fn keys_derive_from_seeds() {
    let v = load("keys.json");
    for k in v["keys"].as_array().expect("keys") {
        let seed: [u8; 32] = h(&k["secret_seed_hex"]).try_into().expect("32");
        let key = NodeKey::from_seed(seed);
        assert_eq!(key.public().to_hex(), k["public_key_hex"].as_str().unwrap());
        let id: NodeId = k["node_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(id, key.node_id());
        assert_eq!(hex::encode(id.as_bytes()), k["node_id_hex"].as_str().unwrap());
        // node id = blake3(tag || pk), recomputed here by hand
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"b3iq/node-id/v1");
        hasher.update(key.public().as_bytes());
        assert_eq!(hasher.finalize().as_bytes(), id.as_bytes());
        assert_eq!(id.short_code(), k["short_code"].as_str().unwrap());
        let from_file = NodeKey::from_key_file(k["key_file"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(from_file.public(), key.public());
        let sig = Signature::from_hex(k["raw_signature_hex"].as_str().unwrap()).unwrap();
        assert!(key.public().verify_raw(&h(&k["raw_message_hex"]), &sig));
        assert!(!key.public().verify_raw(b"other", &sig));
    }
    for bad in v["invalid_node_ids"].as_array().unwrap() {
        let e = NodeId::parse(bad["text"].as_str().unwrap()).unwrap_err();
        assert_eq!(e.code(), bad["error"].as_str().unwrap(), "{}", bad["name"]);
    }
}

fn check_kind<T>(file: &str) -> usize
where
    T: SignedKind + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let v = load(file);
    let version = u8::try_from(v["version"].as_u64().unwrap()).unwrap();
    assert!(T::KIND.supports_version(version));
    assert_eq!(v["kind_byte"].as_u64().unwrap(), u64::from(T::KIND.byte()));
    assert_eq!(v["domain_tag"].as_str().unwrap().as_bytes(), T::KIND.domain_tag());
    let cases = v["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut first_signer = None;
    for c in cases {
        let pk = NodePublicKey::from_hex(c["signer_public_key_hex"].as_str().unwrap()).unwrap();
        first_signer.get_or_insert(pk);
        let enc = h(&c["encoded_hex"]);
        let s = Signed::<T>::decode(&enc).unwrap_or_else(|e| panic!("{file} {}: {e}", c["name"]));
        assert_eq!(s.version(), version);
        s.verify(&pk).unwrap();
        assert!(c["verifies"].as_bool().unwrap());
        assert_eq!(s.encode(), enc, "re-encoding is byte-identical");
        assert_eq!(hex::encode(s.body_bytes()), c["body_hex"].as_str().unwrap());
        assert_eq!(hex::encode(s.signing_message()), c["signing_message_hex"].as_str().unwrap());
        assert_eq!(s.signature().to_hex(), c["signature_hex"].as_str().unwrap());
        assert_eq!(hex::encode(s.object_hash()), c["object_hash_hex"].as_str().unwrap());
        // the signing message is domain_tag || version || body
        let mut msg = T::KIND.domain_tag().to_vec();
        msg.push(version);
        msg.extend(h(&c["body_hex"]));
        assert_eq!(msg, h(&c["signing_message_hex"]));
        // body JSON <-> canonical body
        let body: T = serde_json::from_value(c["body"].clone()).unwrap();
        assert_eq!(&body, s.body());
        assert_eq!(body.to_body_bytes(), h(&c["body_hex"]));
        let from_json: Signed<T> = serde_json::from_value(c["signed_json"].clone()).unwrap();
        assert_eq!(from_json.encode(), enc);
        from_json.verify(&pk).unwrap();
    }
    let pk = first_signer.unwrap();
    let negs = v["negative_cases_of_first"].as_array().unwrap();
    assert!(negs.len() >= 10);
    for n in negs {
        let (decodes, err) = vectors_gen::outcome::<T>(&h(&n["encoded_hex"]), &pk);
        assert_eq!(decodes, n["decodes"].as_bool().unwrap(), "{file} {}", n["name"]);
        assert_eq!(err, n["error"].as_str(), "{file} {}", n["name"]);
        assert!(err.is_some());
    }
    cases.len()
}

#[test]
fn every_signed_kind_decodes_and_verifies() {
    assert_eq!(check_kind::<Receipt>("receipt.json"), 2);
    assert_eq!(check_kind::<Receipt>("receipt_v2.json"), 6);
    assert_eq!(check_kind::<Job>("job.json"), 9);
    check_kind::<ModelManifest>("manifest.json");
    check_kind::<Heartbeat>("heartbeat.json");
    check_kind::<Heartbeat>("heartbeat_v2.json");
    check_kind::<EnrollmentProof>("enrollment.json");
    check_kind::<BenchmarkRecord>("benchmark.json");
    assert_eq!(check_kind::<InferenceAttestation>("attestation.json"), 2);
    assert_eq!(check_kind::<VerificationVerdict>("verdict.json"), 2);
}

#[test]
fn evidence_decodes_hashes_and_checks() {
    use b3iq_core::evidence::{check_evidence, Evidence, EvidenceRules};
    let v = load("evidence.json");
    let any = |_: &NodeId| true;
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let bytes = h(&c["encoded_hex"]);
        let e = Evidence::decode(&bytes).unwrap();
        assert_eq!(e.encode(), bytes, "canonical");
        // The hash is blake3(domain tag || encoding).
        let mut pre = v["domain_tag"].as_str().unwrap().as_bytes().to_vec();
        pre.extend_from_slice(&bytes);
        assert_eq!(e.hash(), Hash32(blake3_hash(&pre)));
        assert_eq!(e.hash(), h32(&c["evidence_hash_hex"]));
        let s = check_evidence(&e, &EvidenceRules::default(), &any).unwrap();
        assert_eq!(s.node_id.to_text(), c["node_id"].as_str().unwrap());
        assert_eq!(s.kind.as_str(), c["kind"].as_str().unwrap());
        // Any one-byte change breaks it: refused by the decoder or by the check.
        for i in [2, bytes.len() / 2, bytes.len() - 1] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            let changed = Evidence::decode(&t).ok().map(|e| check_evidence(&e, &EvidenceRules::default(), &any));
            assert!(!matches!(changed, Some(Ok(_))), "byte {i} changed and it still checks");
        }
    }
    for c in v["negative_cases"].as_array().unwrap() {
        let e = Evidence::decode(&h(&c["encoded_hex"]));
        assert_eq!(e.is_ok(), c["decodes"].as_bool().unwrap(), "{}", c["name"]);
        if let Ok(e) = e {
            assert_eq!(check_evidence(&e, &EvidenceRules::default(), &any).unwrap_err().code(), c["error"].as_str().unwrap());
        }
    }
}

fn blake3_hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

#[test]
fn receipt_commitment_opens() {
    let v = load("receipt.json");
    let c = &v["cases"][0];
    let o = &c["commitment_opening"];
    let salt = CommitmentSalt::from_bytes(h(&o["salt_hex"]).try_into().unwrap());
    let pc = Commitment::from_hex(c["body"]["prompt_commitment"].as_str().unwrap()).unwrap();
    let oc = Commitment::from_hex(c["body"]["output_commitment"].as_str().unwrap()).unwrap();
    assert!(pc.opens_to(&salt, PROMPT_COMMITMENT_TAG, o["prompt_utf8"].as_str().unwrap().as_bytes()));
    assert!(oc.opens_to(&salt, OUTPUT_COMMITMENT_TAG, o["output_utf8"].as_str().unwrap().as_bytes()));
    // by hand: blake3 keyed with the salt over tag || text
    let mut hh = blake3::Hasher::new_keyed(salt.expose_secret());
    hh.update(b"b3iq/commit/prompt/v1");
    hh.update(o["prompt_utf8"].as_str().unwrap().as_bytes());
    assert_eq!(hh.finalize().as_bytes(), &pc.0);
}

/// `local_free` from `receipt.json` as first committed (before receipts had a version 2): an
/// old export must keep decoding, verifying and having the same receipt id forever.
const V1_EXPORTED_RECEIPT: &str = "01012152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12e40000008e1b02ba64f103c1de52fcc6289db26c14e6d39823530106d093688d06eaae6d111111111111111111111111111111111a000000736d6f6c6c6d322d3133356d2d696e7374727563743a71345f31b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53090000006c6c616d612e637070001f00000009000000801381a99a0100002a000000000000003b010000000000000000000000000000c811617ae2d9d8baafaf6d5107f15d6218c9dd183c89957d274728695b98acc3d0d2d4492691ee66dbf7e3d07369375d54470ace3271351cadef8e8d35b703e4f122988dc80b9d94ef8a9e66815186014f8f9167e0cd899a08b23d59aaaf9335dc43c0022227fb1e4de0f08a12f21656af44d3c3767cf6be593fc0151eb02a02";
const V1_EXPORTED_RECEIPT_ID: &str = "36dbd2e6560dc064017f20a19c9a518ac1e85f76bbf0bfb4bcf08700166f4aec";

#[test]
fn v1_receipts_in_an_old_export_still_verify() {
    let pk = NodePublicKey::from_hex("2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12").unwrap();
    let s = SignedReceipt::decode(&hex::decode(V1_EXPORTED_RECEIPT).unwrap()).unwrap();
    assert_eq!(s.version(), 1);
    assert_eq!(s.body().commitment_basis, None);
    s.verify(&pk).unwrap();
    assert_eq!(s.verify_self_certified().unwrap(), pk.node_id());
    assert_eq!(s.receipt_id(), ReceiptId::from_hex(V1_EXPORTED_RECEIPT_ID).unwrap());
    assert_eq!(hex::encode(s.encode()), V1_EXPORTED_RECEIPT);
    // and every v1 case in the current vectors is a version-1 receipt that verifies
    let v = load("receipt.json");
    assert_eq!(v["version"], 1);
    for c in v["cases"].as_array().unwrap() {
        let s = SignedReceipt::decode(&h(&c["encoded_hex"])).unwrap();
        assert_eq!(s.version(), 1);
        s.verify_self_certified().unwrap();
        assert_eq!(s.receipt_id().to_hex(), c["object_hash_hex"].as_str().unwrap());
    }
    assert_eq!(v["cases"][0]["encoded_hex"].as_str().unwrap(), V1_EXPORTED_RECEIPT);
}

#[test]
fn receipt_v2_prices_match_the_schedule_and_commitments_open() {
    let v = load("receipt_v2.json");
    assert_eq!(v["version"], 2);
    let cases = v["cases"].as_array().unwrap();
    let mut salts = Vec::new();
    let mut bases = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let s = SignedReceipt::decode(&h(&c["encoded_hex"])).unwrap();
        let r = s.body();
        assert_eq!(s.version(), 2);
        // price: exactly PriceSchedule::price of the schedule and the token counts
        let p = &c["price"];
        let schedule: PriceSchedule = serde_json::from_value(p["schedule"].clone()).unwrap();
        let want = schedule.price(u64::from(r.prompt_tokens), u64::from(r.completion_tokens)).unwrap();
        assert_eq!(r.price_micro_credits, want, "{name}");
        assert_eq!(p["price_micro_credits"].as_u64().unwrap(), want, "{name}");
        assert_eq!((p["prompt_tokens"].as_u64().unwrap(), p["completion_tokens"].as_u64().unwrap()), (u64::from(r.prompt_tokens), u64::from(r.completion_tokens)));
        // the receipt salt: blake3 keyed with the node salt over tag || request id, by hand
        let o = &c["commitment_opening"];
        let node_salt: [u8; 32] = h(&o["node_salt_hex"]).try_into().unwrap();
        let mut hh = blake3::Hasher::new_keyed(&node_salt);
        hh.update(o["salt_tag"].as_str().unwrap().as_bytes());
        hh.update(&r.request_id.0);
        assert_eq!(hh.finalize().as_bytes().to_vec(), h(&o["receipt_salt_hex"]), "{name}");
        let salt = NodeSalt::from_bytes(node_salt).receipt_salt(&r.request_id);
        assert_eq!(salt.expose_secret().to_vec(), h(&o["receipt_salt_hex"]));
        // commitments: blake3 keyed with the receipt salt over tag || canonical data, by hand
        for (tag, data, commitment) in [("prompt_tag", "prompt_data_hex", r.prompt_commitment), ("completion_tag", "completion_data_hex", r.output_commitment)] {
            let mut hh = blake3::Hasher::new_keyed(salt.expose_secret());
            hh.update(o[tag].as_str().unwrap().as_bytes());
            hh.update(&h(&o[data]));
            assert_eq!(hh.finalize().as_bytes(), &commitment.0, "{name} {tag}");
        }
        let basis: CommitmentBasis = serde_json::from_value(o["commitment_basis"].clone()).unwrap();
        assert_eq!(r.commitment_basis, Some(basis));
        bases.insert(basis.as_str());
        let ids = |k: &str| -> Vec<u32> { o[k].as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect() };
        match basis {
            CommitmentBasis::TokenIds => {
                let (p, q) = (ids("prompt_token_ids"), ids("completion_token_ids"));
                assert_eq!((p.len(), q.len()), (r.prompt_tokens as usize, r.completion_tokens as usize));
                assert_eq!(b3iq_core::receipt::token_ids_bytes(&p).unwrap(), h(&o["prompt_data_hex"]));
                assert!(r.opens_token_ids(&salt, &p, &q), "{name}");
                assert!(!r.opens_token_ids(&salt, &q, &p), "{name}");
            }
            CommitmentBasis::Utf8Text => {
                let (p, q) = (o["prompt_utf8"].as_str().unwrap(), o["completion_utf8"].as_str().unwrap());
                assert_eq!(b3iq_core::receipt::text_bytes(p).unwrap(), h(&o["prompt_data_hex"]));
                assert!(r.opens_text(&salt, p, q), "{name}");
            }
        }
        salts.push((salt, s));
    }
    assert_eq!(bases.len(), 2, "both commitment bases have vectors");
    // one receipt's salt opens no other receipt
    for (i, (salt, _)) in salts.iter().enumerate() {
        for (j, (_, other)) in salts.iter().enumerate() {
            if i != j {
                let o = &cases[j]["commitment_opening"];
                let b = other.body();
                let opened = match b.commitment_basis {
                    Some(CommitmentBasis::TokenIds) => {
                        let ids = |k: &str| -> Vec<u32> { o[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
                        b.opens_token_ids(salt, &ids("prompt_token_ids"), &ids("completion_token_ids"))
                    }
                    _ => b.opens_text(salt, o["prompt_utf8"].as_str().unwrap(), o["completion_utf8"].as_str().unwrap()),
                };
                assert!(!opened, "salt of case {i} opens case {j}");
            }
        }
    }
    // the rounding cases are really there
    let price = |name: &str| cases.iter().find(|c| c["name"] == name).unwrap()["price"]["price_micro_credits"].as_u64().unwrap();
    assert_eq!(price("token_ids_managed_one_token_rounds_up"), 1);
    assert_eq!(price("token_ids_network_half_rounds_up"), 11);
    assert_eq!(price("utf8_text_network_fee"), 251);
}

#[test]
fn merkle_vectors() {
    let v = load("merkle.json");
    assert_eq!(h32(&v["empty_root"]), merkle::empty_root());
    let trees = v["trees"].as_array().unwrap();
    assert_eq!(trees.len(), 17);
    for t in trees {
        let n = t["leaf_count"].as_u64().unwrap();
        let leaves: Vec<Vec<u8>> = t["leaves_hex"].as_array().unwrap().iter().map(h).collect();
        assert_eq!(leaves.len() as u64, n);
        let root = h32(&t["root"]);
        assert_eq!(MerkleTree::from_leaves(&leaves).root(), root);
        assert_eq!(merkle::merkle_root(&leaves), root);
        for p in t["proofs"].as_array().unwrap() {
            let i = p["index"].as_u64().unwrap();
            let proof = MerkleProof { leaf_count: n, siblings: p["siblings"].as_array().unwrap().iter().map(h32).collect() };
            assert!(merkle::verify_inclusion(&root, &leaves[i as usize], i, &proof), "n={n} i={i}");
            for (j, other) in leaves.iter().enumerate() {
                if j as u64 != i {
                    assert!(!merkle::verify_inclusion(&root, other, i, &proof));
                }
            }
        }
    }
}

#[test]
fn payout_vectors() {
    let v = load("payout.json");
    for t in v["trees"].as_array().unwrap() {
        let root = h32(&t["root"]);
        let mut entries = Vec::new();
        for e in t["entries"].as_array().unwrap() {
            let entry = PayoutEntry {
                index: e["index"].as_u64().unwrap(),
                account: EthAddress::parse(e["account"].as_str().unwrap()).unwrap(),
                amount: e["amount"].as_str().unwrap().parse().unwrap(),
            };
            assert_eq!(hex::encode(entry.abi_encode()), e["abi_encoded_hex"].as_str().unwrap());
            let inner = payout::keccak256(&entry.abi_encode());
            assert_eq!(payout::keccak256(&inner.0), h32(&e["leaf"]));
            let proof: Vec<Hash32> = e["proof"].as_array().unwrap().iter().map(h32).collect();
            assert!(payout::verify_payout(&root, &entry, &proof));
            let mut wrong = entry;
            wrong.amount += 1;
            assert!(!payout::verify_payout(&root, &wrong, &proof));
            entries.push(entry);
        }
        let rebuilt = PayoutTree::build(entries).unwrap();
        assert_eq!(rebuilt.root(), root);
        let nodes: Vec<Hash32> = t["tree_nodes"].as_array().unwrap().iter().map(h32).collect();
        assert_eq!(rebuilt.nodes(), &nodes[..]);
    }
}

#[test]
fn split_vectors() {
    let v = load("split.json");
    for c in v["cases"].as_array().unwrap() {
        let policy_name = c["policy"].as_str().unwrap();
        let p: SplitPolicy = serde_json::from_value(
            v["policies"].as_array().unwrap().iter().find(|p| p["name"] == policy_name).unwrap()["policy"].clone(),
        )
        .unwrap();
        let total: u64 = c["total"].as_str().unwrap().parse().unwrap();
        let s = p.split(total, c["has_publisher"].as_bool().unwrap());
        let get = |k: &str| c[k].as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!((s.host, s.publisher, s.protocol, s.verifier), (get("host"), get("publisher"), get("protocol"), get("verifier")));
        assert_eq!(s.sum(), u128::from(total));
    }
}

#[test]
fn credential_vectors() {
    let v = load("credentials.json");
    for c in v["valid"].as_array().unwrap() {
        let cred = Credential::parse(c["token"].as_str().unwrap()).unwrap();
        let kind: CredentialKind = serde_json::from_value(c["kind"].clone()).unwrap();
        assert_eq!(cred.kind(), kind);
        assert_eq!(cred.hash_for_storage().to_hex(), c["storage_hash_sha256"].as_str().unwrap());
        assert_eq!(cred.hint(), c["hint"].as_str().unwrap());
    }
    for c in v["invalid"].as_array().unwrap() {
        let e = Credential::parse(c["token"].as_str().unwrap()).unwrap_err();
        assert_eq!(e.code(), c["error"].as_str().unwrap(), "{}", c["name"]);
    }
}

#[test]
fn digest_vectors() {
    let v = load("digests.json");
    for c in v["valid"].as_array().unwrap() {
        assert_eq!(Sha256Digest::parse(c["text"].as_str().unwrap()).unwrap().to_hex(), c["hex"].as_str().unwrap());
    }
    for c in v["invalid"].as_array().unwrap() {
        assert_eq!(Sha256Digest::parse(c["text"].as_str().unwrap()).unwrap_err().code(), c["error"].as_str().unwrap());
    }
}
