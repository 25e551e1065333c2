//! Core hot paths: sign, verify, batch verify, encode/decode, Merkle root of 1,000,000
//! receipts, proof verification, payout tree.
//!
//! `cargo bench -p b3iq-core` (all single-threaded). Targets on one core: batch verification
//! >= 30,000 receipts/s, root of 1,000,000 receipts < 1 s, one proof < 10 us.

use b3iq_core::digest::Sha256Digest;
use b3iq_core::identity::NodeKey;
use b3iq_core::merkle::{self, MerkleTree};
use b3iq_core::payout::{EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::receipt::{Commitment, CommitmentBasis, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use b3iq_core::{verify_batch, OperatingMode};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn receipt(key: &NodeKey, i: u64) -> Receipt {
    let salt = CommitmentSalt::from_bytes([7; 32]);
    let mut rid = [0u8; 16];
    rid[..8].copy_from_slice(&i.to_le_bytes());
    Receipt {
        node_id: key.node_id(),
        request_id: RequestId(rid),
        model_id: "smollm2-135m-instruct:q4_1".into(),
        artifact_digest: Sha256Digest::of(b"model"),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Network,
        prompt_tokens: 100 + i as u32,
        completion_tokens: 200,
        started_at_ms: 1_763_780_400_000 + i,
        ttft_ms: 40,
        duration_ms: 900,
        price_micro_credits: 1234,
        prompt_commitment: Commitment::prompt_token_ids(&salt, &[i as u32, 1, 2]).unwrap(),
        output_commitment: Commitment::completion_token_ids(&salt, &[(i >> 32) as u32, 3]).unwrap(),
        // version 2, what hosts write now
        commitment_basis: Some(CommitmentBasis::TokenIds),
        attestation_digest: None,
    }
}

fn signatures<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let key = NodeKey::from_seed([0x42; 32]);
    let pk = key.public();
    let r = receipt(&key, 1);
    let signed = r.clone().sign(&key).unwrap();
    let bytes = signed.encode();

    let mut g = c.benchmark_group(format!("{clock}/receipt"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter_batched(|| r.clone(), |r| r.sign(&key).unwrap(), BatchSize::SmallInput));
    g.bench_function("verify", |b| b.iter(|| signed.verify(black_box(&pk)).unwrap()));
    g.bench_function("encode", |b| b.iter(|| black_box(&signed).encode()));
    g.bench_function("decode", |b| b.iter(|| SignedReceipt::decode(black_box(&bytes)).unwrap()));
    g.bench_function("decode_and_verify", |b| b.iter(|| SignedReceipt::decode(black_box(&bytes)).unwrap().verify(&pk).unwrap()));
    g.bench_function("receipt_id", |b| b.iter(|| black_box(&signed).receipt_id()));
    g.finish();

    // Batch verification: receipts from 16 different nodes, 1024 per batch.
    let keys: Vec<NodeKey> = (0..16u8).map(|i| NodeKey::from_seed([i; 32])).collect();
    let batch: Vec<SignedReceipt> = (0..1024u64)
        .map(|i| {
            let k = &keys[(i % 16) as usize];
            receipt(k, i).sign(k).unwrap()
        })
        .collect();
    let mut g = c.benchmark_group(format!("{clock}/receipt_batch_verify"));
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("verify_batch_1024", |b| b.iter(|| verify_batch(black_box(&batch)).unwrap()));
    g.bench_function("verify_one_by_one_1024", |b| {
        b.iter(|| {
            for s in &batch {
                s.verify_self_certified().unwrap();
            }
        })
    });
    g.finish();
}

fn merkle_trees<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let key = NodeKey::from_seed([0x42; 32]);
    // Receipt ids of 1,000,000 receipts: blake3 of distinct receipt signing messages. Signing a
    // million receipts would dominate setup; ids are what the tree hashes.
    let ids: Vec<[u8; 32]> = (0..1_000_000u64)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(b"b3iq/receipt/v1");
            h.update(&i.to_le_bytes());
            h.update(key.node_id().as_bytes());
            *h.finalize().as_bytes()
        })
        .collect();
    let mut g = c.benchmark_group(format!("{clock}/merkle_1m"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("merkle_root_1m_receipts", |b| b.iter(|| merkle::merkle_root(black_box(&ids))));
    g.bench_function("tree_with_levels_1m_receipts", |b| b.iter(|| MerkleTree::from_leaves(black_box(&ids)).root()));
    g.finish();

    let tree = MerkleTree::from_leaves(&ids);
    let root = tree.root();
    let idx = 777_777u64;
    let proof = tree.prove(idx).unwrap();
    let mut g = c.benchmark_group(format!("{clock}/merkle_proof_1m"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("prove", |b| b.iter(|| tree.prove(black_box(idx)).unwrap()));
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| assert!(merkle::verify_inclusion(black_box(&root), black_box(&ids[idx as usize]), idx, black_box(&proof))))
    });
    g.finish();

    let entries: Vec<PayoutEntry> = (0..10_000u64)
        .map(|i| {
            let mut a = [0u8; 20];
            a[..8].copy_from_slice(&i.to_be_bytes());
            PayoutEntry { index: i, account: EthAddress(a), amount: u128::from(i) * 1_000_000 }
        })
        .collect();
    let pt = PayoutTree::build(entries.clone()).unwrap();
    let pproof = pt.proof_at(1234).unwrap();
    let mut g = c.benchmark_group(format!("{clock}/payout_10k"));
    g.sample_size(10);
    g.bench_function("build", |b| b.iter_batched(|| entries.clone(), |e| PayoutTree::build(e).unwrap().root(), BatchSize::LargeInput));
    g.bench_function("verify_proof", |b| b.iter(|| assert!(b3iq_core::payout::verify_payout(&pt.root(), &entries[1234], black_box(&pproof)))));
    g.finish();
}

/// The same work done directly with the underlying libraries, measured in the same run, so
/// the report can give ratios that survive a noisy, shared machine.
fn peers<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    use ed25519_dalek::{Signer as _, SigningKey};
    let sk = SigningKey::from_bytes(&[0x42; 32]);
    let vk = sk.verifying_key();
    let key = NodeKey::from_seed([0x42; 32]);
    let signed = receipt(&key, 1).sign(&key).unwrap();
    let msg = signed.signing_message();
    let sig = sk.sign(&msg);
    let mut g = c.benchmark_group(format!("{clock}/peer"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("ed25519_dalek_verify_strict_same_message", |b| b.iter(|| vk.verify_strict(black_box(&msg), black_box(&sig)).unwrap()));
    g.bench_function("blake3_20_node_hashes_65B", |b| {
        let buf = [7u8; 65];
        b.iter(|| {
            let mut h = [0u8; 32];
            for _ in 0..20 {
                let mut x = *black_box(&buf);
                x[1..33].copy_from_slice(&h);
                h = *blake3::hash(&x).as_bytes();
            }
            h
        })
    });
    let keys: Vec<SigningKey> = (0..16u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
    let msgs: Vec<Vec<u8>> = (0..1024u64).map(|i| {
        let k = NodeKey::from_seed([(i % 16) as u8; 32]);
        receipt(&k, i).sign(&k).unwrap().signing_message()
    }).collect();
    let sigs: Vec<ed25519_dalek::Signature> = msgs.iter().enumerate().map(|(i, m)| keys[i % 16].sign(m)).collect();
    let vks: Vec<ed25519_dalek::VerifyingKey> = (0..1024).map(|i| keys[i % 16].verifying_key()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    g.throughput(Throughput::Elements(1024));
    g.bench_function("ed25519_dalek_verify_batch_1024", |b| b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &vks).unwrap()));
    g.finish();
}

/// Per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`): what one core spends, excluding time the
/// thread waits for a CPU on a machine shared with other builds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns (cpu)")
        } else if ns < 1e6 {
            (1e-3, "µs (cpu)")
        } else if ns < 1e9 {
            (1e-6, "ms (cpu)")
        } else {
            (1e-9, "s (cpu)")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => n as f64,
        };
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v);
        "elem/s (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

fn wall_clock(c: &mut Criterion) {
    signatures(c, "wall");
    merkle_trees(c, "wall");
    peers(c, "wall");
}

fn cpu_clock(c: &mut Criterion<ThreadCpu>) {
    signatures(c, "cpu");
    merkle_trees(c, "cpu");
    peers(c, "cpu");
}

criterion_group!(wall, wall_clock);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = cpu_clock
}
criterion_main!(wall, cpu);
