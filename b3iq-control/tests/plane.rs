//! The control plane's rules with real signed messages (b3iq-core keys and envelopes) over the
//! SQLite store: enrollment refusals (replayed or expired nonce, another audience, a key that
//! does not derive the node id, a reused or malformed token), heartbeat refusals (forged, replayed,
//! skewed, suspended), presence, operator sign-in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use b3iq_control::store::sqlite::SqliteStore;
use b3iq_control::store::{NodeStatus, Refusal};
use b3iq_control::{ControlConfig, ControlError, ControlPlane};
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::mode::OperatingMode;
use b3iq_core::{NodeKey, Signature, Signed};
use b3iq_protocol::messages::{Audience, EnrollmentChallenge, EnrollmentRequest, HeartbeatRequest};

const NOW: u64 = 1_800_000_000_000;

fn plane() -> ControlPlane {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let mut cfg = ControlConfig::new(Audience::new("cp-test").unwrap());
    cfg.heartbeat_interval_ms = 10_000;
    ControlPlane::new(store, cfg, NodeKey::from_seed([99; 32]))
}

fn proof(key: &NodeKey, c: &EnrollmentChallenge, audience: &str, at: u64) -> EnrollmentRequest {
    let p = key
        .sign_object(EnrollmentProof {
            node_id: key.node_id(),
            public_key: key.public(),
            audience: audience.into(),
            nonce: c.nonce,
            signed_at_ms: at,
        })
        .unwrap();
    EnrollmentRequest {
        challenge_id: c.challenge_id,
        proof: p,
    }
}

/// Enrolls each key in `org` with its own token and challenge.
async fn enroll_all(cp: &ControlPlane, org: &str, keys: &[&NodeKey]) {
    for k in keys {
        let (_, tok) = cp.create_enrollment_token(org, 60_000, NOW).await.unwrap();
        let c = cp.challenge(NOW).await.unwrap();
        cp.enroll(&tok, &proof(k, &c, "cp-test", NOW), NOW)
            .await
            .unwrap();
    }
}

fn heartbeat(key: &NodeKey, seq: u64, at: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        heartbeat: key
            .sign_object(Heartbeat {
                node_id: key.node_id(),
                sent_at_ms: at,
                sequence: seq,
                mode: OperatingMode::Managed,
                health: HealthStatus::Healthy,
                counts: HeartbeatCounts::default(),
                model_inventory: vec![],
                software_version: None,
            })
            .unwrap(),
    }
}

/// A plane with organisation `acme`, its operator `alice`, and two enrolled nodes.
async fn acme_with_two_nodes() -> (
    ControlPlane,
    b3iq_control::store::Org,
    b3iq_control::store::Operator,
    NodeKey,
    NodeKey,
) {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    cp.create_operator("acme", "alice", "a long operator password", NOW)
        .await
        .unwrap();
    let alice = cp
        .store()
        .operator_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let (k1, k2) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    enroll_all(&cp, &org.id, &[&k1, &k2]).await;
    (cp, org, alice, k1, k2)
}

fn refused(r: Result<impl std::fmt::Debug, ControlError>) -> ControlError {
    r.expect_err("expected a refusal")
}

#[tokio::test]
async fn enrollment_needs_a_fresh_nonce_the_right_audience_a_matching_key_and_an_unused_token() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (_, tok) = cp
        .create_enrollment_token(&org.id, 60_000, NOW)
        .await
        .unwrap();
    assert!(tok.starts_with("b3iq_enroll_"));
    let key = NodeKey::from_seed([1; 32]);

    // Another audience.
    let c = cp.challenge(NOW).await.unwrap();
    let e = refused(cp.enroll(&tok, &proof(&key, &c, "cp-evil", NOW), NOW).await);
    assert!(
        matches!(e, ControlError::Invalid { .. }) && e.to_string().contains("audience"),
        "{e}"
    );
    // A proof naming a node id its key does not derive.
    let c = cp.challenge(NOW).await.unwrap();
    let other = NodeKey::from_seed([2; 32]);
    let forged = Signed::from_parts(
        EnrollmentProof {
            node_id: other.node_id(),
            public_key: key.public(),
            audience: "cp-test".into(),
            nonce: c.nonce,
            signed_at_ms: NOW,
        },
        key.public(),
        Signature([0; 64]),
    )
    .unwrap();
    let e = refused(
        cp.enroll(
            &tok,
            &EnrollmentRequest {
                challenge_id: c.challenge_id,
                proof: forged,
            },
            NOW,
        )
        .await,
    );
    assert!(matches!(e, ControlError::Invalid { .. }), "{e}");
    // A proof signed by another key than the one it names.
    let bad_sig = Signed::from_parts(
        EnrollmentProof {
            node_id: key.node_id(),
            public_key: key.public(),
            audience: "cp-test".into(),
            nonce: c.nonce,
            signed_at_ms: NOW,
        },
        key.public(),
        other.sign_raw(b"not the message"),
    )
    .unwrap();
    assert!(matches!(
        refused(
            cp.enroll(
                &tok,
                &EnrollmentRequest {
                    challenge_id: c.challenge_id,
                    proof: bad_sig
                },
                NOW
            )
            .await
        ),
        ControlError::Invalid { .. }
    ));
    // An expired challenge.
    let c = cp.challenge(NOW).await.unwrap();
    let late = c.expires_at_ms;
    assert!(matches!(
        refused(
            cp.enroll(&tok, &proof(&key, &c, "cp-test", late), late)
                .await
        ),
        ControlError::Refused(Refusal::ChallengeUsed)
    ));
    // A malformed token is refused before any lookup.
    let c = cp.challenge(NOW).await.unwrap();
    assert!(matches!(
        refused(
            cp.enroll("b3iq_enroll_nope", &proof(&key, &c, "cp-test", NOW), NOW)
                .await
        ),
        ControlError::Unauthorized(_)
    ));

    // The good one; then its nonce and its token are spent.
    let c = cp.challenge(NOW).await.unwrap();
    let req = proof(&key, &c, "cp-test", NOW);
    let acc = cp.enroll(&tok, &req, NOW + 5).await.unwrap();
    assert_eq!(
        (acc.node_id, acc.org_id.as_str(), acc.audience.as_str()),
        (key.node_id(), org.id.as_str(), "cp-test")
    );
    assert_eq!(acc.job_key, NodeKey::from_seed([99; 32]).public());
    assert_eq!(acc.heartbeat_interval_ms, 10_000);
    assert_eq!(acc.expires_at_ms, NOW + 5 + cp.config().enrollment_ttl_ms);
    assert!(
        matches!(
            refused(cp.enroll(&tok, &req, NOW + 6).await),
            ControlError::Refused(Refusal::ChallengeUsed)
        ),
        "replayed nonce"
    );
    let c = cp.challenge(NOW).await.unwrap();
    let k2 = NodeKey::from_seed([3; 32]);
    assert!(
        matches!(
            refused(cp.enroll(&tok, &proof(&k2, &c, "cp-test", NOW), NOW).await),
            ControlError::Refused(Refusal::TokenUsed)
        ),
        "reused token"
    );
    assert_eq!(cp.metrics.enrollments_accepted.load(Ordering::Relaxed), 1);
    assert_eq!(cp.metrics.enrollments_refused.load(Ordering::Relaxed), 7);
}

#[tokio::test]
async fn heartbeats_are_signed_ordered_timely_and_from_active_nodes() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (_, tok) = cp
        .create_enrollment_token(&org.id, 60_000, NOW)
        .await
        .unwrap();
    let key = NodeKey::from_seed([1; 32]);
    let c = cp.challenge(NOW).await.unwrap();
    cp.enroll(&tok, &proof(&key, &c, "cp-test", NOW), NOW)
        .await
        .unwrap();
    assert_eq!(
        cp.node(&org.id, &key.node_id(), NOW)
            .await
            .unwrap()
            .presence,
        "never_seen"
    );

    let ack = cp.heartbeat(&heartbeat(&key, 1, NOW), NOW).await.unwrap();
    assert_eq!((ack.sequence, ack.next_heartbeat_at_ms), (1, NOW + 10_000));
    assert_eq!(
        cp.node(&org.id, &key.node_id(), NOW + 30_000)
            .await
            .unwrap()
            .presence,
        "online"
    );
    assert_eq!(
        cp.node(&org.id, &key.node_id(), NOW + 30_001)
            .await
            .unwrap()
            .presence,
        "offline",
        "3 missed intervals"
    );

    // Replayed; forged (a signature from another key; a bit flipped); skewed; from a stranger.
    assert!(matches!(
        refused(cp.heartbeat(&heartbeat(&key, 1, NOW), NOW).await),
        ControlError::Refused(Refusal::StaleSequence { .. })
    ));
    let good = heartbeat(&key, 2, NOW).heartbeat;
    let other = NodeKey::from_seed([7; 32]);
    let forged =
        Signed::from_parts(good.body().clone(), key.public(), other.sign_raw(b"x")).unwrap();
    assert!(matches!(
        refused(
            cp.heartbeat(&HeartbeatRequest { heartbeat: forged }, NOW)
                .await
        ),
        ControlError::Invalid { .. }
    ));
    let mut sig = good.signature().0;
    sig[5] ^= 1;
    let flipped = Signed::from_parts(good.body().clone(), key.public(), Signature(sig)).unwrap();
    assert!(matches!(
        refused(
            cp.heartbeat(&HeartbeatRequest { heartbeat: flipped }, NOW)
                .await
        ),
        ControlError::Invalid { .. }
    ));
    let skew = cp.config().max_clock_skew_ms + 1;
    let e = refused(cp.heartbeat(&heartbeat(&key, 3, NOW - skew), NOW).await);
    assert!(e.to_string().contains("clock"), "{e}");
    assert!(matches!(
        refused(cp.heartbeat(&heartbeat(&other, 1, NOW), NOW).await),
        ControlError::Refused(Refusal::UnknownNode)
    ));
    cp.heartbeat(&heartbeat(&key, 4, NOW + 1), NOW + 1)
        .await
        .unwrap();

    // Suspended, then revoked: refused at once, with the operator's reason.
    cp.set_node_status(
        &org.id,
        &key.node_id(),
        NodeStatus::Suspended,
        "maintenance",
    )
    .await
    .unwrap();
    let e = refused(cp.heartbeat(&heartbeat(&key, 5, NOW + 2), NOW + 2).await);
    assert!(e.to_string().contains("maintenance"), "{e}");
    assert_eq!(e.parts().2, "node_suspended");
    cp.set_node_status(&org.id, &key.node_id(), NodeStatus::Revoked, "key leaked")
        .await
        .unwrap();
    assert_eq!(
        refused(cp.heartbeat(&heartbeat(&key, 6, NOW + 3), NOW + 3).await)
            .parts()
            .2,
        "node_revoked"
    );
    assert!(
        cp.set_node_status(&org.id, &key.node_id(), NodeStatus::Active, "\u{7}")
            .await
            .is_err(),
        "control characters in a reason"
    );

    let v = cp.node(&org.id, &key.node_id(), NOW + 3).await.unwrap();
    assert_eq!(
        (v.presence, v.node.refused_heartbeats),
        ("revoked", 2),
        "stale + skew counted on the node"
    );
    let m = &cp.metrics;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(
        (
            g(&m.heartbeats_accepted),
            g(&m.heartbeats_stale),
            g(&m.heartbeats_forged),
            g(&m.heartbeats_skewed),
            g(&m.heartbeats_denied)
        ),
        (2, 1, 2, 1, 3)
    );
    let text = m.render();
    assert!(
        text.contains("b3iq_control_heartbeats_total{outcome=\"forged\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn operators_sign_in_with_argon2id_and_sessions_scope_them_to_their_org() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    assert!(cp.create_org("bad/name", NOW).await.is_err());
    assert!(matches!(
        cp.create_operator("acme", "alice", "short", NOW).await,
        Err(ControlError::Invalid { .. })
    ));
    let op = cp
        .create_operator("acme", "alice", "a long operator password", NOW)
        .await
        .unwrap();
    assert!(op.password_phc.starts_with("$argon2id$"));
    assert!(matches!(
        cp.login("alice", "wrong password!", NOW).await,
        Err(ControlError::Unauthorized(_))
    ));
    assert!(matches!(
        cp.login("mallory", "a long operator password", NOW).await,
        Err(ControlError::Unauthorized(_))
    ));
    let (session, exp) = cp
        .login("alice", "a long operator password", NOW)
        .await
        .unwrap();
    assert_eq!(exp, NOW + cp.config().session_ttl_ms);
    assert_eq!(cp.operator(&session, NOW).await.unwrap().org_id, org.id);
    assert!(cp.operator(&session, exp).await.is_err(), "expired");
    cp.logout(&session).await.unwrap();
    assert!(cp.operator(&session, NOW).await.is_err(), "signed out");
    assert!(cp.create_enrollment_token(&org.id, 0, NOW).await.is_err());
    assert!(cp
        .create_enrollment_token(&org.id, 31 * 24 * 3_600_000, NOW)
        .await
        .is_err());
}

#[tokio::test]
async fn jobs_are_signed_for_their_node_long_polled_in_order_and_never_reach_a_revoked_node() {
    use b3iq_core::job::{JobKind, MemorySeenSet, TrustRoots};
    use b3iq_protocol::messages::JobPoll;

    let cp = Arc::new(plane());
    let org = cp.create_org("acme", NOW).await.unwrap();
    let other_org = cp.create_org("globex", NOW).await.unwrap();
    cp.create_operator("acme", "alice", "a long operator password", NOW)
        .await
        .unwrap();
    cp.create_operator("globex", "mallory", "a long operator password", NOW)
        .await
        .unwrap();
    let alice = cp
        .store()
        .operator_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let mallory = cp
        .store()
        .operator_by_username("mallory")
        .await
        .unwrap()
        .unwrap();
    let (k1, k2) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    enroll_all(&cp, &org.id, &[&k1, &k2]).await;
    let now = b3iq_host::context::unix_now_ms();
    let bench = JobKind::RunBenchmark {
        suite: "quick".into(),
    };
    // Another organisation's operator cannot queue for this node.
    assert!(matches!(
        cp.queue_job(&mallory, &k1.node_id(), bench.clone(), None, now)
            .await,
        Err(ControlError::Refused(Refusal::UnknownNode))
    ));
    assert!(
        cp.queue_job(&alice, &k1.node_id(), bench.clone(), Some(0), now)
            .await
            .is_err(),
        "zero lifetime"
    );
    let _ = other_org;

    // A long-poll waits, and wakes when a job is queued.
    let poller = {
        let cp = cp.clone();
        let p = JobPoll::sign(&k1, 0, 10_000, now).unwrap();
        tokio::spawn(async move { cp.poll(&p, now).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!poller.is_finished(), "nothing queued yet: the poll waits");
    let j1 = cp
        .queue_job(&alice, &k1.node_id(), bench.clone(), None, now)
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), poller)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(got.jobs.len(), 1);
    // The node opens it with the pinned job key: audience, signature, sequence.
    let roots = TrustRoots::new([cp.job_public_key().await.unwrap()]);
    let mut seen = MemorySeenSet::default();
    let v = got.jobs[0]
        .open(&roots, &k1.node_id(), now, &mut seen)
        .unwrap();
    assert_eq!(v.kind(), &bench);
    assert_eq!(v.job().job_id.to_hex(), j1.job_id);
    assert!(
        got.jobs[0]
            .open(&roots, &k2.node_id(), now, &mut MemorySeenSet::default())
            .is_err(),
        "a job for another node"
    );
    // Another node's poll never sees it; a later job has a higher sequence.
    let p2 = cp
        .poll(&JobPoll::sign(&k2, 0, 0, now).unwrap(), now)
        .await
        .unwrap();
    assert!(p2.jobs.is_empty());
    let j2 = cp
        .queue_job(
            &alice,
            &k1.node_id(),
            JobKind::BuildSupportBundle {},
            None,
            now,
        )
        .await
        .unwrap();
    assert!(j2.sequence > j1.sequence);
    let again = cp
        .poll(&JobPoll::sign(&k1, j1.sequence, 0, now).unwrap(), now)
        .await
        .unwrap();
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.jobs[0].body().kind, JobKind::BuildSupportBundle {});
    let listed = cp.jobs(&org.id, &k1.node_id()).await.unwrap();
    assert_eq!(
        (
            listed.len(),
            listed[0].state.as_str(),
            listed[1].state.as_str()
        ),
        (2, "delivered", "delivered")
    );
    assert_eq!(listed[1].created_by, "alice");

    // A forged poll, a skewed one; then a job queued before revocation never reaches the node.
    let mut forged = JobPoll::sign(&k1, 0, 0, now).unwrap();
    forged.after_sequence = 99;
    assert!(matches!(
        cp.poll(&forged, now).await,
        Err(ControlError::Invalid { .. })
    ));
    let skewed = JobPoll::sign(&k1, 0, 0, now - cp.config().max_clock_skew_ms - 1).unwrap();
    assert!(matches!(
        cp.poll(&skewed, now).await,
        Err(ControlError::Invalid { .. })
    ));
    cp.queue_job(&alice, &k2.node_id(), bench.clone(), None, now)
        .await
        .unwrap();
    cp.set_node_status(&org.id, &k2.node_id(), NodeStatus::Revoked, "stolen")
        .await
        .unwrap();
    let e = cp
        .poll(&JobPoll::sign(&k2, 0, 0, now).unwrap(), now)
        .await
        .unwrap_err();
    assert_eq!(e.parts().2, "node_revoked");
    assert_eq!(
        cp.jobs(&org.id, &k2.node_id()).await.unwrap()[0].state,
        "queued",
        "never delivered"
    );
    assert!(
        cp.queue_job(&alice, &k2.node_id(), bench, None, now)
            .await
            .is_err(),
        "nothing can be queued for a revoked node"
    );
}

#[tokio::test]
async fn job_results_are_signed_by_their_node_and_stored_once() {
    use b3iq_core::job::JobKind;
    use b3iq_protocol::messages::{Code, JobOutcome, JobPoll, JobResultData, JobResultReport};

    let (cp, org, alice, k1, k2) = acme_with_two_nodes().await;
    let now = b3iq_host::context::unix_now_ms();
    cp.queue_job(
        &alice,
        &k1.node_id(),
        JobKind::RunBenchmark {
            suite: "quick".into(),
        },
        None,
        now,
    )
    .await
    .unwrap();
    let got = cp
        .poll(&JobPoll::sign(&k1, 0, 0, now).unwrap(), now)
        .await
        .unwrap();
    let job_id = got.jobs[0].body().job_id;
    let data = JobResultData::Benchmark {
        generated_tokens_per_s_milli: 50_000,
        prompt_tokens_per_s_milli: 400_000,
        ttft_ms: 30,
    };
    let report =
        JobResultReport::sign(&k1, job_id, JobOutcome::Succeeded, None, data.clone(), now).unwrap();

    // Another node cannot report it; a forged report is refused.
    let theirs = JobResultReport::sign(
        &k2,
        job_id,
        JobOutcome::Failed,
        Some(Code::new("x").unwrap()),
        JobResultData::None {},
        now,
    )
    .unwrap();
    assert!(matches!(
        cp.job_result(&theirs, now).await,
        Err(ControlError::Refused(Refusal::NotFound(_)))
    ));
    let mut forged = report.clone();
    forged.outcome = JobOutcome::Failed;
    assert!(matches!(
        cp.job_result(&forged, now).await,
        Err(ControlError::Invalid { .. })
    ));
    // Stored once; a retry is acknowledged without changing it.
    assert!(cp.job_result(&report, now).await.unwrap().stored);
    let retry = JobResultReport::sign(
        &k1,
        job_id,
        JobOutcome::Failed,
        None,
        JobResultData::None {},
        now + 1,
    )
    .unwrap();
    assert!(!cp.job_result(&retry, now + 1).await.unwrap().stored);
    let j = &cp.jobs(&org.id, &k1.node_id()).await.unwrap()[0];
    assert_eq!(
        (j.state.as_str(), j.finished_at_ms),
        ("succeeded", Some(now))
    );
    assert_eq!(
        j.result.as_ref().unwrap()["generated_tokens_per_s_milli"],
        50_000
    );
    // A reported job is not delivered again.
    assert!(cp
        .poll(&JobPoll::sign(&k1, 0, 0, now).unwrap(), now)
        .await
        .unwrap()
        .jobs
        .is_empty());
    // A revoked node's reports are refused.
    cp.set_node_status(&org.id, &k1.node_id(), NodeStatus::Revoked, "gone")
        .await
        .unwrap();
    assert_eq!(
        cp.job_result(&report, now).await.unwrap_err().parts().2,
        "node_revoked"
    );
}

#[tokio::test]
async fn a_job_key_rotation_reaches_each_node_signed_by_the_key_it_pins() {
    use b3iq_core::job::{JobKind, MemorySeenSet, TrustRoots};
    use b3iq_protocol::messages::{JobOutcome, JobPoll, JobResultData, JobResultReport};

    let (cp, org, alice, k1, k2) = acme_with_two_nodes().await;
    let old = cp.job_public_key().await.unwrap();
    assert_eq!(
        old,
        NodeKey::from_seed([99; 32]).public(),
        "the plane's key was adopted as the first"
    );
    let now = b3iq_host::context::unix_now_ms();

    // Rotation: a new current key, one rotate_issuer_key job per active node, signed by the
    // key that node pins; a job queued meanwhile is already signed with the new key.
    let r = cp.rotate_job_key(now).await.unwrap();
    let new = r.job_key;
    assert_ne!(new, old);
    assert_eq!((r.queued, cp.job_public_key().await.unwrap()), (2, new));
    let bench = cp
        .queue_job(
            &alice,
            &k1.node_id(),
            JobKind::RunBenchmark {
                suite: "quick".into(),
            },
            None,
            now,
        )
        .await
        .unwrap();
    let got = cp
        .poll(&JobPoll::sign(&k1, 0, 0, now).unwrap(), now)
        .await
        .unwrap();
    assert_eq!(got.jobs.len(), 2);
    assert_eq!(
        (got.jobs[0].body().issuer, &got.jobs[0].body().kind),
        (old, &JobKind::RotateIssuerKey { new_issuer: new })
    );
    assert_eq!(
        (
            got.jobs[1].body().issuer,
            got.jobs[1].body().job_id.to_hex()
        ),
        (new, bench.job_id.clone())
    );
    // The node's checks, in order: the rotation opens under the old root, the next job only
    // under the new one (core's rules; b3iq-host applies the rotation between them).
    let mut seen = MemorySeenSet::default();
    got.jobs[0]
        .open(&TrustRoots::new([old]), &k1.node_id(), now, &mut seen)
        .unwrap();
    assert!(got.jobs[1]
        .open(
            &TrustRoots::new([old]),
            &k1.node_id(),
            now,
            &mut seen.clone()
        )
        .is_err());
    got.jobs[1]
        .open(&TrustRoots::new([new]), &k1.node_id(), now, &mut seen)
        .unwrap();

    // k1 reports success: it pins the new key. k2 refuses: its jobs go back to the old key.
    let ok = JobResultReport::sign(
        &k1,
        got.jobs[0].body().job_id,
        JobOutcome::Succeeded,
        None,
        JobResultData::IssuerKeyRotated { issuer: new },
        now,
    )
    .unwrap();
    assert!(cp.job_result(&ok, now).await.unwrap().stored);
    let n1 = cp.store().node(&k1.node_id()).await.unwrap().unwrap();
    assert_eq!((n1.job_key, n1.job_key_next), (Some(new), None));
    let got2 = cp
        .poll(&JobPoll::sign(&k2, 0, 0, now).unwrap(), now)
        .await
        .unwrap();
    let no = JobResultReport::sign(
        &k2,
        got2.jobs[0].body().job_id,
        JobOutcome::Refused,
        None,
        JobResultData::None {},
        now,
    )
    .unwrap();
    cp.job_result(&no, now).await.unwrap();
    let n2 = cp.store().node(&k2.node_id()).await.unwrap().unwrap();
    assert_eq!((n2.job_key, n2.job_key_next), (Some(old), None));
    let later = cp
        .queue_job(
            &alice,
            &k2.node_id(),
            JobKind::BuildSupportBundle {},
            None,
            now,
        )
        .await
        .unwrap();
    let env = cp
        .poll(
            &JobPoll::sign(&k2, got2.jobs[0].body().sequence, 0, now).unwrap(),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            env.jobs[0].body().issuer,
            env.jobs[0].body().job_id.to_hex()
        ),
        (old, later.job_id)
    );

    // The key list shows who lags; a resend reaches only k2; a new node pins the new key.
    let keys = cp.job_keys(now).await.unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (
                k.public_key,
                k.current,
                k.pinned_by_lagging_nodes,
                k.held_here
            ))
            .collect::<Vec<_>>(),
        [(old, false, 1, true), (new, true, 0, true)]
    );
    let again = cp.resend_rotations(now).await.unwrap();
    assert_eq!((again.queued, again.nodes[0].node_id), (1, k2.node_id()));
    let k3 = NodeKey::from_seed([3; 32]);
    let (_, tok) = cp
        .create_enrollment_token(&org.id, 60_000, NOW)
        .await
        .unwrap();
    let c = cp.challenge(NOW).await.unwrap();
    assert_eq!(
        cp.enroll(&tok, &proof(&k3, &c, "cp-test", NOW), NOW)
            .await
            .unwrap()
            .job_key,
        new
    );
}

fn signed_receipt(key: &NodeKey, n: u8, started_at_ms: u64) -> b3iq_core::receipt::SignedReceipt {
    use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId};
    let salt = CommitmentSalt::from_bytes([n; 32]);
    Receipt {
        node_id: key.node_id(),
        request_id: RequestId([n; 16]),
        model_id: "smollm2".into(),
        artifact_digest: b3iq_core::digest::Sha256Digest([7; 32]),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Managed,
        prompt_tokens: 10,
        completion_tokens: u32::from(n),
        started_at_ms,
        ttft_ms: 30,
        duration_ms: 400,
        price_micro_credits: 0,
        prompt_commitment: Commitment::prompt(&salt, b"p"),
        output_commitment: Commitment::output(&salt, b"o"),
        commitment_basis: None,
        attestation_digest: None,
    }
    .sign(key)
    .unwrap()
}

#[tokio::test]
async fn receipts_are_verified_stored_once_and_summed_per_model_and_day() {
    use b3iq_protocol::messages::ReceiptUpload;

    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (k1, k2) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    enroll_all(&cp, &org.id, &[&k1, &k2]).await;
    let now = b3iq_host::context::unix_now_ms();
    let day = 20_000 * 86_400_000;
    let batch: Vec<_> = (1..=5)
        .map(|i| signed_receipt(&k1, i, day + u64::from(i)))
        .collect();
    let ack = cp
        .upload_receipts(&ReceiptUpload::sign(&k1, batch.clone(), now).unwrap(), now)
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.duplicates), (5, 0));
    let ack = cp
        .upload_receipts(
            &ReceiptUpload::sign(&k1, batch[3..].to_vec(), now).unwrap(),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (ack.stored, ack.duplicates),
        (0, 2),
        "a retry after a lost answer counts nothing twice"
    );
    // k2 cannot upload k1's receipts, nor slip one into its own batch.
    let e = cp
        .upload_receipts(
            &ReceiptUpload::sign(
                &k2,
                vec![signed_receipt(&k2, 9, day), batch[0].clone()],
                now,
            )
            .unwrap(),
            now,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Invalid { .. }), "{e}");
    let u = cp.usage(&org.id, &k1.node_id()).await.unwrap();
    assert_eq!(u["receipts"], 5);
    assert_eq!(u["days"][0]["day"], 20_000);
    assert_eq!(u["days"][0]["requests"], 5);
    assert_eq!(u["days"][0]["completion_tokens"], 1 + 2 + 3 + 4 + 5);
    assert_eq!(
        cp.usage(&org.id, &k2.node_id()).await.unwrap()["receipts"],
        0
    );
    // A suspended node's uploads are refused at once, with the reason.
    cp.set_node_status(&org.id, &k1.node_id(), NodeStatus::Suspended, "audit")
        .await
        .unwrap();
    let e = cp
        .upload_receipts(
            &ReceiptUpload::sign(&k1, vec![signed_receipt(&k1, 7, day)], now).unwrap(),
            now,
        )
        .await
        .unwrap_err();
    assert_eq!(e.parts().2, "node_suspended");
    let m = cp.metrics.render();
    assert!(
        m.contains("b3iq_control_receipts_total{outcome=\"stored\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("b3iq_control_receipts_total{outcome=\"duplicate\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn an_enrollment_renews_headlessly_before_it_ends_and_not_after() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let mut cfg = ControlConfig::new(Audience::new("cp-test").unwrap());
    cfg.enrollment_ttl_ms = 60_000;
    let cp = ControlPlane::new(store, cfg, NodeKey::from_seed([99; 32]));
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (k1, k2) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    enroll_all(&cp, &org.id, &[&k1, &k2]).await;
    // Renewed 50 s in: a minute from then.
    let t = NOW + 50_000;
    let c = cp.challenge(t).await.unwrap();
    let req = proof(&k1, &c, "cp-test", t);
    let acc = cp.renew(&req, t).await.unwrap();
    assert_eq!(acc.expires_at_ms, t + 60_000);
    assert_eq!(acc.enrolled_at_ms, NOW, "the first enrollment time stays");
    assert!(
        matches!(
            cp.renew(&req, t).await,
            Err(ControlError::Refused(Refusal::ChallengeUsed))
        ),
        "a replayed nonce"
    );
    // A proof for another audience; a suspended node; an enrollment already over.
    let c = cp.challenge(t).await.unwrap();
    assert!(matches!(
        cp.renew(&proof(&k1, &c, "cp-evil", t), t).await,
        Err(ControlError::Invalid { .. })
    ));
    cp.set_node_status(&org.id, &k1.node_id(), NodeStatus::Suspended, "hold")
        .await
        .unwrap();
    let c = cp.challenge(t).await.unwrap();
    assert_eq!(
        cp.renew(&proof(&k1, &c, "cp-test", t), t)
            .await
            .unwrap_err()
            .parts()
            .2,
        "node_suspended"
    );
    let late = NOW + 60_000;
    let c = cp.challenge(late).await.unwrap();
    assert_eq!(
        cp.renew(&proof(&k2, &c, "cp-test", late), late)
            .await
            .unwrap_err()
            .parts()
            .2,
        "enrollment_expired",
        "an expired node must enroll again"
    );
    let stranger = NodeKey::from_seed([3; 32]);
    let c = cp.challenge(t).await.unwrap();
    assert!(matches!(
        cp.renew(&proof(&stranger, &c, "cp-test", t), t).await,
        Err(ControlError::Refused(Refusal::UnknownNode))
    ));
}

/// Registration (`crate::registration`): what is attested comes from the control plane's
/// records (enrollment key, heartbeat version, benchmark class), each request counts once, and
/// nodes not enrolled, not active or not in network mode are refused.
#[tokio::test]
async fn registration_claims_come_from_the_records_and_each_request_counts_once() {
    use b3iq_control::registration::{device_class, hardware_hash};
    use b3iq_core::job::JobKind;
    use b3iq_core::payout::EthAddress;
    use b3iq_protocol::messages::{JobOutcome, JobPoll, JobResultData, JobResultReport};
    use b3iq_protocol::registration_api::RegistrationRequest;

    let (cp, org, alice, k1, k2) = acme_with_two_nodes().await;
    let audience = Audience::new("cp-test").unwrap();
    let op = EthAddress([0x11; 20]);
    let beat = |mode: OperatingMode, seq: u64, at: u64| HeartbeatRequest {
        heartbeat: k1
            .sign_object(Heartbeat {
                node_id: k1.node_id(),
                sent_at_ms: at,
                sequence: seq,
                mode,
                health: HealthStatus::Healthy,
                counts: HeartbeatCounts::default(),
                model_inventory: vec![],
                software_version: Some("0.3.1-rc.2".into()),
            })
            .unwrap(),
    };
    let req = |at: u64| RegistrationRequest::sign(&k1, audience.clone(), op, at);
    let not_network = |e: ControlError| matches!(e, ControlError::Refused(Refusal::NotNetworkMode(_)));

    // No heartbeat yet, then a managed one: not in network mode.
    assert!(not_network(refused(cp.registration_claims(&req(NOW), NOW).await)));
    cp.heartbeat(&beat(OperatingMode::Managed, 1, NOW), NOW).await.unwrap();
    assert!(not_network(refused(cp.registration_claims(&req(NOW + 1), NOW + 1).await)));
    // In network mode: the enrolled key, the heartbeat's version, class 0 without a benchmark.
    cp.heartbeat(&beat(OperatingMode::Network, 2, NOW + 2), NOW + 2).await.unwrap();
    let c = cp.registration_claims(&req(NOW + 3), NOW + 3).await.unwrap();
    assert_eq!((c.node.public_key, c.operator, c.software_version, c.device_class, c.hardware_hash), (k1.public(), op, 0x00_03_01, 0, hardware_hash(None)));
    // The same request again, or an older one: replayed.
    for at in [NOW + 3, NOW + 2] {
        let e = refused(cp.registration_claims(&req(at), NOW + 4).await);
        assert!(matches!(e, ControlError::Refused(Refusal::Replayed { last, .. }) if last == NOW + 3), "{e:?}");
    }

    // A benchmark measured 120 tokens/s: class 3, and the hash names the measurement.
    cp.queue_job(&alice, &k1.node_id(), JobKind::RunBenchmark { suite: "quick".into() }, None, NOW + 5).await.unwrap();
    let job = cp.poll(&JobPoll::sign(&k1, 0, 0, NOW + 5).unwrap(), NOW + 5).await.unwrap().jobs[0].body().job_id;
    let data = JobResultData::Benchmark { generated_tokens_per_s_milli: 120_000, prompt_tokens_per_s_milli: 400_000, ttft_ms: 30 };
    cp.job_result(&JobResultReport::sign(&k1, job, JobOutcome::Succeeded, None, data, NOW + 6).unwrap(), NOW + 6).await.unwrap();
    let finished = cp.jobs(&org.id, &k1.node_id()).await.unwrap()[0].finished_at_ms.unwrap();
    let c = cp.registration_claims(&req(NOW + 7), NOW + 7).await.unwrap();
    assert_eq!((c.device_class, c.hardware_hash), (3, hardware_hash(Some([120_000, 400_000, 30, finished]))));
    assert_eq!(device_class(Some(120_000)), 3);

    // Another control plane's audience, a stale clock, a forged signature: invalid.
    let other = RegistrationRequest::sign(&k1, Audience::new("cp-other").unwrap(), op, NOW + 8);
    assert!(matches!(refused(cp.registration_claims(&other, NOW + 8).await), ControlError::Invalid { field: "audience", .. }));
    assert!(matches!(refused(cp.registration_claims(&req(NOW + 9), NOW + 9 + 10 * 60_000).await), ControlError::Invalid { field: "sent_at_ms", .. }));
    let mut forged = req(NOW + 10);
    forged.operator = EthAddress([0x22; 20]);
    assert!(matches!(refused(cp.registration_claims(&forged, NOW + 10).await), ControlError::Invalid { .. }));
    // A node not enrolled here, a suspended one.
    let stranger = NodeKey::from_seed([77; 32]);
    let e = refused(cp.registration_claims(&RegistrationRequest::sign(&stranger, audience.clone(), op, NOW), NOW).await);
    assert!(matches!(e, ControlError::Refused(Refusal::UnknownNode)), "{e:?}");
    cp.set_node_status(&org.id, &k2.node_id(), NodeStatus::Suspended, "maintenance").await.unwrap();
    let e = refused(cp.registration_claims(&RegistrationRequest::sign(&k2, audience.clone(), op, NOW), NOW).await);
    assert!(matches!(e, ControlError::Refused(Refusal::Suspended(_))), "{e:?}");
    // Without chain settings there is no attester: nothing is signed (and nothing accepted).
    let e = refused(cp.attest_registration(&req(NOW + 11), NOW + 11).await);
    assert!(matches!(e, ControlError::Refused(Refusal::NotFound(_))), "{e:?}");
    assert_eq!(cp.store().registration_request(&k1.node_id()).await.unwrap().unwrap().sent_at_ms, NOW + 7);
}
