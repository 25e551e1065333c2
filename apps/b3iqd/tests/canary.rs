//! Canary requests end to end: a real control plane with its gateway (SQLite store, HTTPS on
//! loopback) sending a canary about every second (`verification.canary_interval_s` 1, paid by
//! the organisation "acme"), and three real `b3iqd` nodes with the default model (Q4_1), one of
//! them (c) serving a Q8_0 copy while claiming the Q4_1 artifact (the debug build's
//! `B3IQ_DEBUG_SUBSTITUTE_MODEL` hook). There is no customer traffic at all (and customer
//! sampling is off): every request the nodes serve is a canary.
//!
//! * every node gets canaries; the honest nodes' are verified `pass` by the other honest node
//!   (c, replaying with its substituted model, fails them; the second verifier contradicts it,
//!   and they are never disputed);
//! * c's are failed by both other nodes: failed-verification evidence, a dispute;
//! * every canary verdict is marked as one in the store, and counted in
//!   `b3iq_gateway_canaries_total`;
//! * the nodes' receipts for them are ordinary network receipts (key `network`, network mode,
//!   the network's price for their tokens), and the canary organisation paid exactly their
//!   prices (the ledger sums to zero).
//!
//! That no canary is sent with `canary_interval_s` 0 (the default) is asserted by the
//! verification test (`verification.rs`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use b3iq_core::receipt::SignedReceipt;
use b3iq_core::NodeId;
use common::Daemon;
use serde_json::{json, Value};

struct Node {
    d: Daemon,
    cookie: String,
    id: NodeId,
}

/// A node with two slots and fingerprints on, claimed, enrolled and in network mode.
async fn node(net: &common::net::Net, dir: &Path, name: &str) -> Node {
    let policy = json!({"max_concurrent": 2, "price_floor": {"prompt_per_1m_tokens": 1000, "completion_per_1m_tokens": 1000, "per_request": 0}});
    let n = common::net::node_with(net, dir, name, policy, json!({"parallel": 2, "fingerprints": true})).await;
    Node { d: n.d, cookie: n.cookie, id: NodeId::parse(&n.id).unwrap() }
}

/// A node's network receipts, from its own store (checked: network mode, price by `price`).
async fn network_receipts(n: &Node, price: &b3iq_core::metering::PriceSchedule) -> Vec<SignedReceipt> {
    let v: Value = common::client()
        .get(n.d.url("/api/receipts?limit=500"))
        .header("cookie", &n.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = v["receipts"].as_array().unwrap();
    let mut out = Vec::new();
    for r in all {
        assert_eq!(r["key_id"], "network", "every request the node served came as a network request: {r}");
        let s = SignedReceipt::decode(&hex::decode(r["signed"].as_str().unwrap()).unwrap()).unwrap();
        let b = s.body();
        assert_eq!(b.mode, b3iq_core::OperatingMode::Network);
        if b.price_micro_credits > 0 {
            assert_eq!(
                b.price_micro_credits,
                price.price(u64::from(b.prompt_tokens), u64::from(b.completion_tokens)).unwrap(),
                "priced by the network's schedule like any request"
            );
            out.push(s);
        }
    }
    out
}

/// The end of a daemon's log.
fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(4000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canaries_check_every_node_without_customer_traffic() {
    let dir = common::tempdir("canary");
    let q8 = dir.join("SmolLM2-135M-Instruct.Q8_0-copy.gguf");
    b3iq_runtime::quantize::quantize_model(&common::model_path(), &q8, b3iq_runtime::quantize::QuantType::Q8_0, 2).unwrap();
    let net = common::net::serve_control(&dir.join("control"), |home, _, cp, _| {
        common::net::gateway(home, cp, |cfg| {
            // No customer request would be sampled; canaries are verified regardless.
            cfg.verification.rate_bps = [0; 4];
            cfg.verification.confirm_wait_s = 20;
            cfg.verification.canary_interval_s = 1;
            cfg.verification.canary_org = "acme".into();
        })
    })
    .await;
    let net = common::net::with_org(net).await;
    let now = b3iq_host::context::unix_now_ms();
    let seeded = 1_000_000_000;
    net.cp.add_credits(&net.org, seeded, "seed", now).await.unwrap();
    let (key, _token) = net.cp.create_gateway_key(&net.org, "canary", 100_000, None, now).await.unwrap();
    let a = node(&net, &dir, "a").await;
    let b = node(&net, &dir, "b").await;
    let mut c = node(&net, &dir, "c").await;
    // c: restarted serving the Q8_0 copy while claiming the Q4_1 artifact.
    c.d.stop();
    let model_path = common::model_path();
    c.d = Daemon::start_exe_env(
        Path::new(common::bin()),
        &dir.join("c"),
        &["--listen", "127.0.0.1:0", "--model", model_path.to_str().unwrap()],
        &[("B3IQ_DEBUG_SUBSTITUTE_MODEL", q8.to_str().unwrap())],
    );
    assert!(c.d.logs().contains("substitute model"), "the debug hook is on: {}", c.d.logs());
    common::net::wait_tunnels(&net.gw, 3).await;
    let c_since = b3iq_host::context::unix_now_ms();

    // Every node is checked: passes for a and b, a dispute (two verifiers' fails) for c.
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let va = net.cp.store().verdicts(&a.id).await.unwrap();
        let vb = net.cp.store().verdicts(&b.id).await.unwrap();
        let vc = net.cp.store().verdicts(&c.id).await.unwrap();
        let disputes = net.cp.store().disputes(&c.id).await.unwrap();
        let passed = |v: &[b3iq_control::store::VerdictRow]| v.iter().any(|r| r.outcome == "pass");
        if passed(&va) && passed(&vb) && !disputes.is_empty() {
            for r in va.iter().chain(&vb).chain(&vc) {
                assert!(r.canary, "every verdict is about a canary (no customer traffic)");
            }
            // Honest work passes, except with c as verifier: c replays with its substituted
            // model too, so it fails honest work (the other verifier then contradicts it).
            assert!(
                va.iter().chain(&vb).all(|r| r.outcome == "pass" || r.verifier == c.id),
                "honest nodes' canaries pass with honest verifiers: {:?}",
                va.iter().chain(&vb).map(|r| (r.verifier, &r.outcome, &r.metric)).collect::<Vec<_>>()
            );
            let fails: Vec<_> = vc.iter().filter(|r| r.created_at_ms >= c_since && r.outcome == "fail").collect();
            assert!(fails.len() >= 2, "c's canary failed by two verifiers");
            assert!(fails.iter().all(|r| r.verifier != c.id));
            let d = &disputes[0];
            assert_eq!(d.kind, "failed_verification");
            let e = b3iq_core::evidence::Evidence::decode(d.evidence.as_deref().unwrap()).unwrap();
            let trusted = [a.id, b.id];
            assert_eq!(b3iq_core::evidence::check_evidence(&e, &Default::default(), &|n| trusted.contains(n)).unwrap().node_id, c.id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "verdicts a {} b {} c {}, disputes {}; canaries {:?}; verification {:?}\n--- a\n{}\n--- b\n{}\n--- c\n{}",
            va.len(),
            vb.len(),
            vc.len(),
            disputes.len(),
            net.gw.metrics.canaries.lock().unwrap(),
            net.gw.metrics.verification.lock().unwrap(),
            tail(&a.d.logs()),
            tail(&b.d.logs()),
            tail(&c.d.logs()),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(net.cp.store().disputes(&a.id).await.unwrap().is_empty());
    assert!(net.cp.store().disputes(&b.id).await.unwrap().is_empty());
    let m = &net.gw.metrics;
    // a's and b's canaries count `pass`, or `inconclusive` when c failed them first and the
    // other verifier passed them; c's count `fail`.
    let (pass, inconclusive, fail) = (m.canary_count("pass"), m.canary_count("inconclusive"), m.canary_count("fail"));
    assert!(pass >= 1 && pass + inconclusive >= 2 && fail >= 1, "{:?}", m.canaries.lock().unwrap());
    assert_eq!(m.verification_count("not_sampled"), 0, "no customer request");
    assert!(m.verification_count("dispute_recorded") >= 1);
    let text = m.render(3);
    assert!(text.contains("b3iq_gateway_canaries_total{outcome=\"pass\"}"), "{text}");

    // Stop the canaries (their key revoked: the canary organisation cannot pay), let those in
    // flight settle, then: the canary organisation paid exactly the nodes' receipt prices.
    net.cp.revoke_gateway_key(&net.org, &key.id, b3iq_host::context::unix_now_ms()).await.unwrap();
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet < 3 {
        let bal = net.cp.credit_balance(&net.org).await.unwrap();
        quiet = if bal.held == 0 { quiet + 1 } else { 0 };
        assert!(Instant::now() < deadline, "holds stay open: {bal:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(m.canary_count("error") >= 1, "a canary the organisation cannot pay is an error");
    let price = net.gw.config().price;
    let mut paid = 0u64;
    let mut served = 0usize;
    for n in [&a, &b, &c] {
        let rs = network_receipts(n, &price).await;
        assert!(!rs.is_empty(), "node {} served canaries", n.id);
        served += rs.len();
        paid += rs.iter().map(|r| r.body().price_micro_credits).sum::<u64>();
    }
    let bal = net.cp.credit_balance(&net.org).await.unwrap();
    assert_eq!(bal.spent_total, paid, "the canary organisation paid exactly the receipts' prices");
    assert_eq!(bal.available, seeded - paid);
    assert!(served >= 3);
    let check = net.cp.ledger_check().await.unwrap();
    assert!(check.ok(), "{check:?}");
}
