//! Verification in the network end to end: a real control plane with its gateway (SQLite store,
//! HTTPS on loopback) and real `b3iqd` daemons with the default model (Q4_1), enrolled, in
//! network mode, serving verifiable work (fingerprints on). The gateway samples every request
//! (rate 1.0): a request through the gateway is attested by its node, verified by another
//! node over its tunnel (`POST /v1/node/verify`), and the verdict `pass` is stored. Then node b
//! is restarted serving a Q8_0 copy of the model (made here with llama.cpp's quantize API)
//! while claiming the Q4_1 artifact (the debug build's `B3IQ_DEBUG_SUBSTITUTE_MODEL` hook):
//!
//! * with one other node only, its answer is failed by that verifier, nobody can confirm it:
//!   the fail counts for reputation only (b's score drops), no dispute;
//! * with a third node, both other nodes fail it: failed-verification evidence (receipt,
//!   attestation, two signed fails) is recorded as a dispute, it checks, and the control
//!   plane's dispute tool opens it on a real hardhat chain once the settler has posted its
//!   epoch; the two committee keys uphold it;
//! * then b is honest again and c lies (`B3IQ_DEBUG_LYING_VERIFIER`): when c fails a's honest
//!   work, the second verifier passes it, the verifiers disagree, and a is never disputed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use b3iq_control::gateway::Gateway;
use b3iq_core::attestation::{SignedVerdict, VerdictOutcome};
use b3iq_core::NodeId;
use common::net::Net;
use common::{tempdir, Daemon};
use serde_json::{json, Value};

use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_core::{Hash32, OperatingMode};

#[path = "../../../b3iq-chain/tests/chain/common.rs"]
mod chain;

struct Node {
    d: Daemon,
    cookie: String,
    id: NodeId,
    home: std::path::PathBuf,
}

fn policy(price_floor_per_1m: u64) -> Value {
    json!({"max_concurrent": 1, "price_floor": {"prompt_per_1m_tokens": price_floor_per_1m, "completion_per_1m_tokens": price_floor_per_1m, "per_request": 0}})
}

async fn set_policy(n: &Node, p: Value) {
    let r = common::client()
        .put(n.d.url("/api/network"))
        .header("cookie", &n.cookie)
        .json(&p)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// A node with two slots and fingerprints on, claimed, enrolled and in network mode.
async fn node(net: &Net, dir: &Path, name: &str) -> Node {
    let config = json!({"parallel": 2, "fingerprints": true});
    let n = common::net::node_with(net, dir, name, policy(1000), config).await;
    Node { d: n.d, cookie: n.cookie, id: NodeId::parse(&n.id).unwrap(), home: dir.join(name) }
}

/// Waits until `ids` (and only they) have an open tunnel.
async fn wait_tunnels(gw: &Gateway, ids: &[NodeId]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut have: Vec<NodeId> = gw.tunnels().all().iter().map(|t| t.node_id).collect();
        have.sort();
        let mut want = ids.to_vec();
        want.sort();
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "tunnels {have:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gw_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// A sampled (temperature 0.9) chat request: its draws come from the ticket's seed key.
fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Write two sentences about the sea."}], "max_tokens": 40, "temperature": 0.9, "stream": stream})
}

/// Waits for `n` verdicts about `subject` in the store.
async fn verdicts(net: &Net, subject: &NodeId, n: usize) -> Vec<b3iq_control::store::VerdictRow> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let v = net.cp.store().verdicts(subject).await.unwrap();
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{} verdicts about {subject}, expected {n}; verification counters: {:?}",
            v.len(),
            net.gw.metrics.verification.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A node's reputation score (basis points) in the store, now.
async fn score(net: &Net, id: &NodeId) -> u32 {
    let now = b3iq_host::context::unix_now_ms();
    net.cp
        .store()
        .reputations()
        .await
        .unwrap()
        .iter()
        .find(|r| r.node_id() == *id)
        .map(|r| r.score_bps(now, &b3iq_core::reputation::ReputationParams::default()))
        .unwrap_or(0)
}

/// Sends a request through the gateway; returns the serving node and the body.
async fn ask(c: &reqwest::Client, net: &Net, token: &str, model: &str, stream: bool) -> (NodeId, String) {
    let r = c
        .post(format!("{}/v1/chat/completions", net.url))
        .bearer_auth(token)
        .json(&chat(model, stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-b3iq-attestation").is_none(),
        "the client never sees the node's attestation opening"
    );
    let node = NodeId::parse(r.headers().get("x-b3iq-node").unwrap().to_str().unwrap()).unwrap();
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("b3iq-attestation") && !body.contains("b3iq-receipt"),
        "the gateway takes the node's comments out: {body}"
    );
    (node, body)
}

/// Waits until the verification counter `event` reaches `n`.
async fn wait_count(net: &Net, event: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while net.gw.metrics.verification_count(event) < n {
        assert!(Instant::now() < deadline, "counter {event} below {n}: {:?}", net.gw.metrics.verification.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `n` disputes against `subject`.
async fn wait_disputes(net: &Net, subject: &NodeId, n: usize) -> Vec<b3iq_control::store::DisputeRow> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = net.cp.store().disputes(subject).await.unwrap();
        if d.len() >= n {
            return d;
        }
        assert!(Instant::now() < deadline, "{} disputes against {subject}, expected {n}", d.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One non-streamed request through the gateway, retried while no node is routable yet
/// (fresh heartbeats after a restart); returns the serving node.
async fn serve_one(c: &reqwest::Client, net: &Net, token: &str, model: &str) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c.post(format!("{}/v1/chat/completions", net.url)).bearer_auth(token).json(&chat(model, false)).send().await.unwrap();
        if r.status() == 200 {
            return NodeId::parse(r.headers().get("x-b3iq-node").unwrap().to_str().unwrap()).unwrap();
        }
        assert!(Instant::now() < deadline, "no answer: {}", r.status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn dispute_count(c: &b3iq_chain::ChainClient, d: &b3iq_chain::Deployment) -> u64 {
    c.call("Disputes.disputeCount", c.disputes(d).disputeCount()).await.unwrap().to::<u64>()
}

fn signed_verdict(row: &b3iq_control::store::VerdictRow) -> SignedVerdict {
    let v = SignedVerdict::decode(&row.signed).unwrap();
    assert_eq!(v.object_hash(), row.verdict_hash);
    assert_eq!(v.verify_self_certified().unwrap(), row.verifier, "signed by the verifier");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampled_requests_are_verified_by_another_node_and_a_substituted_model_is_caught() {
    let dir = tempdir("verification");
    // The chain: settlement posts the epochs (every second), the dispute tool opens disputes
    // with a challenger key that is also one of the two committee keys (quorum 2).
    let hh = chain::HardhatNode::start().await;
    let admin = chain::funded(&hh.url, chain::wallet("admin")).await;
    let attester = chain::wallet("attester");
    let (dep, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(attester.address())).await.unwrap();
    let cp_home = dir.join("control");
    std::fs::create_dir_all(&cp_home).unwrap();
    for (f, role) in [("settler.key", "settler"), ("challenger.key", "verifier"), ("verifier-2.key", "verifier")] {
        let a = b3iq_chain::key_file::create_key_file(&cp_home.join(f)).unwrap();
        chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(&cp_home.join(f)).unwrap()).await;
        admin.mint(&dep, a, chain::tokens(1_000_000)).await.unwrap();
        match role {
            "settler" => admin.grant_settler(&dep, a).await.unwrap(),
            _ => admin.grant_verifier(&dep, a).await.unwrap(),
        };
    }
    let treasury = chain::wallet("protocol").address().to_string().to_lowercase();
    std::fs::write(
        cp_home.join("control.json"),
        serde_json::to_vec(&json!({
            "heartbeat_interval_s": 1,
            "settlement": {"rpc_url": hh.url, "deployment": dep, "settler_key_file": "settler.key", "epoch_interval_s": 1,
                           "protocol_account": treasury, "verifier_account": treasury},
            "disputes": {"key_file": "challenger.key", "verifier_key_files": ["challenger.key", "verifier-2.key"],
                         "slash_amount": chain::tokens(1).to_string(), "interval_s": 1},
        }))
        .unwrap(),
    )
    .unwrap();
    let net = common::net::serve_control(&cp_home, |home, _, cp, _| {
        // Every request of every tier is verified.
        common::net::gateway(home, cp, |cfg| {
            cfg.verification.rate_bps = [10_000; 4];
            // With no third node, a fail is concluded unconfirmed after 5 s.
            cfg.verification.confirm_wait_s = 5;
        })
    })
    .await;
    let net = common::net::with_org(net).await;
    let org = net.org.clone();
    let home = b3iq_control::ControlHome::locate(Some(cp_home.clone())).unwrap();
    let settings = home.settings().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settler = home.settler(&settings, &net.cp).await.unwrap().expect("settlement configured");
    tokio::spawn(settler.run(stop_rx.clone()));
    let tool = home.dispute_tool(&settings, &net.cp).await.unwrap().expect("disputes configured");
    tokio::spawn(tool.run(stop_rx));
    let a = node(&net, &dir, "a").await;
    let mut b = node(&net, &dir, "b").await;
    wait_tunnels(&net.gw, &[a.id, b.id]).await;
    // b: a payout wallet (its receipts enter posted epochs), registered in NodeRegistry by it.
    let (ok, out, err) = common::net::b3iqd(&b.home, &["wallet", "create"]);
    assert!(ok, "{err}");
    let w: Value = serde_json::from_str(&out).unwrap();
    let op = chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(Path::new(w["key_file"].as_str().unwrap())).unwrap()).await;
    let att = NodeAttestation {
        public_key: net.cp.store().node(&b.id).await.unwrap().unwrap().public_key,
        operator: op.address(),
        hardware_hash: Hash32([7; 32]),
        software_version: 0x00_01_00,
        mode: OperatingMode::Network,
        device_class: 0,
        nonce: op.attestation_nonce(&dep, &b.id).await.unwrap(),
        deadline: b3iq_host::context::unix_now() + 3600,
    };
    let (sol, sig) = sign_attestation(&attester, &registry_domain(admin.chain_id().await.unwrap(), dep.node_registry), &att).unwrap();
    op.register_node(&dep, sol, sig).await.unwrap();
    let now = b3iq_host::context::unix_now_ms();
    net.cp
        .add_credits(&org, 1_000_000_000, "seed", now)
        .await
        .unwrap();
    let (_, token) = net
        .cp
        .create_gateway_key(&org, "app", 100_000, None, now)
        .await
        .unwrap();
    let c = gw_client(&net.ca);
    let model = "smollm2-135m-instruct-q4_1";
    // Wait for the model to be routable (fresh heartbeats).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = c
            .get(format!("{}/v1/models", net.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no model ready: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. Honest nodes: a request is sampled and verified by the other node: pass. Then the
    //    node that served refuses paid requests for a moment (its price floor above the
    //    network's price: routing prefers the node that just passed, so this is how the other
    //    gets one), and a streamed request is served and verified the other way round.
    let mut requests = 0u64;
    let mut served_set = Vec::new();
    for stream in [false, true] {
        let before_a = net.cp.store().verdicts(&a.id).await.unwrap().len();
        let before_b = net.cp.store().verdicts(&b.id).await.unwrap().len();
        let (served_by, body) = ask(&c, &net, &token, model, stream).await;
        requests += 1;
        if !stream {
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        }
        let (other, before) = if served_by == a.id { (b.id, before_a) } else { (a.id, before_b) };
        let v = verdicts(&net, &served_by, before + 1).await;
        assert_eq!(v.len(), before + 1);
        let last = v.last().unwrap();
        assert_eq!(last.outcome, "pass", "honest work passes (stream {stream}): {:?}", last.metric);
        assert_eq!(last.verifier, other, "verified by the other node, never the serving one");
        let sv = signed_verdict(last);
        assert_eq!(sv.body().outcome, VerdictOutcome::Pass);
        assert!(sv.body().positions > 0, "the verifier replayed the positions");
        assert_eq!(sv.body().subject, served_by);
        served_set.push(served_by);
        if !stream {
            set_policy(if served_by == a.id { &a } else { &b }, policy(10_000_000)).await;
        }
    }
    assert_ne!(served_set[0], served_set[1], "each node served once");
    set_policy(&a, policy(1000)).await;
    set_policy(&b, policy(1000)).await;
    assert!(net.cp.store().disputes(&a.id).await.unwrap().is_empty());
    assert!(net.cp.store().disputes(&b.id).await.unwrap().is_empty());
    assert_eq!(net.gw.metrics.verification_count("fail"), 0);
    assert_eq!(net.gw.metrics.verification_count("not_verifiable"), 0);
    assert_eq!(net.gw.metrics.verification_count("sampled"), requests);
    assert_eq!(net.gw.metrics.verification_count("pass"), requests);
    // canary_interval_s is 0 (the default): no canary was sent (every sampled request was the
    // client's, and no canary outcome is counted).
    assert!(net.gw.metrics.canaries.lock().unwrap().is_empty(), "no canary with canary_interval_s 0");

    // 2. Node b serves a Q8_0 copy while claiming the Q4_1 artifact.
    let q8 = dir.join("SmolLM2-135M-Instruct.Q8_0-copy.gguf");
    b3iq_runtime::quantize::quantize_model(
        &common::model_path(),
        &q8,
        b3iq_runtime::quantize::QuantType::Q8_0,
        2,
    )
    .unwrap();
    // Reputation is applied every 5 s: let b's passes land before measuring.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let b_score = score(&net, &b.id).await;
    assert!(b_score > 0, "b passed a verification: its score is positive");
    b.d.stop();
    wait_tunnels(&net.gw, &[a.id]).await;
    let model_path = common::model_path();
    b.d = Daemon::start_exe_env(
        Path::new(common::bin()),
        &b.home,
        &["--listen", "127.0.0.1:0", "--model", model_path.to_str().unwrap()],
        &[("B3IQ_DEBUG_SUBSTITUTE_MODEL", q8.to_str().unwrap())],
    );
    assert!(
        b.d.logs().contains("substitute model"),
        "the debug hook is on: {}",
        b.d.logs()
    );
    wait_tunnels(&net.gw, &[a.id, b.id]).await;
    // a takes no paid requests now (its price floor is above the network's price), so b
    // serves; a still verifies (verifier jobs are not priced).
    set_policy(&a, policy(10_000_000)).await;
    let b_before = net.cp.store().verdicts(&b.id).await.unwrap().len();
    // b's heartbeat may not be fresh yet: retried.
    let served = serve_one(&c, &net, &token, model).await;
    assert_eq!(served, b.id, "the substituted node served");
    let v = verdicts(&net, &b.id, b_before + 1).await;
    let caught = v.last().unwrap();
    assert_eq!(caught.outcome, "fail", "the substitution is caught: {}", caught.metric);
    assert_eq!(caught.verifier, a.id);
    assert!(
        caught.metric.contains("exp_mismatches="),
        "failed on the fingerprints: {}",
        caught.metric
    );
    let sv = signed_verdict(caught);
    assert!(
        matches!(sv.body().outcome, VerdictOutcome::FailChunk(_)),
        "{:?}",
        sv.body().outcome
    );
    // Which fingerprint statistic crosses the profile varies by run (a CI run: exponent
    // mismatches 1 of 2 allowed, mantissa mean 2.35 over its bound): the chunk failing is the point.
    assert!(caught.metric.contains("profile cpu-same-isa-v1"), "{}", caught.metric);
    // One verifier's fail, with no other node to confirm it: reputation only, no dispute.
    wait_count(&net, "fail_unconfirmed", 1).await;
    assert!(net.cp.store().disputes(&b.id).await.unwrap().is_empty(), "one fail is never a dispute");
    assert!(net.cp.store().disputes(&a.id).await.unwrap().is_empty(), "the honest node is never accused");
    // Reputation: the failed challenge lands with the next flush (every 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let b_after = score(&net, &b.id).await;
    assert!(
        b_after < b_score,
        "b's reputation dropped: {b_score} -> {b_after} bps"
    );
    assert_eq!(net.gw.metrics.verification_count("fail"), 1);
    assert_eq!(net.gw.metrics.verification_count("dispute_recorded"), 0);

    assert_eq!(dispute_count(&admin, &dep).await, 0, "nothing on chain from one fail");

    // 3. A third node: b's next answer is failed by both others, and that is evidence.
    let mut c_node = node(&net, &dir, "c").await;
    set_policy(&c_node, policy(10_000_000)).await;
    wait_tunnels(&net.gw, &[a.id, b.id, c_node.id]).await;
    let b_before = net.cp.store().verdicts(&b.id).await.unwrap().len();
    assert_eq!(serve_one(&c, &net, &token, model).await, b.id, "the substituted node served");
    let v = verdicts(&net, &b.id, b_before + 2).await;
    let two: Vec<_> = v[b_before..].iter().collect();
    assert!(two.iter().all(|r| r.outcome == "fail"), "both verifiers fail it: {:?}", two.iter().map(|r| &r.metric).collect::<Vec<_>>());
    let mut by: Vec<NodeId> = two.iter().map(|r| r.verifier).collect();
    by.sort();
    let mut want = vec![a.id, c_node.id];
    want.sort();
    assert_eq!(by, want, "verified by the two other nodes");
    let disputes = wait_disputes(&net, &b.id, 1).await;
    let d = &disputes[0];
    assert_eq!(d.kind, "failed_verification");
    assert_eq!(d.request_id, two[0].request_id);
    let e = b3iq_core::evidence::Evidence::decode(d.evidence.as_deref().unwrap()).unwrap();
    assert_eq!(e.hash().0, d.evidence_hash, "the row's hash is the evidence's");
    let trusted = [a.id, c_node.id];
    let subject = b3iq_core::evidence::check_evidence(&e, &Default::default(), &|n| trusted.contains(n)).unwrap();
    assert_eq!(subject.node_id, b.id);
    assert!(b3iq_core::evidence::check_evidence(&e, &Default::default(), &|n| *n == a.id).is_err(), "an unknown verifier's fail does not count");
    assert_eq!(net.gw.metrics.verification_count("dispute_recorded"), 1);
    // The dispute tool opens it on chain once its epoch is posted, and the committee upholds it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let d = loop {
        let d = net.cp.store().dispute(&d.evidence_hash).await.unwrap().unwrap();
        if d.status == "upheld" {
            break d;
        }
        assert!(Instant::now() < deadline, "the dispute was not upheld on chain: {} (epoch {:?})", d.status, d.epoch_id);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let on_chain = admin.dispute(&dep, d.chain_dispute_id.as_deref().unwrap().parse().unwrap()).await.unwrap();
    assert_eq!(on_chain.nodeId.0, b.id.0, "against b");
    assert_eq!(on_chain.evidenceHash.0, e.hash().0, "with the evidence's hash");
    assert_eq!((on_chain.status, on_chain.upholdVotes), (2, 2), "upheld by both committee keys");
    assert_eq!(Some(on_chain.epochId), d.epoch_id);

    // 4. b honest again, c lying: a's honest work failed by c is passed by the second verifier,
    //    the verifiers disagree, and a is never disputed.
    b.d.stop();
    c_node.d.stop();
    wait_tunnels(&net.gw, &[a.id]).await;
    b.d = Daemon::start_exe_env(Path::new(common::bin()), &b.home, &["--listen", "127.0.0.1:0", "--model", model_path.to_str().unwrap()], &[]);
    c_node.d = Daemon::start_exe_env(Path::new(common::bin()), &c_node.home, &["--listen", "127.0.0.1:0", "--model", model_path.to_str().unwrap()], &[("B3IQ_DEBUG_LYING_VERIFIER", "1")]);
    wait_tunnels(&net.gw, &[a.id, b.id, c_node.id]).await;
    set_policy(&a, policy(1000)).await;
    set_policy(&b, policy(10_000_000)).await;
    set_policy(&c_node, policy(10_000_000)).await;
    let mut lied = false;
    for _ in 0..12 {
        let before = net.cp.store().verdicts(&a.id).await.unwrap().len();
        assert_eq!(serve_one(&c, &net, &token, model).await, a.id);
        let v = verdicts(&net, &a.id, before + 1).await;
        let first = &v[before];
        if first.verifier != c_node.id {
            assert_eq!(first.outcome, "pass", "the honest verifier passes honest work");
            continue;
        }
        assert_eq!(first.outcome, "fail", "the lying verifier fails it");
        let v = verdicts(&net, &a.id, before + 2).await;
        assert_eq!((v[before + 1].verifier, v[before + 1].outcome.as_str()), (b.id, "pass"), "the second verifier passes it");
        lied = true;
        break;
    }
    assert!(lied, "the lying verifier was never asked first in 12 requests");
    wait_count(&net, "verifiers_disagree", 1).await;
    assert!(net.cp.store().disputes(&a.id).await.unwrap().is_empty(), "a lying verifier cannot get an honest node disputed");
    assert_eq!(net.gw.metrics.verification_count("dispute_recorded"), 1);
    assert_eq!(dispute_count(&admin, &dep).await, 1, "the honest node was never disputed on chain");
    let _ = stop_tx.send(true);
    // The node kept the attestation beside each receipt it signed for the network.
    let db = rusqlite::Connection::open(b.home.join("state.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM attestations", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 1, "attestations stored beside receipts on b: {n}");
    drop(a);
}
