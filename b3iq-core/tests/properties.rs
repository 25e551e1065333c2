//! Property tests for the core invariants.

use b3iq_core::benchmark::{BenchmarkRecord, ConcurrencyPoint};
use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::{EnrollmentProof, Nonce};
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::identity::{NodeId, NodeKey};
use b3iq_core::job::{Job, JobId, JobKind};
use b3iq_core::manifest::{ManifestArtifact, MemoryBand, ModelManifest};
use b3iq_core::merkle::{self, MerkleTree};
use b3iq_core::payout::{self, EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::receipt::{Commitment, CommitmentBasis, NodeSalt, Receipt, RequestId};
use b3iq_core::reputation::decay;
use b3iq_core::split::{Recipient, SplitPolicy};
use b3iq_core::{Hash32, OperatingMode, Signed, SignedKind};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;

fn mode() -> impl Strategy<Value = OperatingMode> {
    prop_oneof![Just(OperatingMode::Local), Just(OperatingMode::Managed), Just(OperatingMode::Network)]
}

fn ident(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9][a-z0-9_:+-]{{0,{}}}", max - 1)).expect("regex")
}

fn receipt(seed: [u8; 32]) -> impl Strategy<Value = (NodeKey, Receipt)> {
    (
        any::<[u8; 16]>(),
        ident(128),
        any::<[u8; 32]>(),
        ident(64),
        mode(),
        any::<(u32, u32, u64, u64, u64, u64)>(),
        any::<([u8; 32], [u8; 32])>(),
    )
        .prop_map(move |(rid, model_id, digest, backend, mode, n, c)| {
            let key = NodeKey::from_seed(seed);
            let r = Receipt {
                node_id: key.node_id(),
                request_id: RequestId(rid),
                model_id,
                artifact_digest: Sha256Digest(digest),
                backend,
                mode,
                prompt_tokens: n.0,
                completion_tokens: n.1,
                started_at_ms: n.2,
                ttft_ms: n.3,
                duration_ms: n.4,
                price_micro_credits: n.5,
                prompt_commitment: Commitment(c.0),
                output_commitment: Commitment(c.1),
                commitment_basis: None,
                attestation_digest: None,
            };
            (key, r)
        })
}

/// Version-2 receipts: any v1 shape plus a basis and an optional attestation digest.
fn receipt_v2(seed: [u8; 32]) -> impl Strategy<Value = (NodeKey, Receipt)> {
    (receipt(seed), any::<bool>(), proptest::option::of(any::<[u8; 32]>())).prop_map(|((key, mut r), text, attestation)| {
        r.commitment_basis = Some(if text { CommitmentBasis::Utf8Text } else { CommitmentBasis::TokenIds });
        r.attestation_digest = attestation.map(Hash32);
        (key, r)
    })
}

fn job_kind() -> impl Strategy<Value = JobKind> {
    prop_oneof![
        ident(64).prop_map(|p| JobKind::InstallModelProfile { profile_id: p }),
        ident(64).prop_map(|p| JobKind::RemoveModelProfile { profile_id: p }),
        ident(64).prop_map(|s| JobKind::RunBenchmark { suite: s }),
        Just(JobKind::BuildSupportBundle {}),
        Just(JobKind::RestartRuntime {}),
        mode().prop_map(|m| JobKind::ChangeMode { mode: m }),
        any::<[u8; 32]>().prop_map(|seed| JobKind::RotateIssuerKey { new_issuer: NodeKey::from_seed(seed).public() }),
    ]
}

/// Every single-byte change to the encoding fails decode or verification.
fn assert_any_byte_change_fails<T: SignedKind>(signed: &Signed<T>, pos: prop::sample::Index, xor: u8) -> Result<(), TestCaseError> {
    let signer = *signed.signer();
    let enc = signed.encode();
    prop_assert!(Signed::<T>::decode(&enc).and_then(|s| s.verify(&signer)).is_ok());
    let i = pos.index(enc.len());
    let mut bad = enc.clone();
    bad[i] ^= xor;
    let res = Signed::<T>::decode(&bad).and_then(|s| s.verify(&signer));
    prop_assert!(res.is_err(), "byte {} ^ {:#x} of {} still verifies", i, xor, enc.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn split_always_sums(total in any::<u64>(), has_publisher in any::<bool>(),
                         a in 0u16..=10_000, b in 0u16..=10_000, c in 0u16..=10_000,
                         to in prop_oneof![Just(Recipient::Host), Just(Recipient::Protocol), Just(Recipient::Verifier)]) {
        // Three cut points in 0..=10000 give four shares that sum to 10000.
        let mut cuts = [a, b, c];
        cuts.sort_unstable();
        let shares = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], 10_000 - cuts[2]];
        let p = SplitPolicy::new(shares[0], shares[1], shares[2], shares[3], to).unwrap();
        let s = p.split(total, has_publisher);
        prop_assert_eq!(s.sum(), u128::from(total));
        if !has_publisher { prop_assert_eq!(s.publisher, 0); }
        // Non-host parts are the floors, so the host gets at least its own floor.
        let floor = |bps: u16| (u128::from(total) * u128::from(bps) / 10_000) as u64;
        prop_assert!(s.host >= floor(shares[0]));
        let d = SplitPolicy::default().split(total, true);
        prop_assert_eq!(d.sum(), u128::from(total));
        prop_assert!(d.host - floor(7000) <= 3, "remainder is at most 3 units");
    }

    #[test]
    fn receipt_any_byte_change_fails((_key, r) in receipt([0x42; 32]), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let key = NodeKey::from_seed([0x42; 32]);
        let s = r.sign(&key).unwrap();
        assert_any_byte_change_fails(&s, pos, xor)?;
    }

    #[test]
    fn receipt_v2_any_byte_change_fails((_key, r) in receipt_v2([0x42; 32]), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let key = NodeKey::from_seed([0x42; 32]);
        let s = r.sign(&key).unwrap();
        prop_assert_eq!(s.version(), 2);
        assert_any_byte_change_fails(&s, pos, xor)?;
    }

    /// Revealing one receipt's salt (to open it) lets nobody check another receipt's
    /// commitments, even knowing that receipt's true token ids; and the receipt salt is keyed
    /// by the node salt.
    #[test]
    fn opening_one_receipt_exposes_no_other(node in any::<[u8; 32]>(), other_node in any::<[u8; 32]>(),
                                            a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
                                            prompt in proptest::collection::vec(any::<u32>(), 0..64),
                                            completion in proptest::collection::vec(any::<u32>(), 0..64)) {
        prop_assume!(a != b && node != other_node);
        let node_salt = NodeSalt::from_bytes(node);
        let (salt_a, salt_b) = (node_salt.receipt_salt(&RequestId(a)), node_salt.receipt_salt(&RequestId(b)));
        let b_prompt = Commitment::prompt_token_ids(&salt_b, &prompt).unwrap();
        let b_completion = Commitment::completion_token_ids(&salt_b, &completion).unwrap();
        prop_assert_ne!(Commitment::prompt_token_ids(&salt_a, &prompt).unwrap(), b_prompt);
        prop_assert_ne!(Commitment::completion_token_ids(&salt_a, &completion).unwrap(), b_completion);
        prop_assert_ne!(salt_a.expose_secret(), salt_b.expose_secret());
        prop_assert_ne!(&node_salt.receipt_salt(&RequestId(a)), &NodeSalt::from_bytes(other_node).receipt_salt(&RequestId(a)));
        let mut unkeyed = blake3::Hasher::new();
        unkeyed.update(b"b3iq/receipt-salt/v1");
        unkeyed.update(&a);
        let unkeyed = unkeyed.finalize();
        prop_assert_ne!(salt_a.expose_secret(), unkeyed.as_bytes());
    }

    #[test]
    fn job_any_byte_change_fails(kind in job_kind(), id in any::<[u8; 16]>(), t in any::<(u64, u64)>(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let cp = NodeKey::from_seed([0xc0; 32]);
        let job = Job { job_id: JobId(id), audience: NodeKey::from_seed([1; 32]).node_id(), issuer: cp.public(),
                        issued_at_ms: t.0, expires_at_ms: t.1, sequence: t.0 ^ t.1, kind };
        let s = cp.sign_object(job).unwrap();
        assert_any_byte_change_fails(&s, pos, xor)?;
    }

    #[test]
    fn other_kinds_any_byte_change_fails(n in any::<(u64, u64, u32, u32)>(), digests in prop::collection::vec(any::<[u8; 32]>(), 0..5),
                                         name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}", text in "[ -~]{0,100}",
                                         pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let key = NodeKey::from_seed([0x42; 32]);
        let hb = Heartbeat { node_id: key.node_id(), sent_at_ms: n.0, sequence: n.1, mode: OperatingMode::Managed, health: HealthStatus::Degraded,
            counts: HeartbeatCounts { active_requests: n.2, queued_requests: n.3, completed_requests: n.0, failed_requests: n.1, generated_tokens: 1, uptime_s: 2 },
            model_inventory: digests.iter().map(|d| Sha256Digest(*d)).collect(), software_version: None };
        assert_any_byte_change_fails(&key.sign_object(hb).unwrap(), pos, xor)?;
        let en = EnrollmentProof { node_id: key.node_id(), public_key: key.public(), audience: "cp.example".into(), nonce: Nonce([n.2 as u8; 32]), signed_at_ms: n.0 };
        assert_any_byte_change_fails(&key.sign_object(en).unwrap(), pos, xor)?;
        let br = BenchmarkRecord { node_id: key.node_id(), hardware_fingerprint: Hash32([3; 32]), backend: "llama.cpp".into(), model_digest: Sha256Digest([4; 32]),
            prompt_milli_tokens_per_s: n.0, generation_milli_tokens_per_s: n.1,
            concurrency: vec![ConcurrencyPoint { concurrency: 1, aggregate_milli_tokens_per_s: n.0 }, ConcurrencyPoint { concurrency: 8, aggregate_milli_tokens_per_s: n.1 }],
            created_at_ms: n.1 };
        assert_any_byte_change_fails(&key.sign_object(br).unwrap(), pos, xor)?;
        let artifacts = digests.iter().enumerate().map(|(i, d)| ManifestArtifact { name: format!("{name}.{i}"), digest: Sha256Digest(*d), size_bytes: u64::from(n.2) }).collect::<Vec<_>>();
        if !artifacts.is_empty() {
            let m = ModelManifest { model_id: "m".into(), display_name: text.clone(), artifacts, license: "MIT".into(), runtime_profile: "llama.cpp/gguf".into(),
                memory: MemoryBand { min_ram_mib: 1, recommended_ram_mib: 2, min_vram_mib: 0 }, context_window: n.3.max(1), intended_use: text, created_at_ms: n.0 };
            assert_any_byte_change_fails(&key.sign_object(m).unwrap(), pos, xor)?;
        }
    }

    #[test]
    fn merkle_every_proof_verifies_only_for_its_leaf(leaves in prop::collection::btree_set(prop::collection::vec(any::<u8>(), 0..48), 1..40),
                                                   other_root in any::<[u8; 32]>()) {
        let leaves: Vec<Vec<u8>> = leaves.into_iter().collect();
        let t = MerkleTree::from_leaves(&leaves);
        let root = t.root();
        prop_assert_eq!(merkle::merkle_root(&leaves), root);
        let other_root = Hash32(other_root);
        for (i, leaf) in leaves.iter().enumerate() {
            let p = t.prove(i as u64).unwrap();
            prop_assert!(merkle::verify_inclusion(&root, leaf, i as u64, &p));
            prop_assert!(other_root == root || !merkle::verify_inclusion(&other_root, leaf, i as u64, &p));
            for (j, other) in leaves.iter().enumerate() {
                if j != i {
                    prop_assert!(!merkle::verify_inclusion(&root, other, i as u64, &p));
                }
            }
        }
    }

    #[test]
    fn payout_every_proof_verifies_only_for_its_entry(amounts in prop::collection::vec(any::<u128>(), 1..30), other_root in any::<[u8; 32]>()) {
        let entries: Vec<PayoutEntry> = amounts.iter().enumerate().map(|(i, &a)| {
            let mut acct = [0u8; 20];
            acct[..8].copy_from_slice(&(i as u64).to_be_bytes());
            PayoutEntry { index: i as u64, account: EthAddress(acct), amount: a }
        }).collect();
        let t = PayoutTree::build(entries.clone()).unwrap();
        for (pos, e) in entries.iter().enumerate() {
            let p = t.proof_at(pos).unwrap();
            prop_assert!(payout::verify_payout(&t.root(), e, &p));
            prop_assert!(Hash32(other_root) == t.root() || !payout::verify_payout(&Hash32(other_root), e, &p));
            for (q, o) in entries.iter().enumerate() {
                if q != pos { prop_assert!(!payout::verify_payout(&t.root(), o, &p)); }
            }
        }
    }

    #[test]
    fn credential_single_character_changes_are_refused(seed in any::<u64>(), pos in any::<prop::sample::Index>(), c in "[0-9A-Za-z_]") {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let kinds = CredentialKind::ALL;
        let cred = Credential::generate(kinds[(seed % 4) as usize], &mut rng);
        let s = cred.expose_secret();
        let i = pos.index(s.len());
        let mut b = s.as_bytes().to_vec();
        let ch = c.as_bytes()[0];
        prop_assume!(b[i] != ch);
        b[i] = ch;
        let t = String::from_utf8(b).unwrap();
        prop_assert!(Credential::parse(&t).is_err());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Signed::<Receipt>::decode(&bytes);
        let _ = Signed::<Job>::decode(&bytes);
        let _ = Signed::<ModelManifest>::decode(&bytes);
        let _ = Signed::<Heartbeat>::decode(&bytes);
        let _ = Signed::<EnrollmentProof>::decode(&bytes);
        let _ = Signed::<BenchmarkRecord>::decode(&bytes);
        // With a valid envelope prefix the body decoder itself gets exercised too.
        let mut env = vec![1u8, 1];
        env.extend_from_slice(NodeKey::from_seed([0x42; 32]).public().as_bytes());
        env.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        env.extend_from_slice(&bytes);
        env.extend_from_slice(&[0u8; 64]);
        prop_assert!(Signed::<Receipt>::decode(&env).and_then(|s| s.verify(&NodeKey::from_seed([0x42; 32]).public())).is_err());
    }

    #[test]
    fn node_id_text_round_trips(bytes in any::<[u8; 32]>()) {
        let id = NodeId(bytes);
        let t = id.to_string();
        prop_assert_eq!(t.len(), 56);
        prop_assert_eq!(NodeId::parse(&t).unwrap(), id);
        prop_assert!(id.short_code().starts_with("B3IQ-"));
    }

    #[test]
    fn decay_is_monotone_and_close_to_exponential(v in 0u64..1_000_000_000_000, dt in 0u64..10_000_000, hl in 1u64..1_000_000) {
        let d = decay(v, dt, hl);
        prop_assert!(d <= v);
        prop_assert!(decay(v, dt + 1, hl) <= d);
        let exact = (v as f64) * (-(dt as f64) / (hl as f64)).exp2();
        prop_assert!((d as f64 - exact).abs() <= exact * 1e-5 + 2.0, "d={} exact={}", d, exact);
    }
}
