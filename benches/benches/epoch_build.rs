//! Epoch build (issue "Settlement end to end", performance part): 1,000,000 signed network
//! receipts from 100 nodes and 3 models go through [`EpochBuilder`] (rules, split, payout tree
//! and receipt tree) two ways:
//!
//! * `ingest_verified`: the control plane's path. Receipts were signature-checked when their
//!   upload was accepted, so the build wraps them with `VerifiedReceipt::assume_verified` and
//!   checks no signature again (target: under 10 s).
//! * `verify_parallel`: a builder fed from outside, `EpochBuilder::add_all` checking every
//!   signature on every core.
//!
//! Receipt generation and signing are not timed. Custom harness (one timed run per path, each
//! path's roots compared: both must agree):
//!
//!     cargo bench -p b3iq-benches --bench epoch_build --profile dev
//!
//! Env: `RECEIPTS` (1000000), `NODES` (100), `SKIP_PARALLEL=1` (only the ingest path). Appends one JSON line to
//! `benches/results/epoch_build.jsonl` and prints it.

use std::collections::BTreeMap;
use std::time::Instant;

use b3iq_core::digest::Sha256Digest;
use b3iq_core::payout::EthAddress;
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use b3iq_core::split::SplitPolicy;
use b3iq_core::{NodeKey, OperatingMode};
use b3iq_protocol::{EpochBuilder, EpochConfig, EpochSettlement, Payees, VerifiedReceipt};

const START: u64 = 1_800_000_000_000;
const MODELS: [&str; 3] = [
    "smollm2-135m-instruct:q4_1",
    "org/model-b:f16",
    "model-c:q8_0",
];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn receipt(key: &NodeKey, i: u64) -> SignedReceipt {
    let mut rid = [0u8; 16];
    rid[..8].copy_from_slice(&i.to_le_bytes());
    let salt = CommitmentSalt::from_bytes([(i % 251) as u8; 32]);
    let model = MODELS[(i % 3) as usize];
    Receipt {
        node_id: key.node_id(),
        request_id: RequestId(rid),
        model_id: model.to_string(),
        artifact_digest: Sha256Digest::of(model.as_bytes()),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Network,
        prompt_tokens: 100,
        completion_tokens: (i % 500) as u32 + 1,
        started_at_ms: START + i % 3_600_000,
        ttft_ms: 30,
        duration_ms: 400,
        price_micro_credits: 1_000 + i % 7_919,
        prompt_commitment: Commitment::prompt(&salt, b"p"),
        output_commitment: Commitment::output(&salt, b"o"),
        commitment_basis: None,
        attestation_digest: None,
    }
    .sign(key)
    .expect("sign")
}

fn receipts(n: u64, keys: &[NodeKey]) -> Vec<SignedReceipt> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u64;
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| receipt(&keys[(i % keys.len() as u64) as usize], i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer thread"))
            .collect()
    })
}

fn builder(keys: &[NodeKey]) -> EpochBuilder {
    let payees = Payees {
        hosts: keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.node_id(), EthAddress([(i % 200) as u8 + 1; 20])))
            .collect(),
        publishers: BTreeMap::from([
            (MODELS[0].to_string(), EthAddress([0xa0; 20])),
            (MODELS[1].to_string(), EthAddress([0xb0; 20])),
        ]),
        protocol: EthAddress([0xf0; 20]),
        verifier: EthAddress([0xf5; 20]),
    };
    let config = EpochConfig {
        epoch_id: 1,
        start_ms: START,
        end_ms: START + 3_600_000,
        token_units_per_micro_credit: 1_000_000_000_000,
        policy: SplitPolicy::default(),
    };
    EpochBuilder::new(config, payees).expect("builder")
}

fn timed(name: &str, f: impl FnOnce() -> EpochSettlement) -> (EpochSettlement, f64) {
    let t = Instant::now();
    let s = f();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {secs:.2} s ({} receipts, {} leaves)",
        s.receipt_count,
        s.leaf_count()
    );
    (s, secs)
}

fn main() {
    let n: u64 = env("RECEIPTS", 1_000_000);
    let nodes: u8 = env("NODES", 100);
    let keys: Vec<NodeKey> = (0..nodes)
        .map(|i| NodeKey::from_seed([i.wrapping_add(1); 32]))
        .collect();
    let t = Instant::now();
    let signed = receipts(n, &keys);
    eprintln!(
        "generated and signed {n} receipts in {:.1} s (not timed)",
        t.elapsed().as_secs_f64()
    );
    let copy = signed.clone();

    let (a, ingest_s) = timed("ingest_verified (no signature re-check)", || {
        let mut b = builder(&keys);
        let report = b.add_all_verified(signed.into_iter().map(VerifiedReceipt::assume_verified));
        assert!(
            report.rejected.is_empty(),
            "rejected: {:?}",
            report.rejected.first()
        );
        b.build().expect("build")
    });
    assert_eq!(a.receipt_count, n, "every receipt counted");
    let parallel_s = if env("SKIP_PARALLEL", 0u8) == 1 {
        None
    } else {
        let (b, secs) = timed("verify_parallel (every signature, every core)", || {
            let mut b = builder(&keys);
            let report = b.add_all(copy);
            assert!(
                report.rejected.is_empty(),
                "rejected: {:?}",
                report.rejected.first()
            );
            b.build().expect("build")
        });
        assert_eq!(
            (a.receipt_root, a.payout_root, a.total_payout),
            (b.receipt_root, b.payout_root, b.total_payout),
            "both paths give the same epoch"
        );
        Some((secs * 100.0).round() / 100.0)
    };

    let line = serde_json::json!({
        "bench": "epoch_build",
        "receipts": n,
        "nodes": nodes,
        "threads": std::thread::available_parallelism().map_or(1, |t| t.get()),
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "ingest_verified_s": (ingest_s * 100.0).round() / 100.0,
        "verify_parallel_s": parallel_s,
        "leaves": a.leaf_count(),
        "unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/epoch_build.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("{line}\n"));
    std::fs::write(&path, text).expect("write results");
}
