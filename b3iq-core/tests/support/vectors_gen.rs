//! Golden-vector generator shared by `examples/gen-vectors.rs` (writes the files) and
//! `tests/vectors.rs` (regenerates in memory and compares with the committed files).
//!
//! Everything here is deterministic: keys come from fixed seeds, credentials from a seeded
//! ChaCha20 rng, and JSON objects are written with sorted keys.

#![allow(dead_code)]

use b3iq_core::attestation::{
    token_commitment, InferenceAttestation, RuntimeFingerprint, SamplerSpec, VerdictOutcome,
    VerificationVerdict,
};
use b3iq_core::benchmark::{BenchmarkRecord, ConcurrencyPoint};
use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::{EnrollmentProof, Nonce};
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::identity::{NodeId, NodeKey};
use b3iq_core::job::{Job, JobId, JobKind};
use b3iq_core::manifest::{ManifestArtifact, MemoryBand, ModelManifest};
use b3iq_core::merkle::{self, MerkleTree};
use b3iq_core::payout::{EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{
    text_bytes, token_ids_bytes, Commitment, CommitmentSalt, NodeSalt, Receipt, RequestId, ServedContent, ServedRequest,
};
use b3iq_core::split::{Recipient, SplitPolicy};
use b3iq_core::{Hash32, OperatingMode, Signed, SignedKind};
use rand_chacha::rand_core::SeedableRng;
use serde_json::{json, Value};

/// Seeds of the fixed keys in `keys.json`.
pub fn key_seeds() -> Vec<(&'static str, [u8; 32])> {
    let mut counting = [0u8; 32];
    for (i, b) in counting.iter_mut().enumerate() {
        *b = i as u8;
    }
    vec![("zero", [0u8; 32]), ("ones", [1u8; 32]), ("node", [0x42; 32]), ("control_plane", [0xc0; 32]), ("control_plane_next", [0xc1; 32]), ("counting", counting)]
}

fn key(name: &str) -> NodeKey {
    let seed = key_seeds().into_iter().find(|(n, _)| *n == name).expect("known key").1;
    NodeKey::from_seed(seed)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    s.push('\n');
    s
}

fn keys_json() -> Value {
    let keys: Vec<Value> = key_seeds()
        .into_iter()
        .map(|(name, seed)| {
            let k = NodeKey::from_seed(seed);
            let id = k.node_id();
            let msg = b"b3iq test message";
            json!({
                "name": name,
                "secret_seed_hex": hex::encode(seed),
                "public_key_hex": k.public().to_hex(),
                "node_id": id.to_string(),
                "node_id_hex": hex::encode(id.as_bytes()),
                "short_code": id.short_code(),
                "key_file": String::from_utf8(k.to_key_file().to_vec()).expect("utf8"),
                "raw_message_hex": hex::encode(msg),
                "raw_signature_hex": k.sign_raw(msg).to_hex(),
            })
        })
        .collect();
    let good = key("node").node_id().to_string();
    let mut pad_bit = good.clone();
    let last = pad_bit.pop().expect("non-empty");
    // Flip the lowest of the 4 unused bits of the last base32 character.
    const B32: &str = "abcdefghijklmnopqrstuvwxyz234567";
    let v = B32.find(last).expect("base32");
    pad_bit.push(B32.as_bytes()[v ^ 1] as char);
    let invalid_node_ids: Vec<Value> = [
        ("missing_prefix", good[4..].to_string()),
        ("uppercase", good.to_uppercase()),
        ("wrong_prefix", format!("b3x_{}", &good[4..])),
        ("too_short", good[..good.len() - 1].to_string()),
        ("too_long", format!("{good}a")),
        ("bad_character", format!("{}1", &good[..good.len() - 1])),
        ("padding", format!("{good}=")),
        ("nonzero_trailing_bits", pad_bit),
        ("empty", String::new()),
    ]
    .into_iter()
    .map(|(name, text)| {
        let err = NodeId::parse(&text).expect_err("must be invalid");
        json!({"name": name, "text": text, "error": err.code()})
    })
    .collect();
    json!({
        "description": "Ed25519 keys from fixed 32-byte seeds. node_id = blake3(\"b3iq/node-id/v1\" || public_key), text form b3n_ + lowercase RFC 4648 base32 without padding. raw_signature is Ed25519 over raw_message (no domain tag).",
        "node_id_domain": "b3iq/node-id/v1",
        "keys": keys,
        "invalid_node_ids": invalid_node_ids,
    })
}

/// Sample bodies per kind: (case name, signer key name, body).
pub fn sample_receipts() -> Vec<(&'static str, &'static str, Receipt, Option<Value>)> {
    let node = key("node");
    let salt = CommitmentSalt::from_bytes([0x5a; 32]);
    let prompt = "What is the capital of France?";
    let output = "The capital of France is Paris.";
    let opening = json!({
        "salt_hex": hex::encode(salt.expose_secret()),
        "prompt_utf8": prompt,
        "output_utf8": output,
        "prompt_tag": "b3iq/commit/prompt/v1",
        "output_tag": "b3iq/commit/output/v1",
    });
    let base = Receipt {
        node_id: node.node_id(),
        request_id: RequestId([0x11; 16]),
        model_id: "smollm2-135m-instruct:q4_1".into(),
        artifact_digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Local,
        prompt_tokens: 31,
        completion_tokens: 9,
        started_at_ms: 1_763_780_400_000,
        ttft_ms: 42,
        duration_ms: 315,
        price_micro_credits: 0,
        prompt_commitment: Commitment::prompt(&salt, prompt.as_bytes()),
        output_commitment: Commitment::output(&salt, output.as_bytes()),
        commitment_basis: None,
        attestation_digest: None,
    };
    let mut network = base.clone();
    network.request_id = RequestId([0x22; 16]);
    network.mode = OperatingMode::Network;
    network.price_micro_credits = 1_234_567;
    network.prompt_tokens = u32::MAX;
    network.completion_tokens = 0;
    network.started_at_ms = u64::MAX;
    vec![("local_free", "node", base, Some(json!({"commitment_opening": opening}))), ("network_paid_extremes", "node", network, None)]
}

/// The node salt of the version-2 receipt vectors.
pub const V2_NODE_SALT: [u8; 32] = [0x5b; 32];

/// One version-2 vector: what was served, at which prices.
struct V2Case {
    name: &'static str,
    request: u8,
    mode: OperatingMode,
    basis: V2Content,
    prices: PriceSchedule,
    started_at_ms: u64,
    attestation: Option<Hash32>,
}

enum V2Content {
    Ids(Vec<u32>, Vec<u32>),
    Text(&'static str, &'static str, u32, u32),
}

/// Version-2 receipts (`receipt_v2.json`): both commitment bases, every mode, and price
/// rounding cases. Each case carries its price schedule and the full opening.
pub fn sample_receipts_v2() -> Vec<(String, &'static str, Receipt, Option<Value>)> {
    let node = key("node");
    let node_salt = NodeSalt::from_bytes(V2_NODE_SALT);
    // Made-up token ids, shaped like a short templated chat exchange.
    let prompt_ids = vec![1, 9690, 198, 2683, 359, 253, 5356, 30, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198];
    let completion_ids = vec![504, 3575, 282, 4649, 314, 7042, 30, 2];
    let cases = vec![
        V2Case {
            name: "token_ids_local_free",
            request: 0x31,
            mode: OperatingMode::Local,
            basis: V2Content::Ids(prompt_ids.clone(), completion_ids.clone()),
            prices: PriceSchedule::FREE,
            started_at_ms: 1_763_780_400_000,
            attestation: None,
        },
        V2Case {
            // 1 prompt token at 1 micro-credit per 1M tokens: ceil(1 / 1e6) = 1, never 0.
            name: "token_ids_managed_one_token_rounds_up",
            request: 0x32,
            mode: OperatingMode::Managed,
            basis: V2Content::Ids(vec![42], vec![]),
            prices: PriceSchedule { prompt_per_1m_tokens: 1, completion_per_1m_tokens: 1, per_request: 0 },
            started_at_ms: 1_763_780_401_000,
            attestation: None,
        },
        V2Case {
            // 26 * 250_000 + 8 * 500_000 = 10_500_000: exactly 10.5 rounds up to 11.
            name: "token_ids_network_half_rounds_up",
            request: 0x33,
            mode: OperatingMode::Network,
            basis: V2Content::Ids(prompt_ids.clone(), completion_ids.clone()),
            prices: PriceSchedule { prompt_per_1m_tokens: 250_000, completion_per_1m_tokens: 500_000, per_request: 0 },
            started_at_ms: 1_763_780_402_000,
            attestation: Some(Hash32(*blake3::hash(b"b3iq test attestation").as_bytes())),
        },
        V2Case {
            // 4 * 250_000 + 2 * 500_000 = 2_000_000: exact, no rounding; plus a 1000 fee.
            name: "token_ids_network_exact_with_fee",
            request: 0x34,
            mode: OperatingMode::Network,
            basis: V2Content::Ids(vec![1, 2, 3, 4], vec![5, 6]),
            prices: PriceSchedule { prompt_per_1m_tokens: 250_000, completion_per_1m_tokens: 500_000, per_request: 1_000 },
            started_at_ms: 1_763_780_403_000,
            attestation: None,
        },
        V2Case {
            // An OpenAI-compatible upstream: text basis, counts as reported.
            // 250 + ceil((31 * 100 + 9 * 300) / 1e6) = 250 + 1.
            name: "utf8_text_network_fee",
            request: 0x35,
            mode: OperatingMode::Network,
            basis: V2Content::Text("What is the capital of France?", "The capital of France is Paris.", 31, 9),
            prices: PriceSchedule { prompt_per_1m_tokens: 100, completion_per_1m_tokens: 300, per_request: 250 },
            started_at_ms: 1_763_780_404_000,
            attestation: None,
        },
        V2Case {
            // Largest counts; 7 + 3 * (2^32 - 1); started_at_ms = u64::MAX; empty texts.
            name: "utf8_text_extremes",
            request: 0x36,
            mode: OperatingMode::Managed,
            basis: V2Content::Text("", "", u32::MAX, u32::MAX),
            prices: PriceSchedule { prompt_per_1m_tokens: 1_000_000, completion_per_1m_tokens: 2_000_000, per_request: 7 },
            started_at_ms: u64::MAX,
            attestation: Some(Hash32([0xff; 32])),
        },
    ];
    cases
        .into_iter()
        .map(|c| {
            let request_id = RequestId([c.request; 16]);
            let content = match &c.basis {
                V2Content::Ids(p, o) => ServedContent::TokenIds { prompt: p, completion: o },
                V2Content::Text(p, o, pt, ot) => ServedContent::Utf8Text { prompt: p, completion: o, prompt_tokens: *pt, completion_tokens: *ot },
            };
            let served = ServedRequest {
                node_id: node.node_id(),
                request_id,
                model_id: "smollm2-135m-instruct:q4_1".into(),
                artifact_digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
                backend: if matches!(c.basis, V2Content::Text(..)) { "openai-compatible".into() } else { "llama.cpp".into() },
                mode: c.mode,
                started_at_ms: c.started_at_ms,
                ttft_ms: 42,
                duration_ms: 315,
                content,
                attestation_digest: c.attestation,
            };
            let receipt = Receipt::new_v2(served, &c.prices, &node_salt).expect("sample receipt");
            let salt = node_salt.receipt_salt(&request_id);
            let basis = content.basis();
            let (prompt_tag, completion_tag) = basis.role_tags();
            let mut opening = json!({
                "node_salt_hex": hex::encode(V2_NODE_SALT),
                "salt_tag": "b3iq/receipt-salt/v1",
                "receipt_salt_hex": hex::encode(salt.expose_secret()),
                "commitment_basis": basis.as_str(),
                "prompt_tag": String::from_utf8(prompt_tag.to_vec()).expect("ascii"),
                "completion_tag": String::from_utf8(completion_tag.to_vec()).expect("ascii"),
            });
            match &c.basis {
                V2Content::Ids(p, o) => {
                    opening["prompt_token_ids"] = json!(p);
                    opening["completion_token_ids"] = json!(o);
                    opening["prompt_data_hex"] = json!(hex::encode(token_ids_bytes(p).expect("short")));
                    opening["completion_data_hex"] = json!(hex::encode(token_ids_bytes(o).expect("short")));
                }
                V2Content::Text(p, o, ..) => {
                    opening["prompt_utf8"] = json!(p);
                    opening["completion_utf8"] = json!(o);
                    opening["prompt_data_hex"] = json!(hex::encode(text_bytes(p).expect("short")));
                    opening["completion_data_hex"] = json!(hex::encode(text_bytes(o).expect("short")));
                }
            }
            assert_eq!(receipt.commitment_basis, Some(basis));
            let price = c.prices.price(u64::from(receipt.prompt_tokens), u64::from(receipt.completion_tokens)).expect("fits");
            assert_eq!(receipt.price_micro_credits, price);
            let extra = json!({
                "commitment_opening": opening,
                "price": {
                    "schedule": serde_json::to_value(c.prices).expect("json"),
                    "prompt_tokens": receipt.prompt_tokens,
                    "completion_tokens": receipt.completion_tokens,
                    "price_micro_credits": price,
                },
            });
            (c.name.to_string(), "node", receipt, Some(extra))
        })
        .collect()
}

fn sample_jobs() -> Vec<(String, &'static str, Job)> {
    let cp = key("control_plane");
    let node = key("node");
    let kinds = vec![
        JobKind::InstallModelProfile { profile_id: "smollm2-135m-q4_1".into() },
        JobKind::RemoveModelProfile { profile_id: "smollm2-135m-q4_1".into() },
        JobKind::RunBenchmark { suite: "quick".into() },
        JobKind::BuildSupportBundle {},
        JobKind::RestartRuntime {},
        JobKind::ChangeMode { mode: OperatingMode::Network },
        JobKind::RotateIssuerKey { new_issuer: key("control_plane_next").public() },
        JobKind::Update { version: Some("0.2.0".into()) },
        JobKind::LoadModel { model: "smollm2-135m-q4_1".into() },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let job = Job {
                job_id: JobId([i as u8 + 1; 16]),
                audience: node.node_id(),
                issuer: cp.public(),
                issued_at_ms: 1_763_780_400_000,
                expires_at_ms: 1_763_780_400_000 + 600_000,
                sequence: 100 + i as u64,
                kind: kind.clone(),
            };
            (kind.name().to_string(), "control_plane", job)
        })
        .collect()
}

fn sample_manifest() -> ModelManifest {
    ModelManifest {
        model_id: "smollm2-135m-instruct:q4_1".into(),
        display_name: "SmolLM2 135M Instruct (Q4_1)".into(),
        artifacts: vec![ManifestArtifact {
            name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
            size_bytes: 98_362_432,
        }],
        license: "Apache-2.0".into(),
        runtime_profile: "llama.cpp/gguf".into(),
        memory: MemoryBand { min_ram_mib: 256, recommended_ram_mib: 512, min_vram_mib: 0 },
        context_window: 8192,
        intended_use: "Small instruction-following model for tests, demos and smoke checks.".into(),
        created_at_ms: 1_763_780_400_000,
    }
}

fn sample_runtime() -> RuntimeFingerprint {
    RuntimeFingerprint {
        backend: "llama.cpp/llama-cpp-sys-2 0.1.161".into(),
        ggml_flags: "llamafile=on,fa=auto,kv_unified=off".into(),
        isa: "x86-64-v3".into(),
        threads: 2,
    }
}

/// An attestation over 40 generated tokens (two proofs: 32 + 8 positions of a width-16
/// hidden state whose values are a fixed function of their index).
fn sample_attestation(greedy: bool) -> InferenceAttestation {
    let salt = Hash32([0x5a; 32]);
    let prompt: Vec<u32> = vec![1, 9690, 198, 2683, 314, 253, 1314, 30];
    let completion: Vec<u32> = (0..40).map(|i| 100 + i * 7).collect();
    let hidden: Vec<f32> = (0..40 * 16)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
        .collect();
    let proofs = b3iq_core::fingerprint::commit_positions(&hidden, 16)
        .iter()
        .map(|p| {
            let mut b = Vec::new();
            p.encode(&mut b);
            b
        })
        .collect();
    InferenceAttestation {
        node_id: key("node").node_id(),
        request_id: RequestId([0x11; 16]),
        scheme: b3iq_core::fingerprint::SCHEME.into(),
        tolerance_profile: "cpu-same-isa-v1".into(),
        runtime: sample_runtime(),
        sampler: SamplerSpec {
            temperature: if greedy { 0.0 } else { 0.9 },
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            grammar_digest: None,
            seed_key_digest: (!greedy).then(|| Hash32(*blake3::hash(&[7; 32]).as_bytes())),
        },
        commitment_salt: salt,
        prompt_token_commitment: token_commitment(&salt, &prompt),
        output_token_commitment: token_commitment(&salt, &completion),
        completion_tokens: 40,
        proofs,
    }
}

fn sample_verdict(outcome: VerdictOutcome) -> VerificationVerdict {
    let a = Signed::sign(sample_attestation(false), &key("node")).expect("sign");
    VerificationVerdict {
        verifier: key("counting").node_id(),
        subject: key("node").node_id(),
        request_id: RequestId([0x11; 16]),
        attestation_digest: Hash32(a.object_hash()),
        tolerance_profile: "cpu-same-isa-v1".into(),
        outcome,
        metric: match outcome {
            VerdictOutcome::Pass => String::new(),
            _ => "exp_mismatches=97 mantissa_mean=3.10 mantissa_median=3.0 (profile cpu-same-isa-v1: <= 0, 0, 0)".into(),
        },
        positions: 40,
        boundary_events: 0,
        max_exp_mismatches: if outcome == VerdictOutcome::Pass { 0 } else { 97 },
        runtime: sample_runtime(),
        verified_at_ms: 1_763_780_520_000,
    }
}

fn sample_heartbeat() -> Heartbeat {
    Heartbeat {
        node_id: key("node").node_id(),
        sent_at_ms: 1_763_780_460_000,
        sequence: 7,
        mode: OperatingMode::Managed,
        health: HealthStatus::Healthy,
        counts: HeartbeatCounts {
            active_requests: 1,
            queued_requests: 2,
            completed_requests: 345,
            failed_requests: 3,
            generated_tokens: 98_765,
            uptime_s: 3_600,
        },
        model_inventory: vec![
            Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
            Sha256Digest::of(b"another model"),
        ],
        software_version: None,
    }
}

fn sample_enrollment() -> EnrollmentProof {
    let node = key("node");
    EnrollmentProof {
        node_id: node.node_id(),
        public_key: node.public(),
        audience: "control.b3iq.example".into(),
        nonce: Nonce([0x6e; 32]),
        signed_at_ms: 1_763_780_400_123,
    }
}

fn sample_benchmark() -> BenchmarkRecord {
    BenchmarkRecord {
        node_id: key("node").node_id(),
        hardware_fingerprint: Hash32(*blake3::hash(b"cpu:2 cores;ram:24GiB;gpu:none").as_bytes()),
        backend: "llama.cpp".into(),
        model_digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
        prompt_milli_tokens_per_s: 812_500,
        generation_milli_tokens_per_s: 95_250,
        concurrency: vec![
            ConcurrencyPoint { concurrency: 1, aggregate_milli_tokens_per_s: 95_250 },
            ConcurrencyPoint { concurrency: 2, aggregate_milli_tokens_per_s: 150_000 },
            ConcurrencyPoint { concurrency: 4, aggregate_milli_tokens_per_s: 201_000 },
        ],
        created_at_ms: 1_763_780_400_000,
    }
}

/// Outcome of decode + verify (with the given key) on some bytes.
pub fn outcome<T: SignedKind>(bytes: &[u8], signer: &b3iq_core::NodePublicKey) -> (bool, Option<&'static str>) {
    match Signed::<T>::decode(bytes) {
        Err(e) => (false, Some(e.code())),
        Ok(s) => match s.verify(signer) {
            Ok(()) => (true, None),
            Err(e) => (true, Some(e.code())),
        },
    }
}

fn negative_cases<T: SignedKind>(encoded: &[u8], signer: &b3iq_core::NodePublicKey) -> Vec<Value> {
    let n = encoded.len();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = encoded.to_vec();
    v[n - 1] ^= 0x01;
    cases.push(("flipped_last_signature_byte", v));
    let mut v = encoded.to_vec();
    v[n - 64 - 1] ^= 0x01;
    cases.push(("flipped_last_body_byte", v));
    let mut v = encoded.to_vec();
    v[38] ^= 0x80;
    cases.push(("flipped_first_body_byte", v));
    let mut v = encoded.to_vec();
    v[2] ^= 0x01;
    cases.push(("flipped_signer_byte", v));
    let mut v = encoded.to_vec();
    v.push(0);
    cases.push(("trailing_byte", v));
    cases.push(("truncated_by_one", encoded[..n - 1].to_vec()));
    cases.push(("empty", Vec::new()));
    let mut v = encoded.to_vec();
    v[0] = T::KIND.current_version() + 1;
    cases.push(("unknown_version", v));
    if T::KIND.current_version() > 1 {
        // The body of one version under another supported version's byte.
        let mut v = encoded.to_vec();
        v[0] = if v[0] == 1 { T::KIND.current_version() } else { 1 };
        cases.push(("other_supported_version", v));
    }
    let mut v = encoded.to_vec();
    v[1] = if v[1] == 1 { 2 } else { 1 };
    cases.push(("wrong_kind_byte", v));
    let mut v = encoded.to_vec();
    v[34..38].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("oversize_body_length", v));
    let mut v = encoded.to_vec();
    let len = u32::from_le_bytes([v[34], v[35], v[36], v[37]]);
    v[34..38].copy_from_slice(&(len - 1).to_le_bytes());
    cases.push(("body_length_minus_one", v));
    cases
        .into_iter()
        .map(|(name, bytes)| {
            let (decodes, err) = outcome::<T>(&bytes, signer);
            assert!(err.is_some(), "negative case {name} unexpectedly verified");
            json!({"name": name, "encoded_hex": hex::encode(&bytes), "decodes": decodes, "error": err})
        })
        .collect()
}

fn signed_case<T: SignedKind + serde::Serialize>(name: &str, signer_name: &str, body: T, extra: Option<Value>) -> (Value, Vec<u8>) {
    let k = key(signer_name);
    let s = Signed::sign(body, &k).expect("sample signs");
    let enc = s.encode();
    let mut case = json!({
        "name": name,
        "signer": signer_name,
        "signer_public_key_hex": k.public().to_hex(),
        "body": serde_json::to_value(s.body()).expect("json"),
        "body_hex": hex::encode(s.body_bytes()),
        "signing_message_hex": hex::encode(s.signing_message()),
        "signature_hex": s.signature().to_hex(),
        "encoded_hex": hex::encode(&enc),
        "object_hash_hex": hex::encode(s.object_hash()),
        "signed_json": serde_json::to_value(&s).expect("json"),
        "verifies": s.verify(&k.public()).is_ok(),
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            case[k] = v;
        }
    }
    (case, enc)
}

fn kind_file<T: SignedKind + serde::Serialize>(cases: Vec<(String, &'static str, T, Option<Value>)>) -> (Value, Vec<(String, Vec<u8>)>) {
    let kind = T::KIND;
    let version = cases.first().expect("at least one case").2.version();
    let mut out_cases = Vec::new();
    let mut seeds = Vec::new();
    let mut negatives = Vec::new();
    for (i, (name, signer, body, extra)) in cases.into_iter().enumerate() {
        assert_eq!(body.version(), version, "one version per file");
        let (case, enc) = signed_case(&name, signer, body, extra);
        if i == 0 {
            negatives = negative_cases::<T>(&enc, &key(signer).public());
        }
        seeds.push((name.clone(), enc));
        out_cases.push(case);
    }
    let v = json!({
        "kind": serde_json::to_value(kind).expect("json"),
        "kind_byte": kind.byte(),
        "version": version,
        "domain_tag": String::from_utf8(kind.domain_tag().to_vec()).expect("ascii"),
        "max_body_len": kind.max_body_len(),
        "cases": out_cases,
        "negative_cases_of_first": negatives,
    });
    (v, seeds)
}

/// A network receipt by `node` for request `0x11` (the sample attestation's), priced `price`,
/// naming `attestation` when given.
fn evidence_receipt(price: u64, attestation: Option<Hash32>) -> b3iq_core::receipt::SignedReceipt {
    let salt = CommitmentSalt::from_bytes([0x5b; 32]);
    let prompt: Vec<u32> = vec![1, 9690, 198, 2683, 314, 253, 1314, 30];
    let completion: Vec<u32> = (0..40).map(|i| 100 + i * 7).collect();
    Receipt {
        node_id: key("node").node_id(),
        request_id: RequestId([0x11; 16]),
        model_id: "smollm2-135m-instruct:q4_1".into(),
        artifact_digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").expect("digest"),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Network,
        prompt_tokens: 8,
        completion_tokens: 40,
        started_at_ms: 1_763_780_500_000,
        ttft_ms: 40,
        duration_ms: 400,
        price_micro_credits: price,
        prompt_commitment: Commitment::prompt_token_ids(&salt, &prompt).expect("ids"),
        output_commitment: Commitment::completion_token_ids(&salt, &completion).expect("ids"),
        commitment_basis: Some(b3iq_core::receipt::CommitmentBasis::TokenIds),
        attestation_digest: attestation,
    }
    .sign(&key("node"))
    .expect("sign")
}

/// `evidence.json`: dispute evidence (conflicting receipts, failed verification by two
/// verifiers), with its encoding, hash and what `check_evidence` says; negative cases with the
/// error code. Returns the file and the fuzz seeds.
fn evidence_json() -> (Value, Vec<(String, Vec<u8>)>) {
    use b3iq_core::evidence::{check_evidence, Evidence, EvidenceRules, EVIDENCE_DOMAIN_TAG, EVIDENCE_VERSION};
    let att = Signed::sign(sample_attestation(false), &key("node")).expect("sign");
    let digest = Hash32(att.object_hash());
    let verdict = |signer: &str| {
        let mut v = sample_verdict(VerdictOutcome::FailChunk(1));
        v.verifier = key(signer).node_id();
        Signed::sign(v, &key(signer)).expect("sign")
    };
    let fails = vec![verdict("counting"), verdict("ones")];
    let cases = vec![
        ("conflicting_receipts", Evidence::conflicting_receipts(evidence_receipt(10_500, None), evidence_receipt(21_000, None))),
        ("failed_verification", Evidence::failed_verification(evidence_receipt(10_500, Some(digest)), att.clone(), fails.clone())),
    ];
    let negatives = [
        ("one_fail_verdict", Evidence::failed_verification(evidence_receipt(10_500, Some(digest)), att.clone(), vec![fails[0].clone()])),
        ("same_receipt_twice", Evidence::ConflictingReceipts { a: evidence_receipt(10_500, None), b: evidence_receipt(10_500, None) }),
    ];
    let any = |_: &NodeId| true;
    let rules = EvidenceRules::default();
    let mut seeds = Vec::new();
    let mut out = Vec::new();
    for (name, e) in &cases {
        let subject = check_evidence(e, &rules, &any).expect("golden evidence checks");
        let enc = e.encode();
        seeds.push((name.to_string(), enc.clone()));
        out.push(json!({
            "name": name,
            "kind": subject.kind.as_str(),
            "node_id": subject.node_id.to_text(),
            "request_id": hex::encode(subject.request_id.0),
            "receipt_ids": subject.receipts.iter().map(|r| hex::encode(r.0)).collect::<Vec<_>>(),
            "encoded_hex": hex::encode(&enc),
            "evidence_hash_hex": subject.evidence_hash.to_hex(),
        }));
    }
    let neg: Vec<Value> = negatives
        .iter()
        .map(|(name, e)| {
            json!({
                "name": name,
                "encoded_hex": hex::encode(e.encode()),
                "decodes": Evidence::decode(&e.encode()).is_ok(),
                "error": Evidence::decode(&e.encode()).ok().map(|d| check_evidence(&d, &rules, &any).expect_err("negative").code()),
            })
        })
        .collect();
    let v = json!({
        "version": EVIDENCE_VERSION,
        "domain_tag": String::from_utf8(EVIDENCE_DOMAIN_TAG.to_vec()).expect("ascii"),
        "min_fail_verdicts": rules.min_fail_verdicts,
        "cases": out,
        "negative_cases": neg,
    });
    (v, seeds)
}

fn merkle_json() -> Value {
    let trees: Vec<Value> = (1..=17u32)
        .map(|n| {
            // Leaf i is (i + 1) bytes: 0xa0 + i repeated, so leaf lengths vary.
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| vec![0xa0u8.wrapping_add(i as u8); i as usize + 1]).collect();
            let t = MerkleTree::from_leaves(&leaves);
            let proofs: Vec<Value> = (0..n)
                .map(|i| {
                    let p = t.prove(u64::from(i)).expect("in range");
                    json!({"index": i, "siblings": p.siblings.iter().map(|h| h.to_hex()).collect::<Vec<_>>()})
                })
                .collect();
            json!({
                "leaf_count": n,
                "leaves_hex": leaves.iter().map(hex::encode).collect::<Vec<_>>(),
                "leaf_hashes": leaves.iter().map(|l| merkle::leaf_hash(l).to_hex()).collect::<Vec<_>>(),
                "root": t.root().to_hex(),
                "proofs": proofs,
            })
        })
        .collect();
    json!({
        "description": "blake3 Merkle trees, RFC 6962 shape. leaf_hash = blake3(0x00 || leaf), node = blake3(0x01 || left || right); the left subtree holds the largest power of two < n leaves. Proof siblings are listed from the leaf level up; verify with RFC 9162 section 2.1.3.2 using index and leaf_count.",
        "empty_root": merkle::empty_root().to_hex(),
        "trees": trees,
    })
}

fn payout_json() -> Value {
    let sizes = [1u64, 2, 3, 4, 5, 7, 8, 13];
    let trees: Vec<Value> = sizes
        .iter()
        .map(|&n| {
            let entries: Vec<PayoutEntry> = (0..n)
                .map(|i| {
                    let mut a = [0u8; 20];
                    a[0] = 0x10 + i as u8;
                    a[19] = 0xee - i as u8;
                    PayoutEntry { index: i * 3 + 1, account: EthAddress(a), amount: u128::from(i + 1) * 1_000_000_000_000_000_000 + u128::from(i) }
                })
                .collect();
            let t = PayoutTree::build(entries.clone()).expect("non-empty");
            let items: Vec<Value> = entries
                .iter()
                .enumerate()
                .map(|(pos, e)| {
                    json!({
                        "index": e.index,
                        "account": e.account.to_string(),
                        "amount": e.amount.to_string(),
                        "abi_encoded_hex": hex::encode(e.abi_encode()),
                        "leaf": e.leaf().to_hex(),
                        "proof": t.proof_at(pos).expect("in range").iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "entry_count": n,
                "root": t.root().to_hex(),
                "tree_nodes": t.nodes().iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
                "entries": items,
            })
        })
        .collect();
    json!({
        "description": "keccak256 payout trees compatible with OpenZeppelin MerkleProof.verify and StandardMerkleTree([uint256 index, address account, uint256 amount]). leaf = keccak256(keccak256(abi.encode(index, account, amount))); node = keccak256(sorted pair); leaves sorted ascending by hash, array layout tree[2n-2-i] = i-th sorted leaf, tree[k] = hash(tree[2k+1], tree[2k+2]); root = tree[0]. amount is a decimal string.",
        "trees": trees,
    })
}

fn split_json() -> Value {
    let totals: [u64; 14] = [0, 1, 2, 3, 7, 19, 99, 100, 101, 999, 1_000_001, 9_007_199_254_740_993, u64::MAX - 1, u64::MAX];
    let policies = [("default", SplitPolicy::default()), ("no_publisher_to_host", SplitPolicy::default().with_no_publisher_to(Recipient::Host).expect("valid"))];
    let mut cases = Vec::new();
    for (pname, p) in &policies {
        for &total in &totals {
            for has_publisher in [true, false] {
                let s = p.split(total, has_publisher);
                assert_eq!(s.sum(), u128::from(total));
                cases.push(json!({
                    "policy": pname,
                    "total": total.to_string(),
                    "has_publisher": has_publisher,
                    "host": s.host.to_string(),
                    "publisher": s.publisher.to_string(),
                    "protocol": s.protocol.to_string(),
                    "verifier": s.verifier.to_string(),
                }));
            }
        }
    }
    json!({
        "description": "Payment splits in integer micro-units. publisher, protocol and verifier parts are floor(total * bps / 10000); the host gets the rest. Without a publisher, the publisher part moves to policy.no_publisher_to. Amounts are decimal strings (they exceed 2^53).",
        "policies": policies.iter().map(|(n, p)| json!({"name": n, "policy": serde_json::to_value(p).expect("json")})).collect::<Vec<_>>(),
        "cases": cases,
    })
}

fn credentials_json() -> Value {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0xb3_1b);
    let mut valid = Vec::new();
    for kind in CredentialKind::ALL {
        for _ in 0..3 {
            let c = Credential::generate(kind, &mut rng);
            valid.push(json!({
                "token": c.expose_secret(),
                "kind": serde_json::to_value(kind).expect("json"),
                "storage_hash_sha256": c.hash_for_storage().to_hex(),
                "hint": c.hint(),
            }));
        }
    }
    let good = Credential::generate(CredentialKind::Local, &mut rng);
    let g = good.expose_secret().to_string();
    let mut bad_checksum = g.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' { b'B' } else { b'A' };
    let mut bad_body = g.clone().into_bytes();
    bad_body[12] = if bad_body[12] == b'x' { b'y' } else { b'x' };
    let invalid: Vec<Value> = [
        ("bad_checksum", String::from_utf8(bad_checksum).expect("ascii")),
        ("changed_body_character", String::from_utf8(bad_body).expect("ascii")),
        ("truncated", g[..g.len() - 1].to_string()),
        ("extra_character", format!("{g}A")),
        ("unknown_prefix", g.replace("b3iq_local_", "b3iq_other_")),
        ("uppercase_prefix", g.replace("b3iq_local_", "B3IQ_LOCAL_")),
        ("non_base62_character", format!("{}-{}", &g[..20], &g[21..])),
        ("empty", String::new()),
        ("prefix_only", "b3iq_setup_".to_string()),
    ]
    .into_iter()
    .map(|(name, token)| {
        let err = Credential::parse(&token).expect_err("must be invalid");
        json!({"name": name, "token": token, "error": err.code()})
    })
    .collect();
    json!({
        "description": "Credentials: prefix || 32 base62 chars (0-9A-Za-z) || 6 base62 chars of CRC-32/IEEE over prefix||body (most significant first, zero-padded). storage_hash = sha256 of the whole token string. hint = prefix + \"...\" + last 4 characters.",
        "alphabet": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "valid": valid,
        "invalid": invalid,
    })
}

fn digests_json() -> Value {
    let good = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    let valid = [good.to_string(), format!("sha256:{good}")];
    let invalid = [
        ("uppercase", good.to_uppercase()),
        ("other_prefix", format!("sha512:{good}")),
        ("uppercase_prefix", format!("SHA256:{good}")),
        ("dash_prefix", format!("sha256-{good}")),
        ("double_prefix", format!("sha256:sha256:{good}")),
        ("path_traversal", format!("../../{}", &good[6..])),
        ("slash", format!("{}/{}", &good[..32], &good[33..])),
        ("short", good[..63].to_string()),
        ("long", format!("{good}0")),
        ("whitespace", format!("{good} ")),
        ("non_hex", format!("{}z", &good[..63])),
        ("empty", String::new()),
    ];
    json!({
        "description": "sha256 digests: exactly 64 lowercase hex characters, optionally prefixed with sha256:. Everything else is refused (this type builds file paths).",
        "valid": valid.iter().map(|t| json!({"text": t, "hex": Sha256Digest::parse(t).expect("valid").to_hex()})).collect::<Vec<_>>(),
        "invalid": invalid.iter().map(|(n, t)| json!({"name": n, "text": t, "error": Sha256Digest::parse(t).expect_err("invalid").code()})).collect::<Vec<_>>(),
    })
}

/// Every golden-vector file: (file name, contents).
pub fn generate() -> Vec<(String, String)> {
    generate_with_seeds().0
}

/// Golden-vector files: (file name, contents).
pub type VectorFiles = Vec<(String, String)>;
/// Fuzz seed inputs: (fuzz target, file name, bytes).
pub type FuzzSeeds = Vec<(String, String, Vec<u8>)>;

/// Golden-vector files plus fuzz seed inputs.
pub fn generate_with_seeds() -> (VectorFiles, FuzzSeeds) {
    let mut files = Vec::new();
    let mut seeds: FuzzSeeds = Vec::new();
    files.push(("keys.json".to_string(), pretty(&keys_json())));

    let (v, s) = kind_file(sample_receipts().into_iter().map(|(n, k, b, x)| (n.to_string(), k, b, x)).collect());
    files.push(("receipt.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("receipt".to_string(), n, b)));

    let (v, s) = kind_file(sample_receipts_v2());
    files.push(("receipt_v2.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("receipt".to_string(), format!("v2-{n}"), b)));

    let (v, s) = kind_file(sample_jobs().into_iter().map(|(n, k, b)| (n, k, b, None)).collect());
    files.push(("job.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("job".to_string(), n, b)));

    let (v, s) = kind_file(vec![("smollm2".to_string(), "ones", sample_manifest(), None)]);
    files.push(("manifest.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("manifest".to_string(), n, b)));

    let (v, s) = kind_file(vec![("healthy".to_string(), "node", sample_heartbeat(), None)]);
    files.push(("heartbeat.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("heartbeat".to_string(), n, b)));

    let v2 = Heartbeat { software_version: Some("0.2.0-rc.1".into()), ..sample_heartbeat() };
    let (v, s) = kind_file(vec![("with_software_version".to_string(), "node", v2, None)]);
    files.push(("heartbeat_v2.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("heartbeat".to_string(), format!("v2-{n}"), b)));

    let (v, s) = kind_file(vec![("enroll".to_string(), "node", sample_enrollment(), None)]);
    files.push(("enrollment.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("enrollment".to_string(), n, b)));

    let (v, s) = kind_file(vec![("cpu_smollm2".to_string(), "node", sample_benchmark(), None)]);
    files.push(("benchmark.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("benchmark".to_string(), n, b)));

    let (v, s) = kind_file(vec![
        (
            "seeded".to_string(),
            "node",
            sample_attestation(false),
            None,
        ),
        ("greedy".to_string(), "node", sample_attestation(true), None),
    ]);
    files.push(("attestation.json".into(), pretty(&v)));
    for (n, b) in &s {
        // The attestation's proofs seed the chunk_proof target.
        let signed = Signed::<InferenceAttestation>::decode(b).expect("own bytes");
        for (i, p) in signed.body().proofs.iter().enumerate() {
            seeds.push(("chunk_proof".to_string(), format!("{n}-{i}"), p.clone()));
        }
    }
    seeds.extend(
        s.into_iter()
            .map(|(n, b)| ("attestation".to_string(), n, b)),
    );

    let (v, s) = kind_file(vec![
        (
            "pass".to_string(),
            "counting",
            sample_verdict(VerdictOutcome::Pass),
            None,
        ),
        (
            "fail_chunk".to_string(),
            "counting",
            sample_verdict(VerdictOutcome::FailChunk(1)),
            None,
        ),
    ]);
    files.push(("verdict.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("verdict".to_string(), n, b)));

    let (v, s) = evidence_json();
    files.push(("evidence.json".into(), pretty(&v)));
    seeds.extend(s.into_iter().map(|(n, b)| ("evidence".to_string(), n, b)));

    files.push(("merkle.json".into(), pretty(&merkle_json())));
    files.push(("payout.json".into(), pretty(&payout_json())));
    files.push(("split.json".into(), pretty(&split_json())));
    let creds = credentials_json();
    for c in creds["valid"].as_array().expect("array").iter().chain(creds["invalid"].as_array().expect("array")) {
        let t = c["token"].as_str().expect("str");
        let name = c.get("name").and_then(Value::as_str).map_or_else(|| format!("valid_{}", &t[..t.len().min(16)]), str::to_string);
        seeds.push(("credential".to_string(), name, t.as_bytes().to_vec()));
    }
    files.push(("credentials.json".into(), pretty(&creds)));
    let digests = digests_json();
    for c in digests["invalid"].as_array().expect("array") {
        seeds.push(("digest".to_string(), c["name"].as_str().expect("str").to_string(), c["text"].as_str().expect("str").as_bytes().to_vec()));
    }
    files.push(("digests.json".into(), pretty(&digests)));
    seeds.push(("key_file".to_string(), "text".to_string(), key("node").to_key_file().to_vec()));
    seeds.push(("key_file".to_string(), "binary".to_string(), vec![0x42; 32]));
    // job_open: now_ms (u64 LE) || signed job; `now` inside the validity window.
    let job_seeds: Vec<_> = seeds.iter().filter(|(t, _, _)| t == "job").cloned().collect();
    for (_, name, bytes) in job_seeds {
        let mut b = (1_763_780_400_000u64 + 1_000).to_le_bytes().to_vec();
        b.extend_from_slice(&bytes);
        seeds.push(("job_open".to_string(), name, b));
    }
    // json_signed: the JSON form of every signed case.
    for (file, content) in &files {
        let v: Value = serde_json::from_str(content).expect("json");
        if let Some(cases) = v.get("cases").and_then(Value::as_array) {
            for c in cases {
                if let Some(sj) = c.get("signed_json") {
                    let name = format!("{}-{}", file.trim_end_matches(".json"), c["name"].as_str().expect("name"));
                    seeds.push(("json_signed".to_string(), name, serde_json::to_vec(sj).expect("json")));
                }
            }
        }
    }
    // merkle_verify: root || index || leaf_count || leaf_len || leaf || siblings, honest proofs.
    for n in [1u64, 2, 3, 5, 8, 13] {
        let leaves: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 8]).collect();
        let t = MerkleTree::from_leaves(&leaves);
        let i = n / 2;
        let p = t.prove(i).expect("in range");
        let mut b = t.root().0.to_vec();
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        b.push(8);
        b.extend_from_slice(&leaves[i as usize]);
        for sib in &p.siblings {
            b.extend_from_slice(&sib.0);
        }
        seeds.push(("merkle_verify".to_string(), format!("n{n}"), b));
    }
    seeds.push(("node_id".to_string(), "valid".to_string(), key("node").node_id().to_string().into_bytes()));
    (files, seeds)
}
