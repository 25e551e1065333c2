//! Node <-> control-plane messages: signatures and checks, and that the types cannot carry
//! prompts, outputs, keys, tokens, URLs or paths.

use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::{EnrollmentProof, Nonce};
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::job::{Job, JobId, JobKind};
use b3iq_core::{NodeKey, OperatingMode, Signed};
use b3iq_protocol::messages::{Code, HexBlob, ReleaseVersion, JobOutcome, JobResultAck, JobResultData, JobResultReport, ReceiptUpload, ReceiptUploadAck, MAX_RECEIPTS_PER_UPLOAD};
use b3iq_protocol::messages::*;
use b3iq_core::payout::EthAddress;
use b3iq_protocol::registration_api::{EcdsaSignature, NetworkContracts, RegistrationAttestation, RegistrationGrant, RegistrationRequest};
use serde_json::{json, Value};

fn challenge() -> EnrollmentChallenge {
    EnrollmentChallenge {
        challenge_id: ChallengeId([1; 16]),
        audience: Audience::new("cp.b3iq.test").unwrap(),
        nonce: Nonce([2; 32]),
        issued_at_ms: 1_000,
        expires_at_ms: 61_000,
    }
}

fn enrollment(key: &NodeKey, c: &EnrollmentChallenge, signed_at_ms: u64) -> EnrollmentRequest {
    let proof = Signed::sign(
        EnrollmentProof {
            node_id: key.node_id(),
            public_key: key.public(),
            audience: c.audience.as_str().to_string(),
            nonce: c.nonce,
            signed_at_ms,
        },
        key,
    )
    .unwrap();
    EnrollmentRequest {
        challenge_id: c.challenge_id,
        proof,
    }
}

fn heartbeat(key: &NodeKey) -> HeartbeatRequest {
    HeartbeatRequest {
        heartbeat: Signed::sign(
            Heartbeat {
                node_id: key.node_id(),
                sent_at_ms: 5_000,
                sequence: 9,
                mode: OperatingMode::Managed,
                health: HealthStatus::Healthy,
                counts: HeartbeatCounts {
                    active_requests: 1,
                    queued_requests: 2,
                    completed_requests: 300,
                    failed_requests: 1,
                    generated_tokens: 12_345,
                    uptime_s: 3_600,
                },
                model_inventory: vec![Sha256Digest::of(b"weights")],
                software_version: None,
            },
            key,
        )
        .unwrap(),
    }
}

/// A signed receipt of `key` (the settlement tests' builder).
fn receipt(key: &NodeKey, n: u8) -> b3iq_core::receipt::SignedReceipt {
    crate::settlement_builder::receipt(key, n, "smollm2-135m-instruct-q4_1", 1_800_000_000_000 + u64::from(n), 0)
}

fn job(issuer: &NodeKey, node: &NodeKey) -> b3iq_core::job::SignedJob {
    Signed::sign(
        Job {
            job_id: JobId([5; 16]),
            audience: node.node_id(),
            issuer: issuer.public(),
            issued_at_ms: 1_000,
            expires_at_ms: 61_000,
            sequence: 42,
            kind: JobKind::InstallModelProfile {
                profile_id: "smollm2-135m-instruct-q4_1".into(),
            },
        },
        issuer,
    )
    .unwrap()
}

fn samples() -> Vec<(&'static str, Value)> {
    let key = NodeKey::from_seed([8; 32]);
    let cp = NodeKey::from_seed([9; 32]);
    let c = challenge();
    vec![
        ("challenge", serde_json::to_value(&c).unwrap()),
        (
            "enroll",
            serde_json::to_value(enrollment(&key, &c, 2_000)).unwrap(),
        ),
        (
            "accepted",
            serde_json::to_value(EnrollmentAccepted {
                node_id: key.node_id(),
                org_id: Audience::new("org_acme").unwrap(),
                audience: Audience::new("cp.example").unwrap(),
                job_key: cp.public(),
                heartbeat_interval_ms: 30_000,
                enrolled_at_ms: 2_000,
                expires_at_ms: 2_000 + 90 * 24 * 3_600_000,
            })
            .unwrap(),
        ),
        ("heartbeat", serde_json::to_value(heartbeat(&key)).unwrap()),
        (
            "ack",
            serde_json::to_value(HeartbeatAck {
                sequence: 9,
                next_heartbeat_at_ms: 35_000,
                pending_jobs: 0,
            })
            .unwrap(),
        ),
        (
            "poll",
            serde_json::to_value(JobPoll::sign(&key, 41, 25_000, 3_000).unwrap()).unwrap(),
        ),
        (
            "poll_response",
            serde_json::to_value(JobPollResponse {
                jobs: vec![job(&cp, &key)],
                next_poll_at_ms: 4_000,
            })
            .unwrap(),
        ),
        (
            "result",
            serde_json::to_value(
                JobResultReport::sign(
                    &key,
                    JobId([5; 16]),
                    JobOutcome::Succeeded,
                    None,
                    JobResultData::Benchmark {
                        generated_tokens_per_s_milli: 41_250,
                        prompt_tokens_per_s_milli: 380_000,
                        ttft_ms: 35,
                    },
                    5_000,
                )
                .unwrap(),
            )
            .unwrap(),
        ),
        (
            "result_bundle",
            serde_json::to_value(
                JobResultReport::sign(
                    &key,
                    JobId([6; 16]),
                    JobOutcome::Succeeded,
                    None,
                    JobResultData::SupportBundle {
                        sha256: Sha256Digest::of(&[0x1f, 0x8b, 8]),
                        bundle: HexBlob(vec![0x1f, 0x8b, 8]),
                    },
                    5_000,
                )
                .unwrap(),
            )
            .unwrap(),
        ),
        (
            "result_updated",
            serde_json::to_value(
                JobResultReport::sign(
                    &key,
                    JobId([8; 16]),
                    JobOutcome::Succeeded,
                    None,
                    JobResultData::Updated {
                        previous: ReleaseVersion::new("0.1.0").unwrap(),
                        installed: ReleaseVersion::new("0.2.0-rc.1").unwrap(),
                        sha256: Sha256Digest::of(b"b3iqd"),
                    },
                    5_000,
                )
                .unwrap(),
            )
            .unwrap(),
        ),
        (
            "result_failed",
            serde_json::to_value(
                JobResultReport::sign(
                    &key,
                    JobId([7; 16]),
                    JobOutcome::Refused,
                    Some(Code::new("untrusted_issuer").unwrap()),
                    JobResultData::None {},
                    5_000,
                )
                .unwrap(),
            )
            .unwrap(),
        ),
        (
            "receipts",
            serde_json::to_value(ReceiptUpload::sign(&key, vec![receipt(&key, 1), receipt(&key, 2)], 6_000).unwrap()).unwrap(),
        ),
        (
            "receipts_ack",
            serde_json::to_value(ReceiptUploadAck { stored: 2, duplicates: 0 }).unwrap(),
        ),
        (
            "result_ack",
            serde_json::to_value(JobResultAck {
                job_id: JobId([5; 16]),
                stored: true,
            })
            .unwrap(),
        ),
        (
            "registration",
            serde_json::to_value(RegistrationRequest::sign(&key, Audience::new("cp-test").unwrap(), EthAddress([0x11; 20]), 7_000)).unwrap(),
        ),
        (
            "registration_grant",
            serde_json::to_value(RegistrationGrant {
                chain_id: 31_337,
                node_registry: EthAddress([1; 20]),
                attester: EthAddress([2; 20]),
                attestation: RegistrationAttestation {
                    node_id: key.node_id(),
                    public_key: key.public(),
                    operator: EthAddress([0x11; 20]),
                    hardware_hash: b3iq_core::Hash32([3; 32]),
                    software_version: 0x00_01_00,
                    mode: OperatingMode::Network,
                    device_class: 1,
                    nonce: 0,
                    deadline: 9_000,
                },
                signature: EcdsaSignature([4; 65]),
            })
            .unwrap(),
        ),
        (
            "contracts",
            serde_json::to_value(NetworkContracts { chain_id: 31_337, stake_token: EthAddress([5; 20]), node_registry: EthAddress([1; 20]), stake_vault: EthAddress([6; 20]), settlement: EthAddress([7; 20]), disputes: EthAddress([8; 20]), attester: EthAddress([2; 20]) }).unwrap(),
        ),
    ]
}

fn parse(kind: &str, v: &Value) -> Result<(), String> {
    let s = v.to_string();
    let r = match kind {
        "challenge" => serde_json::from_str::<EnrollmentChallenge>(&s).map(|_| ()),
        "enroll" => serde_json::from_str::<EnrollmentRequest>(&s).map(|_| ()),
        "accepted" => serde_json::from_str::<EnrollmentAccepted>(&s).map(|_| ()),
        "heartbeat" => serde_json::from_str::<HeartbeatRequest>(&s).map(|_| ()),
        "ack" => serde_json::from_str::<HeartbeatAck>(&s).map(|_| ()),
        "poll" => serde_json::from_str::<JobPoll>(&s).map(|_| ()),
        "poll_response" => serde_json::from_str::<JobPollResponse>(&s).map(|_| ()),
        "result" | "result_bundle" | "result_updated" | "result_failed" => {
            serde_json::from_str::<JobResultReport>(&s).map(|_| ())
        }
        "result_ack" => serde_json::from_str::<JobResultAck>(&s).map(|_| ()),
        "receipts" => serde_json::from_str::<ReceiptUpload>(&s).map(|_| ()),
        "receipts_ack" => serde_json::from_str::<ReceiptUploadAck>(&s).map(|_| ()),
        "registration" => serde_json::from_str::<RegistrationRequest>(&s).map(|_| ()),
        "registration_grant" => serde_json::from_str::<RegistrationGrant>(&s).map(|_| ()),
        "contracts" => serde_json::from_str::<NetworkContracts>(&s).map(|_| ()),
        _ => unreachable!(),
    };
    r.map_err(|e| e.to_string())
}

/// Every (path, string) and every object (path, value) in a message.
fn walk<'a>(
    v: &'a Value,
    path: String,
    strings: &mut Vec<(String, &'a str)>,
    objects: &mut Vec<String>,
) {
    match v {
        Value::String(s) => strings.push((path, s)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| walk(x, format!("{path}[{i}]"), strings, objects)),
        Value::Object(o) => {
            objects.push(path.clone());
            o.iter()
                .for_each(|(k, x)| walk(x, format!("{path}.{k}"), strings, objects))
        }
        _ => {}
    }
}

fn pointer(path: &str) -> String {
    // "kind.a.b[0].c" -> "/a/b/0/c"
    path.split('.')
        .skip(1)
        .flat_map(|p| p.split('['))
        .map(|p| p.trim_end_matches(']'))
        .fold(String::new(), |acc, p| format!("{acc}/{p}"))
}

#[test]
fn messages_round_trip_and_checks_hold() {
    for (kind, v) in samples() {
        parse(kind, &v).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    let key = NodeKey::from_seed([8; 32]);
    let c = challenge();
    let req = enrollment(&key, &c, 2_000);
    assert_eq!(req.verify(&c, 2_500, 60_000).unwrap(), key.node_id());
    // Expired challenge, other challenge id, other nonce, other audience, stale proof.
    assert!(req.verify(&c, c.expires_at_ms, 60_000).is_err());
    let mut other = c.clone();
    other.challenge_id = ChallengeId([7; 16]);
    assert!(req.verify(&other, 2_500, 60_000).is_err());
    let mut other = c.clone();
    other.nonce = Nonce([3; 32]);
    assert!(enrollment(&key, &other, 2_000)
        .verify(&c, 2_500, 60_000)
        .is_err());
    let mut other = c.clone();
    other.audience = Audience::new("evil.example").unwrap();
    assert!(req.verify(&other, 2_500, 60_000).is_err());
    assert!(req.verify(&c, 60_000, 120_000).is_ok());
    assert!(req.verify(&c, 2_000 + 58_000, 1_000).is_err());
    // A proof re-signed by another key for this node id fails.
    let mut body = req.proof.body().clone();
    body.signed_at_ms += 1;
    let forged = Signed::from_parts(body, key.public(), *req.proof.signature()).unwrap();
    let bad = EnrollmentRequest {
        challenge_id: c.challenge_id,
        proof: forged,
    };
    assert!(bad.verify(&c, 2_500, 60_000).is_err());

    assert_eq!(heartbeat(&key).verify().unwrap(), key.node_id());
    let poll = JobPoll::sign(&key, 41, 25_000, 3_000).unwrap();
    assert_eq!(poll.verify().unwrap(), key.node_id());
    let mut p2 = poll.clone();
    p2.after_sequence = 0;
    assert!(p2.verify().is_err());
    let mut p3 = poll.clone();
    p3.public_key = NodeKey::from_seed([1; 32]).public();
    assert!(p3.verify().is_err());
    assert!(JobPoll::sign(&key, 0, MAX_POLL_WAIT_MS + 1, 0).is_err());

    // Job results: signed over their JSON; any change, another key, or a node id the key does
    // not derive is refused.
    let r = JobResultReport::sign(&key, JobId([5; 16]), JobOutcome::Failed, Some(Code::new("model_not_loaded").unwrap()), JobResultData::None {}, 9).unwrap();
    assert_eq!(r.verify().unwrap(), key.node_id());
    for tamper in [
        |r: &mut JobResultReport| r.outcome = JobOutcome::Succeeded,
        |r: &mut JobResultReport| r.code = None,
        |r: &mut JobResultReport| r.finished_at_ms += 1,
        |r: &mut JobResultReport| r.job_id = JobId([6; 16]),
        |r: &mut JobResultReport| r.result = JobResultData::ModelRemoved { sha256: Sha256Digest([1; 32]) },
    ] {
        let mut t = r.clone();
        tamper(&mut t);
        assert!(t.verify().is_err(), "{t:?}");
    }
    let mut other = r.clone();
    other.public_key = NodeKey::from_seed([1; 32]).public();
    assert!(other.verify().is_err());
    // Codes are identifiers; bundles are bounded lowercase hex.
    for bad in ["", "Model", "a b", "x/y", &"a".repeat(65)] {
        assert!(Code::new(bad).is_err(), "{bad:?}");
    }
    let mut v = serde_json::to_value(&r).unwrap();
    v["result"] = json!({"type": "support_bundle", "sha256": Sha256Digest([1; 32]), "bundle": "ABCD"});
    assert!(serde_json::from_value::<JobResultReport>(v.clone()).is_err(), "uppercase hex");
    v["result"]["bundle"] = json!("abc");
    assert!(serde_json::from_value::<JobResultReport>(v).is_err(), "odd length");
}

#[test]
fn messages_cannot_carry_prompts_outputs_keys_or_paths() {
    let forbidden = [
        "prompt",
        "prompts",
        "messages",
        "output",
        "completion",
        "text",
        "content",
        "private_key",
        "secret",
        "salt",
        "api_key",
        "token",
        "password",
        "url",
        "path",
        "file",
        "customer",
        "user",
        "email",
        "tunnel",
        "seed",
    ];
    for (kind, v) in samples() {
        let mut strings = Vec::new();
        let mut objects = Vec::new();
        walk(&v, kind.to_string(), &mut strings, &mut objects);
        // 1. No field anywhere has a forbidden name.
        let text = v.to_string();
        for f in forbidden {
            assert!(
                !text.contains(&format!("\"{f}\":")),
                "{kind} has a field named {f}"
            );
        }
        // 2. Adding such a field to ANY object in the message (top level or nested) is refused.
        for obj in &objects {
            for f in ["prompt", "output", "private_key", "path", "api_key"] {
                let mut bad = v.clone();
                let target = if obj == kind {
                    bad.as_object_mut()
                } else {
                    bad.pointer_mut(&pointer(obj))
                        .and_then(Value::as_object_mut)
                };
                target.unwrap().insert(f.into(), json!("tell me a secret"));
                assert!(
                    parse(kind, &bad).is_err(),
                    "{kind}: {obj} accepted an extra {f} field"
                );
            }
        }
        // 3. Every string is an id, hex, enum tag or identifier: no spaces, no absolute or
        //    dotted paths, no URLs.
        for (path, s) in strings {
            assert!(
                !s.contains(' ') && !s.starts_with('/') && !s.contains("..") && !s.contains("://"),
                "{path} = {s:?}"
            );
        }
    }
    // 4. Free text cannot be smuggled into the typed fields.
    let mut v = serde_json::to_value(challenge()).unwrap();
    v["nonce"] = json!("a secret prompt");
    assert!(parse("challenge", &v).is_err());
    for bad in [
        "https://cp.example/enroll",
        "/var/lib/b3iq",
        "../etc",
        "a b",
        "",
        ".hidden",
        "cp/x",
    ] {
        assert!(Audience::new(bad).is_err(), "audience {bad:?} accepted");
        let mut v = serde_json::to_value(challenge()).unwrap();
        v["audience"] = json!(bad);
        assert!(
            parse("challenge", &v).is_err(),
            "challenge with audience {bad:?} accepted"
        );
    }
    Audience::new("cp.b3iq.example:443").unwrap();
    // A job kind outside the closed set (e.g. a shell command) is refused.
    let key = NodeKey::from_seed([8; 32]);
    let cp = NodeKey::from_seed([9; 32]);
    let mut r = serde_json::to_value(JobPollResponse {
        jobs: vec![job(&cp, &key)],
        next_poll_at_ms: 0,
    })
    .unwrap();
    r["jobs"][0]["body"]["kind"] = json!({"type": "shell", "command": "rm -rf /"});
    assert!(
        parse("poll_response", &r).is_err(),
        "a shell job was accepted"
    );
    let mut r = serde_json::to_value(JobPollResponse {
        jobs: vec![job(&cp, &key)],
        next_poll_at_ms: 0,
    })
    .unwrap();
    // An update result's versions are versions, nothing else.
    let mut u = samples().into_iter().find(|(k, _)| *k == "result_updated").unwrap().1;
    u["result"]["installed"] = json!("see https://evil.example");
    assert!(parse("result_updated", &u).is_err(), "free text as a version was accepted");
    r["jobs"][0]["body"]["kind"]["profile_id"] = json!("../../../../etc/passwd");
    assert!(
        parse("poll_response", &r).is_err(),
        "a path as profile id was accepted"
    );
    let mut r = serde_json::to_value(JobPollResponse {
        jobs: vec![job(&cp, &key)],
        next_poll_at_ms: 0,
    })
    .unwrap();
    let good = r["jobs"][0].clone();
    r["jobs"] = json!(vec![good; MAX_JOBS_PER_POLL + 1]);
    assert!(
        parse("poll_response", &r).is_err(),
        "too many jobs accepted"
    );
}

/// The same round-trip property as the `protocol_messages` fuzz target, over the samples and
/// over mutated bytes: parsing never panics, and what parses re-serializes to itself.
#[test]
fn parsing_mutated_messages_never_panics_and_round_trips() {
    fn roundtrip<T>(data: &[u8])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = serde_json::from_slice::<T>(data) {
            let again: T = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(v, again);
        }
    }
    fn all(data: &[u8]) {
        roundtrip::<EnrollmentChallenge>(data);
        roundtrip::<EnrollmentRequest>(data);
        roundtrip::<EnrollmentAccepted>(data);
        roundtrip::<HeartbeatRequest>(data);
        roundtrip::<HeartbeatAck>(data);
        roundtrip::<JobPoll>(data);
        roundtrip::<JobPollResponse>(data);
        roundtrip::<JobResultReport>(data);
        roundtrip::<JobResultAck>(data);
        roundtrip::<ReceiptUpload>(data);
        roundtrip::<ReceiptUploadAck>(data);
        roundtrip::<b3iq_protocol::settlement::ClaimFile>(data);
        roundtrip::<RegistrationRequest>(data);
        roundtrip::<RegistrationGrant>(data);
        roundtrip::<NetworkContracts>(data);
    }
    let mut parsed = 0;
    for (kind, v) in samples() {
        let bytes = serde_json::to_vec(&v).unwrap();
        all(&bytes);
        parsed += usize::from(parse(kind, &v).is_ok());
        // Every single-byte change and every truncation.
        for i in 0..bytes.len() {
            let mut m = bytes.clone();
            m[i] = m[i].wrapping_add(1 + (i % 7) as u8);
            all(&m);
            all(&bytes[..i]);
        }
    }
    assert_eq!(parsed, samples().len());
}

#[test]
fn job_kinds_without_fields_refuse_extra_fields_too() {
    for k in ["build_support_bundle", "restart_runtime"] {
        let v = json!({"type": k, "prompt": "tell me a secret"});
        assert!(serde_json::from_value::<JobKind>(v).is_err(), "{k} accepted an extra field");
        assert!(serde_json::from_value::<JobKind>(json!({"type": k})).is_ok());
    }
}

#[test]
fn receipt_uploads_carry_only_the_uploaders_own_signed_receipts() {
    let key = NodeKey::from_seed([8; 32]);
    let other = NodeKey::from_seed([9; 32]);
    let u = ReceiptUpload::sign(&key, vec![receipt(&key, 1), receipt(&key, 2)], 6_000).unwrap();
    assert_eq!(u.verify().unwrap(), key.node_id());
    // A receipt of another node in the batch; a receipt swapped after signing; another signer.
    let mixed = ReceiptUpload::sign(&key, vec![receipt(&key, 1), receipt(&other, 2)], 6_000).unwrap();
    assert!(mixed.verify().unwrap_err().to_string().contains("another node"));
    let mut swapped = u.clone();
    swapped.receipts[1] = receipt(&key, 3);
    assert!(swapped.verify().is_err());
    let mut resigned = u.clone();
    resigned.public_key = other.public();
    assert!(resigned.verify().is_err());
    // Empty and oversized batches are refused, also when parsing.
    assert!(ReceiptUpload::sign(&key, vec![], 1).is_err());
    let many = vec![receipt(&key, 1); MAX_RECEIPTS_PER_UPLOAD + 1];
    assert!(ReceiptUpload::sign(&key, many.clone(), 1).is_err());
    let mut v = serde_json::to_value(&u).unwrap();
    v["receipts"] = serde_json::to_value(&many).unwrap();
    assert!(serde_json::from_value::<ReceiptUpload>(v).is_err());
}

#[test]
fn large_uploads_are_checked_with_the_same_verdicts_as_small_ones() {
    // From 16 receipts on, the upload key's multiples are precomputed: each faulty receipt must
    // be refused with the same message as in a batch checked one by one.
    let key = NodeKey::from_seed([8; 32]);
    let other = NodeKey::from_seed([9; 32]);
    let forged = {
        let r = receipt(&key, 200);
        let mut sig = *r.signature();
        sig.0[40] ^= 1;
        Signed::from_parts(r.body().clone(), *r.signer(), sig).unwrap()
    };
    let foreign = receipt(&other, 201);
    for n in [2usize, 16, 20, 256] {
        let good: Vec<_> = (0..n).map(|i| receipt(&key, i as u8)).collect();
        assert_eq!(ReceiptUpload::sign(&key, good.clone(), 6_000).unwrap().verify().unwrap(), key.node_id());
        for (bad, says) in [(&forged, "invalid signature"), (&foreign, "another node")] {
            let mut rs = good.clone();
            rs[1] = bad.clone();
            let e = ReceiptUpload::sign(&key, rs, 6_000).unwrap().verify().unwrap_err().to_string();
            assert!(e.contains("receipt 1") && e.contains(says), "{n}: {e}");
            let mut small = good[..2].to_vec();
            small[1] = bad.clone();
            let e_small = ReceiptUpload::sign(&key, small, 6_000).unwrap().verify().unwrap_err().to_string();
            assert_eq!(e, e_small);
        }
    }
}
