//! The public explorer end to end, with real data: a real hardhat node with the contracts, a
//! control plane with its gateway and settler (SQLite store, HTTPS on loopback), two real
//! `b3iqd` nodes with the default model and their wallets, a benchmark job on one node, a few
//! paid requests through the gateway, one epoch closed, built and posted on chain. Then:
//!
//! * the public API's inclusion proof of a real receipt is checked here with b3iq-core against
//!   the root the epoch posted on chain (read back from the post's `EpochPosted` event); a
//!   receipt made after the close is `pending`; the benchmark's summary is public;
//! * `apps/explorer/e2e/explorer.e2e.mjs` (Node, playwright-core, Chromium, axe-core) scans every
//!   public response for the private values this test created, opens every explorer page with
//!   this data (screenshots under the test's temp dir, or `$EXPLORER_SHOTS`), and runs the
//!   inclusion check in the browser: yes for a real receipt, no for a forged id and for a
//!   tampered proof.
//!
//! `EXPLORER_REQUESTS` sets the number of paid requests (default 6). The explorer's npm
//! packages are installed (`npm ci`, from its lockfile) when missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use b3iq_control::ControlHome;
use b3iq_core::receipt::SignedReceipt;
use common::net::{b3iqd, gw_client, network, node, policy, wait_tunnels};
use common::tempdir;
use serde_json::{json, Value};

#[path = "../../../b3iq-chain/tests/chain/common.rs"]
mod chain;

const MODEL: &str = "smollm2-135m-instruct-q4_1";

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The explorer's npm packages (playwright-core, axe-core), installed from the lockfile if
/// missing.
fn explorer_packages() -> std::path::PathBuf {
    let app = repo().join("apps/explorer");
    if !app.join("node_modules/playwright-core").is_dir() || !app.join("node_modules/axe-core").is_dir() {
        let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&app).output().expect("npm (the explorer's test needs Node and npm)");
        assert!(out.status.success(), "npm ci in apps/explorer: {}", String::from_utf8_lossy(&out.stderr));
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_explorer_shows_a_settled_network_and_verifies_receipts_in_the_browser() {
    let requests: usize = std::env::var("EXPLORER_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    assert!(requests >= 2, "EXPLORER_REQUESTS: at least 2 (a proof with a sibling)");
    const UNITS: u128 = 1_000_000_000_000;
    let app = explorer_packages();
    let dir = tempdir("explorer");
    let hh = chain::HardhatNode::start().await;
    let admin = chain::funded(&hh.url, chain::wallet("admin")).await;
    let (d, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(chain::wallet("attester").address())).await.unwrap();
    let cp_home = dir.join("control");
    std::fs::create_dir_all(&cp_home).unwrap();
    let settler_addr = b3iq_chain::key_file::create_key_file(&cp_home.join("settler.key")).unwrap();
    chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(&cp_home.join("settler.key")).unwrap()).await;
    admin.grant_settler(&d, settler_addr).await.unwrap();
    admin.mint(&d, settler_addr, chain::tokens(1_000_000)).await.unwrap();
    let addr = |c: &b3iq_chain::ChainClient| c.address().to_string().to_lowercase();
    let (protocol, verifier) = (chain::funded(&hh.url, chain::wallet("protocol")).await, chain::funded(&hh.url, chain::wallet("verifier")).await);
    std::fs::write(
        cp_home.join("control.json"),
        serde_json::to_vec(&json!({
            "heartbeat_interval_s": 1,
            "settlement": {
                "rpc_url": hh.url, "deployment": d, "settler_key_file": "settler.key", "epoch_interval_s": 1,
                "token_units_per_micro_credit": UNITS.to_string(),
                "protocol_account": addr(&protocol), "verifier_account": addr(&verifier),
            },
        }))
        .unwrap(),
    )
    .unwrap();
    let net = network(&cp_home).await;
    let home = ControlHome::locate(Some(cp_home.clone())).unwrap();
    let settings = home.settings().unwrap();
    let st = home.settler(&settings, &net.cp).await.unwrap().expect("settlement configured");

    // Two nodes, each with its wallet (receipts of a node without a payout address are left
    // out of an epoch).
    let mut nodes = Vec::new();
    let mut node_keys = Vec::new();
    for name in ["n1", "n2"] {
        let n = node(&net, &dir, name, policy(1)).await;
        let (ok, out, err) = b3iqd(&dir.join(name), &["wallet", "create"]);
        assert!(ok, "{err}");
        let w: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(w["sent_to_control_plane"], true, "{w}");
        node_keys.push(std::fs::read_to_string(w["key_file"].as_str().unwrap()).unwrap().trim().to_string());
        nodes.push(n);
    }
    wait_tunnels(&net.gw, 2).await;
    let now = b3iq_host::context::unix_now_ms();
    // A benchmark on the first node (its summary is public), running while requests flow.
    net.cp.create_operator(&net.org, "olivia", "a long operator password", now).await.unwrap();
    let op = net.cp.store().operator_by_username("olivia").await.unwrap().unwrap();
    let n1 = b3iq_core::NodeId::parse(&nodes[0].id).unwrap();
    let bench = net.cp.queue_job(&op, &n1, b3iq_core::job::JobKind::RunBenchmark { suite: "quick".into() }, None, now).await.unwrap();
    net.cp.add_credits(&net.org, 1_000_000_000, "seed", now).await.unwrap();
    let (_, token) = net.cp.create_gateway_key(&net.org, "explorer-app", 100_000, None, now).await.unwrap();
    let gc = gw_client(&net.ca);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = gc.get(format!("{}/v1/network/models", net.url)).send().await.unwrap().json().await.unwrap();
        if v["models"][0]["nodes_ready"].as_u64() == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not ready: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Paid requests with prompts nobody else could know.
    let prompts: Vec<String> = (0..requests).map(|i| format!("Explorer secret prompt {i} zq{:x}", now ^ (i as u64 * 7919))).collect();
    let mut outputs = Vec::new();
    for p in &prompts {
        let r = gc
            .post(format!("{}/v1/chat/completions", net.url))
            .bearer_auth(&token)
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": p}], "max_tokens": 6, "temperature": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("").trim().to_string();
        if text.len() >= 12 {
            outputs.push(text);
        }
    }

    // Receipts uploaded, then one epoch closed, built and posted.
    let mut total_receipts = 0;
    for n in &nodes {
        let id = b3iq_core::NodeId::parse(&n.id).unwrap();
        total_receipts += net.cp.store().receipt_count(&id).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_receipts < requests as u64 {
        assert!(Instant::now() < deadline, "receipts not uploaded: {total_receipts} of {requests}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        total_receipts = 0;
        for n in &nodes {
            total_receipts += net.cp.store().receipt_count(&b3iq_core::NodeId::parse(&n.id).unwrap()).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(st.tick(b3iq_host::context::unix_now_ms()).await.unwrap(), [1]);
    let e = net.cp.store().epoch(1).await.unwrap().unwrap();
    assert_eq!(e.receipt_count, requests as u64);
    assert!(e.posted_at.unwrap() > 0 && e.tx_hash.is_some());

    // A real receipt's proof from the public API, checked here against the root on chain.
    let receipts: Vec<SignedReceipt> = net.cp.store().epoch_receipts(1).await.unwrap().iter().map(|b| SignedReceipt::decode(b).unwrap()).collect();
    let real = receipts[receipts.len() / 2].receipt_id();
    let api = b3iq_control::public::PublicApi::new(net.cp.clone(), Some(net.gw.clone()));
    let inc = api.receipt(&real).await.unwrap();
    assert_eq!((inc.status.as_str(), inc.epoch_id), ("included", Some(1)));
    let p = inc.proof.unwrap();
    let on_chain = {
        let file: b3iq_protocol::settlement::ClaimFile = serde_json::from_str(e.claim_file.as_deref().unwrap()).unwrap();
        // The receipt root is in the post transaction's `EpochPosted` event (the contract
        // stores only the payout root).
        use alloy::providers::Provider;
        let tx: alloy::primitives::B256 = e.tx_hash.as_deref().unwrap().parse().unwrap();
        let rcpt = admin.provider().get_transaction_receipt(tx).await.unwrap().expect("the post transaction is mined");
        let topic = alloy::primitives::keccak256("EpochPosted(uint64,bytes32,bytes32,uint256,uint64,uint64,uint64)");
        let log = rcpt.inner.logs().iter().find(|l| l.topics().first() == Some(&topic)).expect("an EpochPosted event");
        assert_eq!(log.topics()[1], alloy::primitives::B256::from(alloy::primitives::U256::from(1u64)), "for epoch 1");
        let root = b3iq_core::Hash32(log.data().data[..32].try_into().unwrap());
        assert_eq!(root, file.receipt_root, "the claim file's receipt root is the one posted on chain");
        root
    };
    assert_eq!(p.receipt_root, on_chain);
    let proof = b3iq_core::merkle::MerkleProof { leaf_count: p.leaf_count, siblings: p.siblings.clone() };
    assert!(b3iq_core::merkle::verify_inclusion(&on_chain, &real.0, p.leaf_index, &proof), "the proof verifies against the posted root");
    assert_eq!(p.leaf_count, requests as u64);
    let mut forged = real;
    forged.0[0] ^= 1;
    assert!(!b3iq_core::merkle::verify_inclusion(&on_chain, &forged.0, p.leaf_index, &proof));
    assert!(matches!(api.receipt(&forged).await, Err(b3iq_control::ControlError::Refused(b3iq_control::store::Refusal::NotFound(_)))));

    // A receipt after the epoch closed: known, in no epoch yet.
    let r = gc
        .post(format!("{}/v1/chat/completions", net.url))
        .bearer_auth(&token)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": &prompts[0]}], "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = common::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pending = 'found: loop {
        for n in &nodes {
            let v: Value = c.get(n.d.url("/api/receipts?limit=500")).header("cookie", &n.cookie).send().await.unwrap().json().await.unwrap();
            for r in v["receipts"].as_array().unwrap().iter().filter(|r| r["key_id"] == "network") {
                let id = SignedReceipt::decode(&hex::decode(r["signed"].as_str().unwrap()).unwrap()).unwrap().receipt_id();
                if net.cp.store().receipt_epoch(&id.0).await.unwrap() == Some(None) {
                    break 'found id;
                }
            }
        }
        assert!(Instant::now() < deadline, "the receipt after the epoch was not uploaded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let p = api.receipt(&pending).await.unwrap();
    assert_eq!((p.status.as_str(), p.epoch_id, p.proof.is_none()), ("pending", None, true));

    // The benchmark's result, public as a summary.
    let deadline = Instant::now() + Duration::from_secs(300);
    let job_id: [u8; 16] = hex::decode(&bench.job_id).unwrap().try_into().unwrap();
    while net.cp.store().job(&n1, &job_id).await.unwrap().and_then(|j| j.finished_at_ms).is_none() {
        assert!(Instant::now() < deadline, "no benchmark result");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b = api.node(&n1, b3iq_host::context::unix_now_ms()).await.unwrap().benchmark.expect("a benchmark summary");
    assert!(b.generated_tokens_per_s_milli > 0 && b.measured_at_ms > 0, "{b:?}");

    // The browser part, with everything private this test made.
    let org = net.cp.store().org(&net.org).await.unwrap().unwrap();
    let mut private: Vec<String> = vec![token.clone(), org.name.clone(), org.id.clone(), net.url.clone(), cp_home.display().to_string(), std::fs::read_to_string(cp_home.join("settler.key")).unwrap().trim().trim_start_matches("0x").to_string()];
    private.extend(prompts.iter().cloned());
    private.extend(outputs.iter().cloned());
    for (i, n) in nodes.iter().enumerate() {
        private.push(n.d.home.display().to_string());
        private.push(n.d.base.clone());
        private.push(n.cookie.clone());
        private.push(node_keys[i].trim_start_matches("0x").to_string());
    }
    let shots = std::env::var("EXPLORER_SHOTS").map(std::path::PathBuf::from).unwrap_or_else(|_| dir.join("screenshots"));
    let out = Command::new("node")
        .arg(app.join("e2e/explorer.e2e.mjs"))
        .env("EXPLORER_URL", &net.url)
        .env("NODE_EXTRA_CA_CERTS", &net.ca)
        .env("RECEIPT_ID", real.to_hex())
        .env("PENDING_RECEIPT_ID", pending.to_hex())
        .env("NODE_IDS", nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(","))
        .env("EPOCH_ID", "1")
        .env("MODEL", MODEL)
        .env("PRIVATE_VALUES", serde_json::to_string(&private).unwrap())
        .env("SHOTS", &shots)
        .output()
        .expect("node (the explorer's test needs Node)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "explorer e2e failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(summary["ok"], true, "{stdout}");
    eprintln!("explorer e2e: {requests} paid requests, epoch 1 posted; {summary}");
}
