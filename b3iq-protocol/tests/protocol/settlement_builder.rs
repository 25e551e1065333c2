//! The settlement builder without a chain: determinism, duplicates, conflicts, rejections,
//! sums, proofs, and the golden payout root in testdata/vectors/protocol/.

use std::collections::BTreeMap;
use std::path::PathBuf;

use b3iq_core::digest::Sha256Digest;
use b3iq_core::payout::{verify_payout, EthAddress};
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use b3iq_core::split::{Recipient, SplitPolicy};
use b3iq_core::{NodeKey, OperatingMode};
use b3iq_protocol::settlement::Added;
use b3iq_protocol::{EpochBuilder, EpochConfig, Payees, ProtocolError};

const START: u64 = 1_800_000_000_000;
const END: u64 = START + 3_600_000;

pub(crate) fn receipt(
    key: &NodeKey,
    request: u8,
    model: &str,
    started_at_ms: u64,
    price: u64,
) -> SignedReceipt {
    let salt = CommitmentSalt::from_bytes([request; 32]);
    Receipt {
        node_id: key.node_id(),
        request_id: RequestId([request; 16]),
        model_id: model.to_string(),
        artifact_digest: Sha256Digest::of(model.as_bytes()),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Network,
        prompt_tokens: 100,
        completion_tokens: u32::from(request),
        started_at_ms,
        ttft_ms: 30,
        duration_ms: 400,
        price_micro_credits: price,
        prompt_commitment: Commitment::prompt(&salt, b"p"),
        output_commitment: Commitment::output(&salt, b"o"),
        commitment_basis: None,
        attestation_digest: None,
    }
    .sign(key)
    .unwrap()
}

fn addr(b: u8) -> EthAddress {
    EthAddress([b; 20])
}

fn keys() -> Vec<NodeKey> {
    (1u8..=3).map(|i| NodeKey::from_seed([i; 32])).collect()
}

fn payees(keys: &[NodeKey]) -> Payees {
    Payees {
        hosts: keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.node_id(), addr(0x10 + i as u8)))
            .collect(),
        publishers: BTreeMap::from([
            ("model-a:q4".to_string(), addr(0xa0)),
            ("org/model-b:f16".to_string(), addr(0xb0)),
        ]),
        protocol: addr(0xf0),
        verifier: addr(0xf5),
    }
}

fn config() -> EpochConfig {
    EpochConfig {
        epoch_id: 7,
        start_ms: START,
        end_ms: END,
        token_units_per_micro_credit: 1_000_000_000_000,
        policy: SplitPolicy::default(),
    }
}

/// The fixed receipt set of the golden vector.
fn fixed_set() -> Vec<SignedReceipt> {
    let k = keys();
    vec![
        receipt(&k[0], 1, "model-a:q4", START, 1_234_567),
        receipt(&k[0], 2, "model-a:q4", START + 10, 89),
        receipt(&k[0], 3, "model-c:q8", START + 20, 5_000_000),
        receipt(&k[1], 4, "org/model-b:f16", START + 30, 42_424_242),
        receipt(&k[1], 5, "model-a:q4", START + 40, 1),
        receipt(&k[2], 6, "model-c:q8", END - 1, 999_999_999),
    ]
}

#[test]
fn same_receipts_in_any_order_give_the_same_roots() {
    let set = fixed_set();
    let build = |rs: Vec<SignedReceipt>| {
        let mut b = EpochBuilder::new(config(), payees(&keys())).unwrap();
        let rep = b.add_all(rs);
        assert!(rep.rejected.is_empty());
        b.build().unwrap()
    };
    let a = build(set.clone());
    let mut rev = set.clone();
    rev.reverse();
    let b = build(rev);
    let mut rotated = set.clone();
    rotated.rotate_left(2);
    rotated.extend(set.iter().cloned()); // duplicates too
    let c = build(rotated);
    for other in [&b, &c] {
        assert_eq!(a.payout_root, other.payout_root);
        assert_eq!(a.receipt_root, other.receipt_root);
        assert_eq!(a.entries(), other.entries());
    }
    assert_eq!(a.receipt_count, 6);
}

#[test]
fn leaves_sum_to_the_receipt_total_and_every_proof_verifies() {
    let mut b = EpochBuilder::new(config(), payees(&keys())).unwrap();
    b.add_all(fixed_set());
    let e = b.build().unwrap();
    let micro: u128 = fixed_set()
        .iter()
        .map(|r| u128::from(r.body().price_micro_credits))
        .sum();
    assert_eq!(e.total_micro_credits, micro);
    assert_eq!(e.total_payout, micro * 1_000_000_000_000);
    assert_eq!(
        e.entries().iter().map(|x| x.amount).sum::<u128>(),
        e.total_payout
    );
    // 3 hosts + 2 publishers + protocol + verifier.
    assert_eq!(e.leaf_count(), 7);
    for (i, entry) in e.entries().iter().enumerate() {
        assert_eq!(entry.index, i as u64, "indices are dense, in account order");
        let proof = e.proof(entry.index).unwrap();
        assert!(verify_payout(&e.payout_root, entry, &proof));
        let mut wrong = *entry;
        wrong.amount += 1;
        assert!(!verify_payout(&e.payout_root, &wrong, &proof));
    }
    // Host 1 earned model-a (with publisher) and model-c (no publisher).
    let k = keys();
    let t_a = 1_234_567u64 + 89;
    let t_c = 5_000_000u64;
    let host_a = t_a - t_a / 10 - t_a * 15 / 100 - t_a * 5 / 100;
    let host_c = t_c - t_c / 10 - t_c * 15 / 100 - t_c * 5 / 100;
    let host1 = e.entry_for(&addr(0x10)).unwrap();
    assert_eq!(
        host1.amount,
        u128::from(host_a + host_c) * 1_000_000_000_000
    );
    assert_eq!(e.node_totals[&k[0].node_id()], t_a + t_c);
    // model-c has no publisher: its 10 % went to the protocol (the default policy).
    assert!(!e.publisher_totals.contains_key("model-c:q8"));
    assert_eq!(
        SplitPolicy::default().no_publisher_to(),
        Recipient::Protocol
    );
    // Claim file round-trips through JSON.
    let file = e.claim_file().unwrap();
    let json = serde_json::to_string(&file).unwrap();
    let back: b3iq_protocol::settlement::ClaimFile = serde_json::from_str(&json).unwrap();
    assert_eq!(back, file);
}

#[test]
fn bad_receipts_are_refused_and_change_nothing() {
    let k = keys();
    let mut b = EpochBuilder::new(config(), payees(&k)).unwrap();
    assert_eq!(
        b.add(receipt(&k[0], 1, "model-a:q4", START, 10)).unwrap(),
        Added::New
    );
    assert_eq!(
        b.add(receipt(&k[0], 1, "model-a:q4", START, 10)).unwrap(),
        Added::Duplicate
    );
    // Boundaries: start inclusive, end exclusive.
    assert!(matches!(
        b.add(receipt(&k[0], 2, "model-a:q4", START - 1, 10)),
        Err(ProtocolError::OutsideEpoch { .. })
    ));
    assert!(matches!(
        b.add(receipt(&k[0], 3, "model-a:q4", END, 10)),
        Err(ProtocolError::OutsideEpoch { .. })
    ));
    // A receipt re-signed by another key (node id mismatch) or with a tampered body.
    let body = receipt(&k[0], 4, "model-a:q4", START, 10).into_body();
    let other_sig = receipt(&k[1], 4, "model-a:q4", START, 10);
    let forged =
        b3iq_core::Signed::from_parts(body.clone(), k[1].public(), *other_sig.signature()).unwrap();
    assert!(matches!(
        b.add(forged),
        Err(ProtocolError::InvalidReceiptSignature { .. })
    ));
    let good = receipt(&k[0], 5, "model-a:q4", START, 10);
    let mut tampered = good.body().clone();
    tampered.price_micro_credits = 10_000;
    let tampered =
        b3iq_core::Signed::from_parts(tampered, k[0].public(), *good.signature()).unwrap();
    assert!(matches!(
        b.add(tampered),
        Err(ProtocolError::InvalidReceiptSignature { .. })
    ));
    // Unknown host.
    let stranger = NodeKey::from_seed([99; 32]);
    assert!(matches!(
        b.add(receipt(&stranger, 6, "model-a:q4", START, 10)),
        Err(ProtocolError::UnknownHost { .. })
    ));
    // Same request, different content: the smaller receipt id is kept, whatever the order.
    let x = receipt(&k[1], 7, "model-a:q4", START + 1, 10);
    let y = receipt(&k[1], 7, "model-a:q4", START + 2, 20);
    let (small, big) = if x.receipt_id() < y.receipt_id() {
        (x, y)
    } else {
        (y, x)
    };
    let mut b1 = EpochBuilder::new(config(), payees(&k)).unwrap();
    assert_eq!(b1.add(big.clone()).unwrap(), Added::New);
    assert_eq!(b1.add(small.clone()).unwrap(), Added::Conflict);
    let e1 = b1.build().unwrap();
    let mut b2 = EpochBuilder::new(config(), payees(&k)).unwrap();
    b2.add(small.clone()).unwrap();
    b2.add(big.clone()).unwrap();
    let e2 = b2.build().unwrap();
    assert_eq!(e1.payout_root, e2.payout_root);
    assert_eq!(e1.conflicts, vec![(small.receipt_id(), big.receipt_id())]);
    assert_eq!(
        e1.total_micro_credits,
        u128::from(small.body().price_micro_credits)
    );
    // Only the valid receipt counted in `b`.
    assert_eq!(b.len(), 1);
    // An epoch with nothing to pay is refused.
    let mut free = EpochBuilder::new(config(), payees(&k)).unwrap();
    free.add(receipt(&k[0], 8, "model-a:q4", START, 0)).unwrap();
    assert!(matches!(
        free.build(),
        Err(ProtocolError::EmptyEpoch { .. })
    ));
    // Bad configs.
    let mut c = config();
    c.end_ms = c.start_ms;
    assert!(matches!(
        EpochBuilder::new(c, payees(&k)),
        Err(ProtocolError::InvalidEpochConfig(_))
    ));
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Golden {
    description: String,
    node_seeds_hex: Vec<String>,
    receipts_hex: Vec<String>,
    payees: Payees,
    config: EpochConfig,
    receipt_root: String,
    payout_root: String,
    total_payout: String,
    leaves: Vec<b3iq_core::payout::PayoutEntry>,
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/vectors/protocol/settlement_epoch.json")
}

#[test]
fn golden_payout_root_for_the_fixed_set() {
    let set = fixed_set();
    let mut b = EpochBuilder::new(config(), payees(&keys())).unwrap();
    b.add_all(set.clone());
    let e = b.build().unwrap();
    let computed = Golden {
        description: "Settlement epoch vector: signed receipts (b3iq-core wire form, hex) + payees + epoch config -> \
                      blake3 receipt root, keccak payout root (OpenZeppelin MerkleProof), leaves. \
                      Regenerate only on purpose with B3IQ_BLESS=1."
            .into(),
        node_seeds_hex: (1u8..=3).map(|i| hex::encode([i; 32])).collect(),
        receipts_hex: set.iter().map(|r| hex::encode(r.encode())).collect(),
        payees: payees(&keys()),
        config: config(),
        receipt_root: e.receipt_root.to_hex(),
        payout_root: e.payout_root.to_hex(),
        total_payout: e.total_payout.to_string(),
        leaves: e.entries().to_vec(),
    };
    let path = golden_path();
    if std::env::var_os("B3IQ_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the golden vector is committed; B3IQ_BLESS=1 regenerates it)",
            path.display()
        )
    });
    let golden: Golden = serde_json::from_str(&text).unwrap();
    // The stored receipts decode, verify and rebuild the stored roots (what other languages do).
    let decoded: Vec<SignedReceipt> = golden
        .receipts_hex
        .iter()
        .map(|h| SignedReceipt::decode(&hex::decode(h).unwrap()).unwrap())
        .collect();
    let mut b = EpochBuilder::new(golden.config.clone(), golden.payees.clone()).unwrap();
    let rep = b.add_all(decoded);
    assert!(rep.rejected.is_empty(), "{:?}", rep.rejected);
    let rebuilt = b.build().unwrap();
    assert_eq!(rebuilt.payout_root.to_hex(), golden.payout_root);
    assert_eq!(rebuilt.receipt_root.to_hex(), golden.receipt_root);
    assert_eq!(
        golden, computed,
        "the fixed set no longer gives the golden roots"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const MODELS: [&str; 3] = ["model-a:q4", "org/model-b:f16", "model-c:q8"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        /// For any receipt set: the leaves sum exactly to the receipts' total times the factor,
        /// every proof verifies, and shuffling (with duplicates) changes nothing.
        #[test]
        fn any_epoch_is_exact_and_order_independent(
            specs in proptest::collection::vec((0usize..3, 0usize..3, 1u64..5_000_000_000u64), 1..24),
            rotate in 0usize..24,
        ) {
            let k = keys();
            let receipts: Vec<SignedReceipt> = specs
                .iter()
                .enumerate()
                .map(|(i, (node, model, price))| receipt(&k[*node], i as u8, MODELS[*model], START + i as u64, *price))
                .collect();
            let total: u128 = specs.iter().map(|s| u128::from(s.2)).sum();
            let mut b = EpochBuilder::new(config(), payees(&k)).unwrap();
            b.add_all(receipts.clone());
            let e = b.build().unwrap();
            prop_assert_eq!(e.total_micro_credits, total);
            prop_assert_eq!(e.entries().iter().map(|x| x.amount).sum::<u128>(), total * 1_000_000_000_000);
            for entry in e.entries() {
                prop_assert!(verify_payout(&e.payout_root, entry, &e.proof(entry.index).unwrap()));
            }
            let mut shuffled = receipts.clone();
            shuffled.rotate_left(rotate % receipts.len());
            shuffled.reverse();
            shuffled.push(receipts[0].clone());
            let mut b2 = EpochBuilder::new(config(), payees(&k)).unwrap();
            b2.add_all(shuffled);
            let e2 = b2.build().unwrap();
            prop_assert_eq!(e.payout_root, e2.payout_root);
            prop_assert_eq!(e.receipt_root, e2.receipt_root);
        }
    }
}

/// `add_all` checks signatures on several threads: a batch large enough to be split reports
/// each forged receipt at its own position, and the rest build the same epoch as the path that
/// trusts ingest-time checks (`add_all_verified`).
#[test]
fn parallel_verification_keeps_positions_and_matches_the_ingest_verified_path() {
    let k = keys();
    let mut batch: Vec<SignedReceipt> = (0..3000u32)
        .map(|i| {
            let key = &k[(i % 3) as usize];
            let salt = CommitmentSalt::from_bytes([(i % 251) as u8; 32]);
            let mut rid = [0u8; 16];
            rid[..4].copy_from_slice(&i.to_le_bytes());
            Receipt {
                node_id: key.node_id(),
                request_id: RequestId(rid),
                model_id: "model-a:q4".into(),
                artifact_digest: Sha256Digest::of(b"model-a:q4"),
                backend: "llama.cpp".into(),
                mode: OperatingMode::Network,
                prompt_tokens: 100,
                completion_tokens: i,
                started_at_ms: START + u64::from(i),
                ttft_ms: 30,
                duration_ms: 400,
                price_micro_credits: 1_000 + u64::from(i),
                prompt_commitment: Commitment::prompt(&salt, b"p"),
                output_commitment: Commitment::output(&salt, b"o"),
                commitment_basis: None,
                attestation_digest: None,
            }
            .sign(key)
            .unwrap()
        })
        .collect();
    let honest: Vec<SignedReceipt> = batch.clone();
    let forged_at = [7usize, 1500, 2999];
    for &i in &forged_at {
        let mut body = batch[i].body().clone();
        body.price_micro_credits += 1;
        batch[i] =
            b3iq_core::Signed::from_parts(body, k[i % 3].public(), *batch[i].signature()).unwrap();
    }
    let mut b = EpochBuilder::new(config(), payees(&k)).unwrap();
    let report = b.add_all(batch);
    let positions: Vec<usize> = report.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, forged_at);
    assert!(report
        .rejected
        .iter()
        .all(|(_, e)| matches!(e, ProtocolError::InvalidReceiptSignature { .. })));
    assert_eq!(report.accepted, 3000 - 3);
    let parallel = b.build().unwrap();

    let kept = honest
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !forged_at.contains(i))
        .map(|(_, r)| b3iq_protocol::VerifiedReceipt::assume_verified(r));
    let mut b = EpochBuilder::new(config(), payees(&k)).unwrap();
    assert_eq!(b.add_all_verified(kept).accepted, 3000 - 3);
    let trusted = b.build().unwrap();
    assert_eq!(parallel.payout_root, trusted.payout_root);
    assert_eq!(parallel.receipt_root, trusted.receipt_root);
    assert_eq!(parallel.total_payout, trusted.total_payout);
}
