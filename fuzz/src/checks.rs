//! What each fuzz target does with its input. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by `b3iq-core/tests/fuzz_corpus.rs`, which replays the
//! committed corpus through exactly these functions in the normal test suite.
//!
//! Every function must return normally for any input; it panics only when an invariant breaks
//! (a decoded object that does not re-encode to the same bytes, a parser that accepts
//! something it must refuse, ...).

use b3iq_core::attestation::{InferenceAttestation, VerificationVerdict};
use b3iq_core::benchmark::BenchmarkRecord;
use b3iq_core::credential::Credential;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::fingerprint::ChunkProof;
use b3iq_core::heartbeat::Heartbeat;
use b3iq_core::identity::{NodeId, NodeKey};
use b3iq_core::job::{Job, JobPolicy, MemorySeenSet, TrustRoots};
use b3iq_core::manifest::ModelManifest;
use b3iq_core::merkle::{self, MerkleProof};
use b3iq_core::receipt::Receipt;
use b3iq_core::{Hash32, OperatingMode, Signed, SignedKind};

/// Strict decode; anything accepted must re-encode byte-identically and survive verify and a
/// JSON round trip.
fn signed_roundtrip<T>(data: &[u8]) -> Option<Signed<T>>
where
    T: SignedKind + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let s = Signed::<T>::decode(data).ok()?;
    assert_eq!(s.encode(), data, "accepted bytes are not canonical");
    let _ = s.verify(&s.signer().clone());
    let json = serde_json::to_vec(&s).expect("serializable");
    let back: Signed<T> = serde_json::from_slice(&json).expect("own JSON parses");
    assert_eq!(back.encode(), data, "JSON round trip changed the object");
    Some(s)
}

/// `receipt` target: versions 1 and 2 side by side (the seeds hold both).
pub fn receipt(data: &[u8]) {
    if let Some(s) = signed_roundtrip::<Receipt>(data) {
        let summary = s.summary();
        assert_eq!(summary.receipt_id, s.receipt_id());
        // The envelope's version byte is the body's version, and only v2 has v2 fields.
        assert_eq!(s.version(), data[0]);
        assert_eq!(s.body().commitment_basis.is_some(), s.version() == 2);
        assert!(s.version() == 2 || s.body().attestation_digest.is_none());
        let _ = s.verify_self_certified();
    }
}

/// `job` target: strict decode of a signed job.
pub fn job(data: &[u8]) {
    if let Some(s) = signed_roundtrip::<Job>(data) {
        for mode in OperatingMode::ALL {
            let d = JobPolicy::default().decide(&s.body().kind, mode);
            assert!(!d.reason.is_empty());
        }
    }
}

/// `job_open` target: first 8 bytes are `now_ms` (LE), the rest a signed job; opened against
/// trust roots holding the job's own signer and audience, twice (the second must be refused).
pub fn job_open(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let now_ms = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let Ok(s) = Signed::<Job>::decode(&data[8..]) else { return };
    let roots = TrustRoots::new([*s.signer()]);
    let audience = s.body().audience;
    let mut seen = MemorySeenSet::default();
    if let Ok(v) = s.open(&roots, &audience, now_ms, &mut seen) {
        assert_eq!(v.job(), s.body());
        assert!(s.open(&roots, &audience, now_ms, &mut seen).is_err(), "replay accepted");
    }
    let other = NodeKey::from_seed([0xee; 32]);
    assert!(s.open(&TrustRoots::new([other.public()]), &audience, now_ms, &mut MemorySeenSet::default()).is_err());
}

/// `manifest` target.
pub fn manifest(data: &[u8]) {
    if let Some(s) = signed_roundtrip::<ModelManifest>(data) {
        assert!(s.body().total_size_bytes().is_ok());
        for a in &s.body().artifacts {
            assert!(!a.name.contains('/') && !a.name.contains('\\') && !a.name.starts_with('.'));
        }
    }
}

/// `heartbeat` target.
pub fn heartbeat(data: &[u8]) {
    let _ = signed_roundtrip::<Heartbeat>(data);
}

/// `enrollment` target.
pub fn enrollment(data: &[u8]) {
    if let Some(s) = signed_roundtrip::<EnrollmentProof>(data) {
        let b = s.body().clone();
        let _ = s.check(&b.audience, &b.nonce, b.signed_at_ms, 60_000);
    }
}

/// `benchmark` target.
pub fn benchmark(data: &[u8]) {
    let _ = signed_roundtrip::<BenchmarkRecord>(data);
}

/// `attestation` target: a signed inference attestation; an accepted one's proofs decode.
pub fn attestation(data: &[u8]) {
    if let Some(s) = signed_roundtrip::<InferenceAttestation>(data) {
        for p in &s.body().proofs {
            let proof = ChunkProof::decode(p).expect("accepted attestations hold valid proofs");
            let mut b = Vec::new();
            proof.encode(&mut b);
            assert_eq!(&b, p);
        }
        let _ = s.body().opens(&[1, 2, 3], &[4, 5, 6]);
    }
}

/// `evidence` target: dispute evidence. An accepted encoding re-encodes identically, and
/// checking it (with every verifier trusted) never panics; evidence that checks names the node
/// of its receipts.
pub fn evidence(data: &[u8]) {
    use b3iq_core::evidence::{check_evidence, Evidence, EvidenceRules};
    if let Ok(e) = Evidence::decode(data) {
        assert_eq!(e.encode(), data, "evidence encoding is canonical");
        if let Ok(s) = check_evidence(&e, &EvidenceRules::default(), &|_| true) {
            assert_eq!(s.evidence_hash, e.hash());
            assert!(!s.receipts.is_empty());
        }
    }
}

/// `verdict` target: a signed verification verdict.
pub fn verdict(data: &[u8]) {
    let _ = signed_roundtrip::<VerificationVerdict>(data);
}

/// `chunk_proof` target: one fingerprint proof; accepted ones re-encode identically and
/// evaluate and compare without panicking.
pub fn chunk_proof(data: &[u8]) {
    if let Ok(p) = ChunkProof::decode(data) {
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(b, data);
        let values: Vec<f32> = (0..64).map(|i| i as f32 - 31.5).collect();
        let m = b3iq_core::fingerprint::compare(&p, &values);
        assert!(m.exp_mismatches <= m.compared);
        let _ = p.eval(usize::MAX);
    }
}

/// `credential` target: key and token parsing.
pub fn credential(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Credential::parse(text) {
        assert_eq!(c.expose_secret(), text);
        assert!(Credential::parse_kind(text, c.kind()).is_ok());
        assert!(c.hash_for_storage().matches(&c));
        assert!(!format!("{c:?}{c}").contains(&text[text.len() - 8..]), "secret printed");
    }
}

/// `digest` target: the result must be safe as a file name.
pub fn digest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = Sha256Digest::parse(text) {
        let h = d.to_hex();
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(text == h || text == d.to_prefixed());
    }
}

/// `node_id` target: strict parsing means one text per id.
pub fn node_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = NodeId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
}

/// `key_file` target.
pub fn key_file(data: &[u8]) {
    if let Ok(k) = NodeKey::from_key_file(data) {
        let again = NodeKey::from_key_file(&k.to_key_file()).expect("own key file parses");
        assert_eq!(again.public(), k.public());
    }
}

/// `json_signed` target: the JSON forms the host API and bindings accept.
pub fn json_signed(data: &[u8]) {
    fn one<T>(data: &[u8])
    where
        T: SignedKind + serde::Serialize + serde::de::DeserializeOwned,
    {
        if let Ok(s) = serde_json::from_slice::<Signed<T>>(data) {
            let bytes = s.encode();
            let back = Signed::<T>::decode(&bytes).expect("a JSON-accepted object must decode from its own bytes");
            assert_eq!(back.encode(), bytes);
        }
    }
    one::<Receipt>(data);
    one::<Job>(data);
    one::<ModelManifest>(data);
    one::<Heartbeat>(data);
    one::<EnrollmentProof>(data);
    one::<BenchmarkRecord>(data);
    one::<InferenceAttestation>(data);
    one::<VerificationVerdict>(data);
}

/// `merkle_verify` target: `root[32] || index u64le || leaf_count u64le || leaf_len u8 || leaf
/// || siblings[32]*`. Verification must never panic, and must agree with a tree rebuilt when
/// the proof is honest.
pub fn merkle_verify(data: &[u8]) {
    if data.len() < 49 {
        return;
    }
    let root = Hash32(data[..32].try_into().expect("32"));
    let index = u64::from_le_bytes(data[32..40].try_into().expect("8"));
    let leaf_count = u64::from_le_bytes(data[40..48].try_into().expect("8"));
    let leaf_len = usize::from(data[48]);
    let rest = &data[49..];
    if rest.len() < leaf_len {
        return;
    }
    let (leaf, sibs) = rest.split_at(leaf_len);
    let siblings = sibs.chunks_exact(32).map(|c| Hash32(c.try_into().expect("32"))).collect();
    let proof = MerkleProof { leaf_count, siblings };
    let _ = merkle::verify_inclusion(&root, leaf, index, &proof);
    // Small honest trees built from the input must always verify.
    let n = (leaf_count % 33) as usize + 1;
    let leaves: Vec<Vec<u8>> = (0..n).map(|i| [leaf, &(i as u32).to_le_bytes()].concat()).collect();
    let t = merkle::MerkleTree::from_leaves(&leaves);
    let i = (index % n as u64) as usize;
    let p = t.prove(i as u64).expect("in range");
    assert!(merkle::verify_inclusion(&t.root(), &leaves[i], i as u64, &p));
}

/// A fuzz check: must return normally for any input.
pub type Check = fn(&[u8]);

/// Every target name with its function (for the corpus replay test).
pub const TARGETS: &[(&str, Check)] = &[
    ("receipt", receipt),
    ("job", job),
    ("job_open", job_open),
    ("manifest", manifest),
    ("heartbeat", heartbeat),
    ("enrollment", enrollment),
    ("benchmark", benchmark),
    ("attestation", attestation),
    ("verdict", verdict),
    ("evidence", evidence),
    ("chunk_proof", chunk_proof),
    ("credential", credential),
    ("digest", digest),
    ("node_id", node_id),
    ("key_file", key_file),
    ("json_signed", json_signed),
    ("merkle_verify", merkle_verify),
];
