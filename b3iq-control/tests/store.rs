//! One conformance suite for both `ControlStore` backends: SQLite (a real file) and Postgres (a
//! real throwaway server, see `support/pg.rs`). Each rule is checked sequentially, then under
//! concurrency (one winner among racing enrollments and heartbeats).

mod support;

use std::sync::Arc;

use b3iq_control::store::postgres::PostgresStore;
use b3iq_control::store::sqlite::SqliteStore;
use b3iq_control::store::credits::{GatewayKey, Hold, HoldSettlement};
use b3iq_control::store::*;
use b3iq_control::ControlError;
use b3iq_core::heartbeat::HealthStatus;
use b3iq_core::{NodeId, NodeKey, NodePublicKey};

fn refusal(r: Result<impl std::fmt::Debug, ControlError>) -> Refusal {
    match r {
        Err(ControlError::Refused(x)) => x,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn org(id: &str, name: &str) -> Org {
    Org {
        id: id.into(),
        name: name.into(),
        created_at_ms: 1,
    }
}

fn token(id: &str, org_id: &str, secret: &str, expires_at_ms: u64) -> EnrollmentTokenRow {
    EnrollmentTokenRow {
        id: id.into(),
        org_id: org_id.into(),
        token_hash: b3iq_control::plane::secret_hash(secret),
        created_at_ms: 1,
        expires_at_ms,
    }
}

async fn challenge(s: &Arc<dyn ControlStore>, id: u8, now: u64) -> [u8; 16] {
    let c = ChallengeRow {
        id: [id; 16],
        nonce: [id; 32],
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
    };
    assert!(s.create_challenge(&c, now).await.unwrap());
    c.id
}

fn commit(ch: [u8; 16], secret: &str, key: &NodeKey, now: u64) -> EnrollCommit {
    EnrollCommit {
        challenge_id: ch,
        token_hash: b3iq_control::plane::secret_hash(secret),
        node_id: key.node_id(),
        public_key: key.public(),
        now_ms: now,
        expires_at_ms: now + 1_000_000,
        job_key: first_job_key(),
    }
}

/// The job key every node of the suite enrolls pinning.
fn first_job_key() -> NodePublicKey {
    NodeKey::from_seed([0xc0; 32]).public()
}

fn hb(id: NodeId, seq: u64, now: u64) -> HeartbeatCommit {
    HeartbeatCommit {
        node_id: id,
        sequence: seq,
        sent_at_ms: now,
        received_at_ms: now,
        health: HealthStatus::Healthy,
        body: serde_json::json!({"sequence": seq}),
    }
}

/// Charges receipts `[id; 32]` of `node` as the gateway does: a hold per receipt of a key of
/// org_a (made once, with credits), settled with the receipt.
async fn charge(s: &dyn ControlStore, node: &NodeId, ids: &[u8], now: u64) {
    let key = GatewayKey {
        id: "gk_00000000000000ee".into(),
        org_id: "org_a".into(),
        name: "epochs".into(),
        rate_per_min: 1_000_000,
        spend_limit_per_day: None,
        created_at_ms: now,
        revoked_at_ms: None,
    };
    if s.gateway_keys("org_a").await.unwrap().iter().all(|k| k.id != key.id) {
        s.create_gateway_key(&key, &[0xee; 32]).await.unwrap();
        s.add_credits("org_a", 1_000_000, "epochs", now).await.unwrap();
    }
    for &i in ids {
        let id = [i; 16];
        s.place_hold(&Hold { id, org_id: "org_a".into(), key_id: key.id.clone(), amount: 10, created_at_ms: now }).await.unwrap();
        s.settle_hold(&HoldSettlement { hold_id: id, charge: 5, node_id: *node, receipt_id: [i; 32], now_ms: now }).await.unwrap();
    }
}

async fn conformance(s: Arc<dyn ControlStore>) {
    // Organisations and operators.
    s.create_org(&org("org_a", "acme")).await.unwrap();
    s.create_org(&org("org_b", "globex")).await.unwrap();
    assert!(matches!(
        refusal(s.create_org(&org("org_c", "acme")).await),
        Refusal::Exists(_)
    ));
    assert_eq!(s.org("acme").await.unwrap().unwrap().id, "org_a");
    assert_eq!(s.org("org_b").await.unwrap().unwrap().name, "globex");
    assert!(s.org("nobody").await.unwrap().is_none());
    let op = Operator {
        id: "op_1".into(),
        org_id: "org_a".into(),
        username: "alice".into(),
        password_phc: "$argon2id$x".into(),
        created_at_ms: 1,
    };
    s.create_operator(&op).await.unwrap();
    assert!(matches!(
        refusal(
            s.create_operator(&Operator {
                id: "op_2".into(),
                ..op.clone()
            })
            .await
        ),
        Refusal::Exists(_)
    ));
    assert!(matches!(
        refusal(
            s.create_operator(&Operator {
                id: "op_3".into(),
                org_id: "org_zz".into(),
                username: "bob".into(),
                ..op.clone()
            })
            .await
        ),
        Refusal::NotFound(_)
    ));
    assert_eq!(s.operator_by_username("alice").await.unwrap().unwrap(), op);

    // Sessions expire and end.
    s.create_session(&[1; 32], "op_1", 100, 200).await.unwrap();
    assert_eq!(
        s.session_operator(&[1; 32], 150).await.unwrap().unwrap().id,
        "op_1"
    );
    assert!(s.session_operator(&[1; 32], 200).await.unwrap().is_none());
    assert!(s.session_operator(&[2; 32], 150).await.unwrap().is_none());
    s.delete_session(&[1; 32]).await.unwrap();
    assert!(s.session_operator(&[1; 32], 150).await.unwrap().is_none());

    // Tokens and challenges.
    let now = 10_000;
    s.create_enrollment_token(&token("etk_1", "org_a", "tok-1", now + 100_000))
        .await
        .unwrap();
    s.create_enrollment_token(&token("etk_2", "org_a", "tok-2", now + 100_000))
        .await
        .unwrap();
    s.create_enrollment_token(&token("etk_old", "org_a", "tok-old", now - 1))
        .await
        .unwrap();
    s.create_enrollment_token(&token("etk_b", "org_b", "tok-b", now + 100_000))
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            s.create_enrollment_token(&token("etk_x", "org_zz", "tok-x", now + 1))
                .await
        ),
        Refusal::NotFound(_)
    ));

    let k1 = NodeKey::from_seed([1; 32]);
    let ch = challenge(&s, 1, now).await;
    assert_eq!(
        s.live_challenge(&ch, now).await.unwrap().unwrap().nonce,
        [1; 32]
    );
    assert!(
        s.live_challenge(&ch, now + 60_000).await.unwrap().is_none(),
        "expired challenge"
    );
    let n = s.enroll(&commit(ch, "tok-1", &k1, now)).await.unwrap();
    assert_eq!(
        (n.node_id, n.status, n.org_id.as_str(), n.enrolled_at_ms),
        (k1.node_id(), NodeStatus::Active, "org_a", now)
    );
    assert!(n.last_heartbeat.is_none());
    assert!(
        s.live_challenge(&ch, now).await.unwrap().is_none(),
        "used challenge is not live"
    );
    // Using a challenge outside enrollment (the gateway's tunnel): once, and only while live.
    let cu = challenge(&s, 40, now).await;
    assert!(
        !s.use_challenge(&cu, now + 60_000).await.unwrap(),
        "expired"
    );
    assert!(s.use_challenge(&cu, now).await.unwrap());
    assert!(!s.use_challenge(&cu, now).await.unwrap(), "used once");
    // A replayed challenge, a reused token, an unknown or expired token.
    assert_eq!(
        refusal(s.enroll(&commit(ch, "tok-2", &k1, now)).await),
        Refusal::ChallengeUsed
    );
    let k2 = NodeKey::from_seed([2; 32]);
    let ch2 = challenge(&s, 2, now).await;
    assert_eq!(
        refusal(s.enroll(&commit(ch2, "tok-1", &k2, now)).await),
        Refusal::TokenUsed
    );
    assert_eq!(
        refusal(s.enroll(&commit(ch2, "tok-2", &k2, now)).await),
        Refusal::ChallengeUsed,
        "a refused attempt uses up its challenge"
    );
    let ch3 = challenge(&s, 3, now).await;
    assert_eq!(
        refusal(s.enroll(&commit(ch3, "tok-nope", &k2, now)).await),
        Refusal::TokenUnknown
    );
    let ch4 = challenge(&s, 4, now).await;
    assert_eq!(
        refusal(s.enroll(&commit(ch4, "tok-old", &k2, now)).await),
        Refusal::TokenExpired
    );
    // A node of another organisation.
    let ch5 = challenge(&s, 5, now).await;
    assert_eq!(
        refusal(s.enroll(&commit(ch5, "tok-b", &k1, now)).await),
        Refusal::OtherOrg
    );
    assert!(s.node(&k2.node_id()).await.unwrap().is_none());

    // Heartbeats: strictly increasing sequence; refusals counted.
    let id = k1.node_id();
    s.record_heartbeat(&hb(id, 1, now + 1)).await.unwrap();
    assert_eq!(
        refusal(s.record_heartbeat(&hb(id, 1, now + 2)).await),
        Refusal::StaleSequence { got: 1, last: 1 }
    );
    assert_eq!(
        refusal(s.record_heartbeat(&hb(id, 0, now + 2)).await),
        Refusal::StaleSequence { got: 0, last: 1 }
    );
    s.record_heartbeat(&hb(id, 7, now + 3)).await.unwrap();
    s.count_refused_heartbeat(&id).await.unwrap();
    let n = s.node(&id).await.unwrap().unwrap();
    let last = n.last_heartbeat.unwrap();
    assert_eq!(
        (last.sequence, last.received_at_ms, last.health),
        (7, now + 3, HealthStatus::Healthy)
    );
    assert_eq!(last.body["sequence"], 7);
    assert_eq!(n.refused_heartbeats, 3);
    assert_eq!(s.heartbeat_count(&id, now).await.unwrap(), 2);
    assert_eq!(s.heartbeat_count(&id, now + 3).await.unwrap(), 1);
    assert_eq!(
        refusal(s.record_heartbeat(&hb(k2.node_id(), 1, now)).await),
        Refusal::UnknownNode
    );

    // Suspension, resumption, revocation; an organisation only changes its own nodes.
    assert_eq!(
        refusal(
            s.set_node_status(&id, "org_b", NodeStatus::Suspended, "x")
                .await
        ),
        Refusal::UnknownNode
    );
    s.set_node_status(&id, "org_a", NodeStatus::Suspended, "billing hold")
        .await
        .unwrap();
    assert_eq!(
        refusal(s.record_heartbeat(&hb(id, 8, now + 4)).await),
        Refusal::Suspended("billing hold".into())
    );
    s.set_node_status(&id, "org_a", NodeStatus::Active, "ignored")
        .await
        .unwrap();
    assert_eq!(s.node(&id).await.unwrap().unwrap().status_reason, "");
    s.record_heartbeat(&hb(id, 8, now + 4)).await.unwrap();
    // A suspended node that re-enrolls stays suspended.
    s.set_node_status(&id, "org_a", NodeStatus::Suspended, "again")
        .await
        .unwrap();
    s.create_enrollment_token(&token("etk_3", "org_a", "tok-3", now + 100_000))
        .await
        .unwrap();
    let ch6 = challenge(&s, 6, now).await;
    let n = s.enroll(&commit(ch6, "tok-3", &k1, now + 5)).await.unwrap();
    assert_eq!(
        (n.status, n.enrolled_at_ms, n.expires_at_ms),
        (NodeStatus::Suspended, now, now + 5 + 1_000_000)
    );
    s.set_node_status(&id, "org_a", NodeStatus::Revoked, "stolen")
        .await
        .unwrap();
    assert_eq!(
        refusal(s.record_heartbeat(&hb(id, 9, now + 6)).await),
        Refusal::Revoked("stolen".into())
    );
    assert_eq!(
        refusal(
            s.set_node_status(&id, "org_a", NodeStatus::Active, "")
                .await
        ),
        Refusal::Revoked("stolen".into()),
        "revocation is final"
    );
    s.create_enrollment_token(&token("etk_4", "org_a", "tok-4", now + 100_000))
        .await
        .unwrap();
    let ch7 = challenge(&s, 7, now).await;
    assert_eq!(
        refusal(s.enroll(&commit(ch7, "tok-4", &k1, now + 7)).await),
        Refusal::Revoked("stolen".into())
    );

    // Renewal: uses a fresh challenge, extends an active enrollment, never shortens it, and
    // refuses a revoked node, another key, or an unknown node.
    let k4 = NodeKey::from_seed([4; 32]);
    s.create_enrollment_token(&token("etk_r", "org_a", "tok-r", now + 100_000))
        .await
        .unwrap();
    let chr = challenge(&s, 30, now).await;
    let mut c4 = commit(chr, "tok-r", &k4, now);
    c4.expires_at_ms = now + 100;
    s.enroll(&c4).await.unwrap();
    let chr = challenge(&s, 31, now).await;
    assert_eq!(
        s.renew(&chr, &k4.node_id(), &k4.public(), now + 50, now + 5_000)
            .await
            .unwrap()
            .expires_at_ms,
        now + 5_000
    );
    assert_eq!(
        refusal(
            s.renew(&chr, &k4.node_id(), &k4.public(), now + 51, now + 6_000)
                .await
        ),
        Refusal::ChallengeUsed
    );
    let chr = challenge(&s, 32, now).await;
    assert_eq!(
        s.renew(&chr, &k4.node_id(), &k4.public(), now + 52, now + 10)
            .await
            .unwrap()
            .expires_at_ms,
        now + 5_000,
        "never shortened"
    );
    let chr = challenge(&s, 33, now).await;
    assert_eq!(
        refusal(
            s.renew(&chr, &k4.node_id(), &k1.public(), now + 53, now + 9_000)
                .await
        ),
        Refusal::UnknownNode,
        "another key"
    );
    let chr = challenge(&s, 34, now).await;
    assert!(matches!(
        refusal(
            s.renew(&chr, &k1.node_id(), &k1.public(), now + 53, now + 9_000)
                .await
        ),
        Refusal::Revoked(_)
    ));

    // An enrollment that ran out refuses heartbeats until renewed.
    let k3 = NodeKey::from_seed([3; 32]);
    let ch8 = challenge(&s, 8, now).await;
    let mut c = commit(ch8, "tok-4", &k3, now);
    c.expires_at_ms = now + 10;
    s.enroll(&c).await.unwrap();
    s.record_heartbeat(&hb(k3.node_id(), 1, now + 9))
        .await
        .unwrap();
    assert_eq!(
        refusal(s.record_heartbeat(&hb(k3.node_id(), 2, now + 10)).await),
        Refusal::EnrollmentExpired
    );
    let listed: Vec<NodeId> = s
        .nodes("org_a")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.contains(&k1.node_id())
            && listed.contains(&k3.node_id())
            && listed.contains(&k4.node_id())
    );
    assert!(s.nodes("org_b").await.unwrap().is_empty());

    // Concurrency: one token, 8 nodes racing with their own challenges: exactly one enrolls.
    s.create_enrollment_token(&token("etk_race", "org_b", "tok-race", now + 100_000))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = s.clone();
        let ch = challenge(&s, 100 + i, now).await;
        tasks.push(tokio::spawn(async move {
            let k = NodeKey::from_seed([50 + i; 32]);
            s.enroll(&commit(ch, "tok-race", &k, now)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(e, ControlError::Refused(Refusal::TokenUsed)),
                "{e:?}"
            ),
        }
    }
    assert_eq!(ok, 1, "a token enrolls exactly one node");
    // 16 heartbeats racing with the same sequence: exactly one is stored.
    let winner = s.nodes("org_b").await.unwrap()[0].node_id;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.record_heartbeat(&hb(winner, 42, now + 20)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "one heartbeat per sequence");
    let n = s.node(&winner).await.unwrap().unwrap();
    assert_eq!(
        (n.last_heartbeat.unwrap().sequence, n.refused_heartbeats),
        (42, 15)
    );
    // A burst of heartbeats with different fates, at once (SQLite commits them as one group):
    // each gets its own answer, a refusal undoes only its own writes, the accepted ones stay.
    let stranger = NodeKey::from_seed([77; 32]).node_id();
    let k1_refused = s
        .node(&k1.node_id())
        .await
        .unwrap()
        .unwrap()
        .refused_heartbeats;
    let burst = [
        (winner, 43, None),
        (winner, 42, Some("stale")),
        (k4.node_id(), 1, None),
        (k1.node_id(), 9, Some("revoked")),
        (k3.node_id(), 3, Some("expired")),
        (stranger, 1, Some("unknown")),
    ];
    let tasks: Vec<_> = burst
        .iter()
        .map(|&(id, seq, _)| {
            let s = s.clone();
            tokio::spawn(async move { s.record_heartbeat(&hb(id, seq, now + 21)).await })
        })
        .collect();
    for (t, (_, seq, fate)) in tasks.into_iter().zip(burst) {
        let r = t.await.unwrap();
        match fate {
            None => assert!(r.is_ok(), "sequence {seq}: {r:?}"),
            Some("stale") => assert!(matches!(refusal(r), Refusal::StaleSequence { got: 42, .. })),
            Some("revoked") => assert!(matches!(refusal(r), Refusal::Revoked(_))),
            Some("expired") => assert_eq!(refusal(r), Refusal::EnrollmentExpired),
            Some(_) => assert_eq!(refusal(r), Refusal::UnknownNode),
        }
    }
    let n = s.node(&winner).await.unwrap().unwrap();
    assert_eq!(
        (n.last_heartbeat.unwrap().sequence, n.refused_heartbeats),
        (43, 16)
    );
    assert_eq!(
        s.node(&k4.node_id())
            .await
            .unwrap()
            .unwrap()
            .last_heartbeat
            .unwrap()
            .sequence,
        1
    );
    assert_eq!(
        s.heartbeat_count(&winner, 0).await.unwrap(),
        2,
        "history: 42 and 43"
    );
    assert_eq!(
        s.node(&k1.node_id())
            .await
            .unwrap()
            .unwrap()
            .refused_heartbeats,
        k1_refused,
        "a revoked node's refusal writes nothing"
    );

    // Jobs: one sequence for all nodes, delivered in order and only to their node, reported once.
    let job = |node: NodeId, tag: u8, ttl: u64| -> JobSigner {
        Box::new(move |seq| {
            Ok(JobRow {
                job_id: [tag; 16],
                node_id: node,
                org_id: "org_a".into(),
                sequence: seq,
                kind: "run_benchmark".into(),
                envelope: vec![tag, 1, 2],
                created_by: "alice".into(),
                created_at_ms: now,
                expires_at_ms: now + ttl,
                delivered_at_ms: None,
                outcome: None,
                code: None,
                result: None,
                finished_at_ms: None,
            })
        })
    };
    let (n1, n3) = (k1.node_id(), k3.node_id());
    let a = s.queue_job(job(n1, 1, 1_000)).await.unwrap();
    let b = s.queue_job(job(n3, 2, 1_000)).await.unwrap();
    let c = s.queue_job(job(n1, 3, 5_000)).await.unwrap();
    assert!(a.sequence < b.sequence && b.sequence < c.sequence);
    let p: Vec<u64> = s
        .pending_jobs(&n1, 0, now, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.sequence)
        .collect();
    assert_eq!(p, [a.sequence, c.sequence]);
    assert_eq!(
        s.pending_jobs(&n1, a.sequence, now, 10).await.unwrap()[0].envelope,
        vec![3, 1, 2]
    );
    assert_eq!(
        s.pending_jobs(&n1, 0, now + 1_000, 10).await.unwrap().len(),
        1,
        "an expired job is not delivered"
    );
    assert!(s
        .finish_job(
            &n1,
            &[1; 16],
            "succeeded",
            None,
            &serde_json::json!({"type": "none"}),
            now + 1
        )
        .await
        .unwrap());
    assert!(
        !s.finish_job(
            &n1,
            &[1; 16],
            "failed",
            Some("x"),
            &serde_json::json!({"type": "none"}),
            now + 2
        )
        .await
        .unwrap(),
        "a retry is not stored again"
    );
    assert!(
        matches!(
            refusal(
                s.finish_job(
                    &n3,
                    &[1; 16],
                    "succeeded",
                    None,
                    &serde_json::json!({}),
                    now
                )
                .await
            ),
            Refusal::NotFound(_)
        ),
        "another node's job"
    );
    let listed = s.jobs(&n1).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.job_id[0]).collect::<Vec<_>>(),
        [3, 1]
    );
    let done = &listed[1];
    assert_eq!(
        (
            done.outcome.as_deref(),
            done.finished_at_ms,
            done.delivered_at_ms
        ),
        (Some("succeeded"), Some(now + 1), Some(now))
    );
    assert_eq!(done.result.as_ref().unwrap()["type"], "none");
    // The newest job of a kind with an outcome (the explorer's benchmark): job 3 is newer but
    // unfinished, job 1 succeeded; none failed; none for another node or kind.
    assert_eq!(s.last_job(&n1, "run_benchmark", "succeeded").await.unwrap().map(|j| j.job_id), Some([1; 16]));
    assert!(s.last_job(&n1, "run_benchmark", "failed").await.unwrap().is_none());
    assert!(s.last_job(&n1, "change_mode", "succeeded").await.unwrap().is_none());
    assert!(s.last_job(&n3, "run_benchmark", "succeeded").await.unwrap().is_none());
    assert_eq!(
        s.pending_jobs(&n1, 0, now, 10).await.unwrap().len(),
        1,
        "a reported job is not delivered again"
    );
    // A signer that fails takes no sequence; racing queuers get distinct, consecutive ones.
    assert!(s
        .queue_job(Box::new(|_| Err(ControlError::Config("no".into()))))
        .await
        .is_err());
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = s.clone();
        let j = job(n3, 10 + i, 1_000);
        tasks.push(tokio::spawn(async move {
            s.queue_job(j).await.unwrap().sequence
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (c.sequence + 1..=c.sequence + 8).collect::<Vec<_>>());

    // Receipts: stored once by id; usage summed per node, model and UTC day, counted once.
    let rcpt = |node: NodeId, id: u8, model: &str, day: u64, completion: u32| ReceiptRow {
        receipt_id: [id; 32],
        node_id: node,
        model_id: model.into(),
        mode: "managed".into(),
        prompt_tokens: 10,
        completion_tokens: completion,
        price_micro_credits: 5,
        started_at_ms: day * DAY_MS + 1_000,
        signed: vec![id],
    };
    let batch = vec![
        rcpt(n1, 1, "m", 20_000, 3),
        rcpt(n1, 2, "m", 20_000, 4),
        rcpt(n1, 3, "m2", 20_000, 5),
        rcpt(n1, 4, "m", 20_001, 6),
    ];
    assert_eq!(s.store_receipts(batch.clone(), now).await.unwrap(), (4, 0));
    assert_eq!(
        s.store_receipts(batch[1..].to_vec(), now).await.unwrap(),
        (0, 3),
        "a retry stores nothing again"
    );
    assert_eq!(
        s.store_receipts(
            vec![rcpt(n3, 9, "m", 20_000, 1), rcpt(n1, 1, "m", 20_000, 3)],
            now
        )
        .await
        .unwrap(),
        (1, 1)
    );
    assert_eq!(
        (
            s.receipt_count(&n1).await.unwrap(),
            s.receipt_count(&n3).await.unwrap()
        ),
        (4, 1)
    );
    let usage = s.usage(&n1).await.unwrap();
    let summary: Vec<(u64, &str, u64, u64, u64, u64)> = usage
        .iter()
        .map(|u| {
            (
                u.day,
                u.model_id.as_str(),
                u.requests,
                u.prompt_tokens,
                u.completion_tokens,
                u.price_micro_credits,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (20_001, "m", 1, 10, 6, 5),
            (20_000, "m", 2, 20, 7, 10),
            (20_000, "m2", 1, 10, 5, 5)
        ]
    );
    // Racing uploads of the same receipts: each is stored and counted once.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        let b: Vec<ReceiptRow> = (100..120).map(|i| rcpt(n3, i, "m", 20_002, 1)).collect();
        tasks.push(tokio::spawn(async move {
            s.store_receipts(b, now).await.unwrap().0
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 20);
    assert_eq!(
        s.usage(&n3)
            .await
            .unwrap()
            .iter()
            .map(|u| u.requests)
            .sum::<u64>(),
        21
    );

    // Epochs: network receipts that settled a gateway hold (the customer was charged their
    // price) only, each assigned once; a late upload lands in the next epoch.
    let net = |id: u8, started_at_ms: u64| ReceiptRow { mode: "network".into(), started_at_ms, ..rcpt(n1, id, "m", 0, 1) };
    assert_eq!(s.close_epoch(1_000_000, now).await.unwrap(), None, "no network receipt yet: nothing closed");
    assert!(s.epochs(10).await.unwrap().is_empty());
    s.store_receipts(vec![net(200, 500_000), net(201, 900_000), net(202, 1_000_000), net(199, 600_000)], now).await.unwrap();
    charge(&*s, &n1, &[200, 201, 202, 203], now).await;
    let e1 = s.close_epoch(1_000_000, now + 1).await.unwrap().unwrap();
    assert_eq!((e1.epoch_id, e1.start_ms, e1.end_ms, e1.receipt_count, e1.closed_at_ms), (1, 500_000, 1_000_000, 2, now + 1));
    assert_eq!(s.epoch_receipts(1).await.unwrap(), [vec![200u8], vec![201u8]], "by receipt id; the managed receipts, the one at the end and the uncharged one (199) stay out");
    s.store_receipts(vec![net(203, 700_000)], now).await.unwrap(); // uploaded late
    let e2 = s.close_epoch(2_000_000, now + 2).await.unwrap().unwrap();
    assert_eq!((e2.epoch_id, e2.start_ms, e2.receipt_count), (2, 700_000, 2));
    assert_eq!(s.epoch_receipts(2).await.unwrap(), [vec![202u8], vec![203u8]]);
    assert_eq!(s.close_epoch(3_000_000, now + 3).await.unwrap(), None, "every charged receipt is in exactly one epoch; an uncharged one in none");
    assert!(s.epoch_receipts(3).await.unwrap().is_empty());
    s.set_epoch_claim_file(1, "{\"epoch_id\":1}").await.unwrap();
    s.set_epoch_posted(1, Some("0xabc"), 1_234).await.unwrap();
    s.set_epoch_posted(1, None, 1_234).await.unwrap(); // found posted on a retry: keeps the hash
    let got = s.epoch(1).await.unwrap().unwrap();
    assert_eq!((got.claim_file.as_deref(), got.tx_hash.as_deref(), got.posted_at), (Some("{\"epoch_id\":1}"), Some("0xabc"), Some(1_234)));
    assert_eq!(s.epochs(10).await.unwrap().iter().map(|e| e.epoch_id).collect::<Vec<_>>(), [2, 1]);
    assert!(matches!(refusal(s.set_epoch_posted(9, None, 1).await), Refusal::NotFound(_)));
    // The public explorer: a receipt's epoch (unknown, in none yet, in one).
    assert_eq!(s.receipt_epoch(&[200; 32]).await.unwrap(), Some(Some(1)));
    assert_eq!(s.receipt_epoch(&[203; 32]).await.unwrap(), Some(Some(2)), "the late upload is in the next epoch");
    assert_eq!(s.receipt_epoch(&[199; 32]).await.unwrap(), Some(None), "stored, uncharged: in no epoch");
    assert_eq!(s.receipt_epoch(&[250; 32]).await.unwrap(), None, "never stored");
    // Every organisation's nodes, oldest enrollment first, within the limit.
    let mut every = Vec::new();
    for o in ["org_a", "org_b"] {
        every.extend(s.nodes(o).await.unwrap());
    }
    every.sort_by_key(|n| (n.enrolled_at_ms, n.node_id.to_text()));
    assert!(every.iter().any(|n| n.org_id == "org_b") && every.iter().any(|n| n.org_id == "org_a"), "two organisations' nodes");
    assert_eq!(s.all_nodes(1000).await.unwrap(), every);
    assert_eq!(s.all_nodes(1).await.unwrap(), every[..1]);
    // Payout addresses.
    assert!(s.payout_addresses().await.unwrap().is_empty());
    s.set_payout_address(&n1, "0x00000000000000000000000000000000000000aa").await.unwrap();
    s.set_payout_address(&n1, "0x00000000000000000000000000000000000000bb").await.unwrap();
    assert_eq!(s.payout_addresses().await.unwrap(), [(n1, "0x00000000000000000000000000000000000000bb".to_string())]);
    assert!(matches!(refusal(s.set_payout_address(&NodeKey::from_seed([77; 32]).node_id(), "0x00000000000000000000000000000000000000aa").await), Refusal::UnknownNode));
    // Registration requests: accepted once each, newer only; per node.
    assert_eq!(s.registration_request(&n1).await.unwrap(), None);
    s.accept_registration_request(&n1, 5_000, "0x00000000000000000000000000000000000000aa", now).await.unwrap();
    assert!(matches!(refusal(s.accept_registration_request(&n1, 5_000, "0x00000000000000000000000000000000000000aa", now).await), Refusal::Replayed { got: 5_000, last: 5_000, .. }), "the same request again");
    assert!(matches!(refusal(s.accept_registration_request(&n1, 4_999, "0x00000000000000000000000000000000000000bb", now).await), Refusal::Replayed { got: 4_999, last: 5_000, .. }), "an older one");
    assert_eq!(s.registration_request(&n1).await.unwrap(), Some(RegistrationRequestRow { sent_at_ms: 5_000, operator: "0x00000000000000000000000000000000000000aa".into(), accepted_at_ms: now }), "a refused request writes nothing");
    s.accept_registration_request(&n1, 5_001, "0x00000000000000000000000000000000000000bb", now + 1).await.unwrap();
    assert_eq!(s.registration_request(&n1).await.unwrap().map(|r| (r.sent_at_ms, r.operator, r.accepted_at_ms)), Some((5_001, "0x00000000000000000000000000000000000000bb".into(), now + 1)));
    assert!(s.accept_registration_request(&NodeKey::from_seed([77; 32]).node_id(), 1, "0x00000000000000000000000000000000000000aa", now).await.is_err(), "an unknown node");
    // Racing closers (replicas): each receipt still lands in one epoch.
    s.store_receipts((210..230).map(|i| net(i, 2_500_000)).collect(), now).await.unwrap();
    charge(&*s, &n1, &(210..230).collect::<Vec<u8>>(), now).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.close_epoch(4_000_000, now + 4).await }));
    }
    let mut assigned = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(e)) => assigned += e.receipt_count,
            Ok(None) | Err(ControlError::Refused(Refusal::Exists(_))) => {}
            Err(e) => panic!("close epoch: {e}"),
        }
    }
    assert_eq!(assigned, 20);

    // One job by id, only for its node.
    let some = &s.jobs(&n3).await.unwrap()[0];
    assert_eq!(s.job(&n3, &some.job_id).await.unwrap().as_ref(), Some(some));
    assert!(s.job(&n1, &some.job_id).await.unwrap().is_none());

    // Job keys: the first is adopted once; a rotation's key becomes current; a node's pinned
    // key moves only on a confirmed rotation from the key it pins.
    let (first, ka, kb) = (
        first_job_key(),
        NodeKey::from_seed([0xa0; 32]).public(),
        NodeKey::from_seed([0xb0; 32]).public(),
    );
    assert!(s.job_keys().await.unwrap().is_empty());
    assert!(s.adopt_job_key(&first, now).await.unwrap());
    assert!(
        !s.adopt_job_key(&ka, now).await.unwrap(),
        "the first key is adopted once"
    );
    s.add_job_key(&ka, now + 1).await.unwrap();
    assert!(matches!(
        refusal(s.add_job_key(&ka, now + 2).await),
        Refusal::Exists(_)
    ));
    assert_eq!(
        s.job_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.public_key)
            .collect::<Vec<_>>(),
        [first, ka]
    );
    let lagging: Vec<NodeId> = s
        .nodes_not_pinning(&ka, now)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert!(
        lagging.contains(&n3) && !lagging.contains(&n1),
        "active nodes only: {lagging:?}"
    );
    assert!(
        s.nodes_not_pinning(&first, now).await.unwrap().is_empty(),
        "every node pins the first key"
    );
    s.set_job_key_next(&n3, Some(&ka)).await.unwrap();
    let n = s.node(&n3).await.unwrap().unwrap();
    assert_eq!((n.job_key, n.job_key_next), (Some(first), Some(ka)));
    assert!(
        !s.confirm_job_key(&n3, &kb, &ka).await.unwrap(),
        "not from the key it pins"
    );
    assert!(s.confirm_job_key(&n3, &first, &ka).await.unwrap());
    let n = s.node(&n3).await.unwrap().unwrap();
    assert_eq!((n.job_key, n.job_key_next), (Some(ka), None));
    assert!(
        !s.confirm_job_key(&n3, &first, &ka).await.unwrap(),
        "a repeated report changes nothing"
    );
    assert!(!s
        .nodes_not_pinning(&ka, now)
        .await
        .unwrap()
        .iter()
        .any(|n| n.node_id == n3));
    // A failed rotation sends later jobs back to the pinned key; only its own target is cleared.
    s.set_job_key_next(&n3, Some(&kb)).await.unwrap();
    s.abandon_job_key_next(&n3, &first).await.unwrap();
    assert_eq!(s.node(&n3).await.unwrap().unwrap().job_key_next, Some(kb));
    s.abandon_job_key_next(&n3, &kb).await.unwrap();
    assert_eq!(s.node(&n3).await.unwrap().unwrap().job_key_next, None);

    // Gateway replicas: one session per node, replaced by a newer tunnel, dropped only by its
    // own replica and epoch, listed by freshness.
    let sess = |url: &str, epoch: u64, at: u64| TunnelSession {
        node_id: n3,
        replica_url: url.into(),
        epoch,
        max_concurrent: 2,
        models: serde_json::json!([{"public_id": "m"}]),
        updated_at_ms: at,
    };
    s.put_tunnel_session(&sess("https://a:1", 1, 100))
        .await
        .unwrap();
    s.put_tunnel_session(&sess("https://b:1", 7, 200))
        .await
        .unwrap();
    assert_eq!(
        s.tunnel_sessions(0).await.unwrap(),
        [sess("https://b:1", 7, 200)]
    );
    assert!(
        s.tunnel_sessions(201).await.unwrap().is_empty(),
        "stale sessions are not listed"
    );
    s.drop_tunnel_session(&n3, "https://a:1", 1).await.unwrap();
    assert_eq!(
        s.tunnel_sessions(0).await.unwrap().len(),
        1,
        "the old replica cannot drop the new session"
    );
    s.drop_tunnel_session(&n3, "https://b:1", 7).await.unwrap();
    assert!(s.tunnel_sessions(0).await.unwrap().is_empty());
    // The newest finished job of a kind wins (job 3 came after job 1).
    let n1 = k1.node_id();
    s.finish_job(&n1, &[3; 16], "succeeded", None, &serde_json::json!({"type": "none"}), now + 3).await.unwrap();
    assert_eq!(s.last_job(&n1, "run_benchmark", "succeeded").await.unwrap().map(|j| j.job_id), Some([3; 16]), "the newest by sequence");

    // Verification: verdicts by subject, one row per verdict hash; disputes once per evidence.
    let (verifier, subject) = (
        NodeKey::from_seed([71; 32]).node_id(),
        NodeKey::from_seed([72; 32]).node_id(),
    );
    let verdict = |h: u8, outcome: &str, at: u64| VerdictRow {
        verdict_hash: [h; 32],
        verifier,
        subject,
        request_id: [h; 16],
        receipt_id: [h.wrapping_add(1); 32],
        outcome: outcome.into(),
        metric: if outcome == "pass" { String::new() } else { "chunk 0: exp_mismatches=9 > 2".into() },
        signed: vec![h; 40],
        created_at_ms: at,
        // Verdict 2 is about a canary (migration 14's column).
        canary: h == 2,
    };
    assert!(s.put_verdict(&verdict(1, "pass", 10)).await.unwrap());
    assert!(s.put_verdict(&verdict(2, "fail", 20)).await.unwrap());
    assert!(!s.put_verdict(&verdict(2, "fail", 30)).await.unwrap(), "a verdict is stored once");
    assert_eq!(
        s.verdicts(&subject).await.unwrap(),
        [verdict(1, "pass", 10), verdict(2, "fail", 20)]
    );
    assert!(s.verdicts(&verifier).await.unwrap().is_empty(), "listed by subject only");
    let dispute = DisputeRow {
        evidence_hash: [2; 32],
        kind: "failed_verification".into(),
        subject,
        request_id: [2; 16],
        status: "pending".into(),
        chain_tx: None,
        opened_at_ms: 21,
        evidence: Some(vec![1, 2, 3]),
        epoch_id: None,
        chain_dispute_id: None,
        vote_tx: None,
        slash_tx: None,
        updated_at_ms: 21,
    };
    assert!(s.open_dispute(&dispute).await.unwrap());
    assert!(!s.open_dispute(&dispute).await.unwrap(), "one dispute per evidence");
    assert_eq!(s.disputes(&subject).await.unwrap(), std::slice::from_ref(&dispute));
    assert_eq!(s.dispute(&[2; 32]).await.unwrap(), Some(dispute.clone()));
    assert_eq!(s.dispute(&[3; 32]).await.unwrap(), None);
    // Progress on chain: every mutable field is stored, the evidence and identity are kept.
    let mut opened = dispute.clone();
    opened.status = "opened".into();
    opened.epoch_id = Some(4);
    opened.chain_dispute_id = Some("7".into());
    opened.chain_tx = Some("0xaa".into());
    opened.vote_tx = Some("0xbb".into());
    opened.updated_at_ms = 30;
    s.update_dispute(&opened).await.unwrap();
    assert_eq!(s.dispute(&[2; 32]).await.unwrap(), Some(opened.clone()));
    let mut unknown = opened.clone();
    unknown.evidence_hash = [9; 32];
    assert!(matches!(s.update_dispute(&unknown).await, Err(ControlError::Refused(Refusal::NotFound(_)))));
    // A second, finished dispute: listed in full, not among the active ones.
    let done = DisputeRow { evidence_hash: [5; 32], status: "executed".into(), opened_at_ms: 40, slash_tx: Some("0xcc".into()), ..opened.clone() };
    assert!(s.open_dispute(&done).await.unwrap());
    assert_eq!(s.list_disputes(true, 10).await.unwrap(), [opened.clone()]);
    assert_eq!(s.list_disputes(false, 10).await.unwrap(), [opened.clone(), done.clone()]);
    assert_eq!(s.list_disputes(false, 1).await.unwrap(), [opened]);
    assert!(s.disputes(&verifier).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    conformance(Arc::new(SqliteStore::open(&path).unwrap())).await;
    // Reopening migrates nothing and keeps the data; the file is private.
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.org("acme").await.unwrap().unwrap().id, "org_a");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let pg = support::pg::Pg::start();
    let url = pg.create_db("conformance").await;
    conformance(Arc::new(PostgresStore::connect(&url, 8).await.unwrap())).await;
    // A second store on the same database (another replica) migrates nothing and sees the data.
    let s = PostgresStore::connect(&url, 2).await.unwrap();
    assert_eq!(s.org("acme").await.unwrap().unwrap().id, "org_a");
    assert!(matches!(
        PostgresStore::connect(&format!("{url}?sslmode=require"), 1).await,
        Err(ControlError::Config(_))
    ));
}

/// Migration 12 on a database at migration 11 (SQLite): a dispute recorded from one verifier's
/// fail (status `open`, no evidence) becomes `reputation_only`, never driven on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migration_12_keeps_single_verifier_disputes_as_reputation_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    drop(SqliteStore::open(&path).unwrap());
    // Back to migration 11 (migration 13's table dropped too, so it reapplies), with one
    // dispute row as migration 11 wrote them.
    let subject = NodeKey::from_seed([73; 32]).node_id();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("DROP INDEX disputes_status; ALTER TABLE disputes DROP COLUMN evidence; ALTER TABLE disputes DROP COLUMN epoch_id; ALTER TABLE disputes DROP COLUMN chain_dispute_id; ALTER TABLE disputes DROP COLUMN vote_tx; ALTER TABLE disputes DROP COLUMN slash_tx; ALTER TABLE disputes DROP COLUMN updated_at_ms; DROP TABLE registration_requests; ALTER TABLE verification_verdicts DROP COLUMN canary; PRAGMA user_version = 11;").unwrap();
        c.execute(
            "INSERT INTO disputes(evidence_hash, kind, subject, request_id, status, chain_tx, opened_at_ms) VALUES (?1, 'failed_verification', ?2, ?3, 'open', NULL, 5)",
            rusqlite::params![&[4u8; 32][..], subject.to_text(), &[4u8; 16][..]],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let rows = s.disputes(&subject).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status.as_str(), rows[0].evidence.is_none(), rows[0].updated_at_ms), ("reputation_only", true, 5));
    assert!(s.list_disputes(true, 10).await.unwrap().is_empty(), "not driven by the dispute tool");
}
