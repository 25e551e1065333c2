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
        .sign_object(EnrollmentProof { node_id: key.node_id(), public_key: key.public(), audience: audience.into(), nonce: c.nonce, signed_at_ms: at })
        .unwrap();
    EnrollmentRequest { challenge_id: c.challenge_id, proof: p }
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
            })
            .unwrap(),
    }
}

fn refused(r: Result<impl std::fmt::Debug, ControlError>) -> ControlError {
    r.expect_err("expected a refusal")
}

#[tokio::test]
async fn enrollment_needs_a_fresh_nonce_the_right_audience_a_matching_key_and_an_unused_token() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (_, tok) = cp.create_enrollment_token(&org.id, 60_000, NOW).await.unwrap();
    assert!(tok.starts_with("b3iq_enroll_"));
    let key = NodeKey::from_seed([1; 32]);

    // Another audience.
    let c = cp.challenge(NOW).await.unwrap();
    let e = refused(cp.enroll(&tok, &proof(&key, &c, "cp-evil", NOW), NOW).await);
    assert!(matches!(e, ControlError::Invalid { .. }) && e.to_string().contains("audience"), "{e}");
    // A proof naming a node id its key does not derive.
    let c = cp.challenge(NOW).await.unwrap();
    let other = NodeKey::from_seed([2; 32]);
    let forged = Signed::from_parts(
        EnrollmentProof { node_id: other.node_id(), public_key: key.public(), audience: "cp-test".into(), nonce: c.nonce, signed_at_ms: NOW },
        key.public(),
        Signature([0; 64]),
    )
    .unwrap();
    let e = refused(cp.enroll(&tok, &EnrollmentRequest { challenge_id: c.challenge_id, proof: forged }, NOW).await);
    assert!(matches!(e, ControlError::Invalid { .. }), "{e}");
    // A proof signed by another key than the one it names.
    let bad_sig = Signed::from_parts(
        EnrollmentProof { node_id: key.node_id(), public_key: key.public(), audience: "cp-test".into(), nonce: c.nonce, signed_at_ms: NOW },
        key.public(),
        other.sign_raw(b"not the message"),
    )
    .unwrap();
    assert!(matches!(refused(cp.enroll(&tok, &EnrollmentRequest { challenge_id: c.challenge_id, proof: bad_sig }, NOW).await), ControlError::Invalid { .. }));
    // An expired challenge.
    let c = cp.challenge(NOW).await.unwrap();
    let late = c.expires_at_ms;
    assert!(matches!(refused(cp.enroll(&tok, &proof(&key, &c, "cp-test", late), late).await), ControlError::Refused(Refusal::ChallengeUsed)));
    // A malformed token is refused before any lookup.
    let c = cp.challenge(NOW).await.unwrap();
    assert!(matches!(refused(cp.enroll("b3iq_enroll_nope", &proof(&key, &c, "cp-test", NOW), NOW).await), ControlError::Unauthorized(_)));

    // The good one; then its nonce and its token are spent.
    let c = cp.challenge(NOW).await.unwrap();
    let req = proof(&key, &c, "cp-test", NOW);
    let acc = cp.enroll(&tok, &req, NOW + 5).await.unwrap();
    assert_eq!((acc.node_id, acc.org_id.as_str(), acc.audience.as_str()), (key.node_id(), org.id.as_str(), "cp-test"));
    assert_eq!(acc.job_key, NodeKey::from_seed([99; 32]).public());
    assert_eq!(acc.heartbeat_interval_ms, 10_000);
    assert_eq!(acc.expires_at_ms, NOW + 5 + cp.config().enrollment_ttl_ms);
    assert!(matches!(refused(cp.enroll(&tok, &req, NOW + 6).await), ControlError::Refused(Refusal::ChallengeUsed)), "replayed nonce");
    let c = cp.challenge(NOW).await.unwrap();
    let k2 = NodeKey::from_seed([3; 32]);
    assert!(matches!(refused(cp.enroll(&tok, &proof(&k2, &c, "cp-test", NOW), NOW).await), ControlError::Refused(Refusal::TokenUsed)), "reused token");
    assert_eq!(cp.metrics.enrollments_accepted.load(Ordering::Relaxed), 1);
    assert_eq!(cp.metrics.enrollments_refused.load(Ordering::Relaxed), 7);
}

#[tokio::test]
async fn heartbeats_are_signed_ordered_timely_and_from_active_nodes() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    let (_, tok) = cp.create_enrollment_token(&org.id, 60_000, NOW).await.unwrap();
    let key = NodeKey::from_seed([1; 32]);
    let c = cp.challenge(NOW).await.unwrap();
    cp.enroll(&tok, &proof(&key, &c, "cp-test", NOW), NOW).await.unwrap();
    assert_eq!(cp.node(&org.id, &key.node_id(), NOW).await.unwrap().presence, "never_seen");

    let ack = cp.heartbeat(&heartbeat(&key, 1, NOW), NOW).await.unwrap();
    assert_eq!((ack.sequence, ack.next_heartbeat_at_ms), (1, NOW + 10_000));
    assert_eq!(cp.node(&org.id, &key.node_id(), NOW + 30_000).await.unwrap().presence, "online");
    assert_eq!(cp.node(&org.id, &key.node_id(), NOW + 30_001).await.unwrap().presence, "offline", "3 missed intervals");

    // Replayed; forged (a signature from another key; a bit flipped); skewed; from a stranger.
    assert!(matches!(refused(cp.heartbeat(&heartbeat(&key, 1, NOW), NOW).await), ControlError::Refused(Refusal::StaleSequence { .. })));
    let good = heartbeat(&key, 2, NOW).heartbeat;
    let other = NodeKey::from_seed([7; 32]);
    let forged = Signed::from_parts(good.body().clone(), key.public(), other.sign_raw(b"x")).unwrap();
    assert!(matches!(refused(cp.heartbeat(&HeartbeatRequest { heartbeat: forged }, NOW).await), ControlError::Invalid { .. }));
    let mut sig = good.signature().0;
    sig[5] ^= 1;
    let flipped = Signed::from_parts(good.body().clone(), key.public(), Signature(sig)).unwrap();
    assert!(matches!(refused(cp.heartbeat(&HeartbeatRequest { heartbeat: flipped }, NOW).await), ControlError::Invalid { .. }));
    let skew = cp.config().max_clock_skew_ms + 1;
    let e = refused(cp.heartbeat(&heartbeat(&key, 3, NOW - skew), NOW).await);
    assert!(e.to_string().contains("clock"), "{e}");
    assert!(matches!(refused(cp.heartbeat(&heartbeat(&other, 1, NOW), NOW).await), ControlError::Refused(Refusal::UnknownNode)));
    cp.heartbeat(&heartbeat(&key, 4, NOW + 1), NOW + 1).await.unwrap();

    // Suspended, then revoked: refused at once, with the operator's reason.
    cp.set_node_status(&org.id, &key.node_id(), NodeStatus::Suspended, "maintenance").await.unwrap();
    let e = refused(cp.heartbeat(&heartbeat(&key, 5, NOW + 2), NOW + 2).await);
    assert!(e.to_string().contains("maintenance"), "{e}");
    assert_eq!(e.parts().2, "node_suspended");
    cp.set_node_status(&org.id, &key.node_id(), NodeStatus::Revoked, "key leaked").await.unwrap();
    assert_eq!(refused(cp.heartbeat(&heartbeat(&key, 6, NOW + 3), NOW + 3).await).parts().2, "node_revoked");
    assert!(cp.set_node_status(&org.id, &key.node_id(), NodeStatus::Active, "\u{7}").await.is_err(), "control characters in a reason");

    let v = cp.node(&org.id, &key.node_id(), NOW + 3).await.unwrap();
    assert_eq!((v.presence, v.node.refused_heartbeats), ("revoked", 2), "stale + skew counted on the node");
    let m = &cp.metrics;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!((g(&m.heartbeats_accepted), g(&m.heartbeats_stale), g(&m.heartbeats_forged), g(&m.heartbeats_skewed), g(&m.heartbeats_denied)), (2, 1, 2, 1, 3));
    let text = m.render();
    assert!(text.contains("b3iq_control_heartbeats_total{outcome=\"forged\"} 2"), "{text}");
}

#[tokio::test]
async fn operators_sign_in_with_argon2id_and_sessions_scope_them_to_their_org() {
    let cp = plane();
    let org = cp.create_org("acme", NOW).await.unwrap();
    assert!(cp.create_org("bad/name", NOW).await.is_err());
    assert!(matches!(cp.create_operator("acme", "alice", "short", NOW).await, Err(ControlError::Invalid { .. })));
    let op = cp.create_operator("acme", "alice", "a long operator password", NOW).await.unwrap();
    assert!(op.password_phc.starts_with("$argon2id$"));
    assert!(matches!(cp.login("alice", "wrong password!", NOW).await, Err(ControlError::Unauthorized(_))));
    assert!(matches!(cp.login("mallory", "a long operator password", NOW).await, Err(ControlError::Unauthorized(_))));
    let (session, exp) = cp.login("alice", "a long operator password", NOW).await.unwrap();
    assert_eq!(exp, NOW + cp.config().session_ttl_ms);
    assert_eq!(cp.operator(&session, NOW).await.unwrap().org_id, org.id);
    assert!(cp.operator(&session, exp).await.is_err(), "expired");
    cp.logout(&session).await.unwrap();
    assert!(cp.operator(&session, NOW).await.is_err(), "signed out");
    assert!(cp.create_enrollment_token(&org.id, 0, NOW).await.is_err());
    assert!(cp.create_enrollment_token(&org.id, 31 * 24 * 3_600_000, NOW).await.is_err());
}
