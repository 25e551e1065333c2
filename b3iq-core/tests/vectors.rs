//! Golden vectors: the committed files must equal the generator's output, and every file must
//! decode and verify independently of the generator.

#[path = "support/vectors_gen.rs"]
mod vectors_gen;

use std::path::PathBuf;

use b3iq_core::benchmark::BenchmarkRecord;
use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::Heartbeat;
use b3iq_core::identity::{NodeId, NodeKey, NodePublicKey, Signature};
use b3iq_core::job::Job;
use b3iq_core::manifest::ModelManifest;
use b3iq_core::merkle::{self, MerkleProof, MerkleTree};
use b3iq_core::payout::{self, EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, OUTPUT_COMMITMENT_TAG, PROMPT_COMMITMENT_TAG};
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
        s.verify(&pk).unwrap();
        assert!(c["verifies"].as_bool().unwrap());
        assert_eq!(s.encode(), enc, "re-encoding is byte-identical");
        assert_eq!(hex::encode(s.body_bytes()), c["body_hex"].as_str().unwrap());
        assert_eq!(hex::encode(s.signing_message()), c["signing_message_hex"].as_str().unwrap());
        assert_eq!(s.signature().to_hex(), c["signature_hex"].as_str().unwrap());
        assert_eq!(hex::encode(s.object_hash()), c["object_hash_hex"].as_str().unwrap());
        // the signing message is domain_tag || version || body
        let mut msg = T::KIND.domain_tag().to_vec();
        msg.push(T::KIND.version());
        msg.extend(h(&c["body_hex"]));
        assert_eq!(msg, h(&c["signing_message_hex"]));
        // body JSON <-> canonical body
        let body: T = serde_json::from_value(c["body"].clone()).unwrap();
        assert_eq!(&body, s.body());
        assert_eq!(body.to_canonical_bytes(), h(&c["body_hex"]));
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
    assert_eq!(check_kind::<Job>("job.json"), 6);
    check_kind::<ModelManifest>("manifest.json");
    check_kind::<Heartbeat>("heartbeat.json");
    check_kind::<EnrollmentProof>("enrollment.json");
    check_kind::<BenchmarkRecord>("benchmark.json");
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
