//! Stake in routing (issue 14, item 3) on a real hardhat node: a control plane whose gateway
//! checks `StakeVault.isStaked` (`settlement.require_stake`), two real `b3iqd` nodes in
//! network mode, registered in NodeRegistry with attester-signed EIP-712 attestations. Only
//! the staked node gets network requests; once the second stakes it gets them too; the first
//! unbonding below the minimum leaves routing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_core::{Hash32, NodeId, OperatingMode};
use common::net::{gw_client, node, policy, wait_tunnels};
use common::tempdir;
use serde_json::{json, Value};

#[path = "../../../b3iq-chain/tests/chain/common.rs"]
mod chain;

const MODEL: &str = "smollm2-135m-instruct-q4_1";

/// The serving node of each of `n` requests (`x-b3iq-node`), or the error answer.
async fn serve(c: &reqwest::Client, url: &str, token: &str, n: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c
            .post(format!("{url}/v1/completions"))
            .bearer_auth(token)
            .json(&json!({"model": MODEL, "prompt": "One two", "max_tokens": 2, "temperature": 0}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let node = r.headers().get("x-b3iq-node").map(|v| v.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        match (status.as_u16(), node) {
            (200, Some(n)) => out.push(n),
            _ => return Err(format!("{status}: {body}")),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_nodes_staked_on_chain_get_network_requests() {
    let dir = tempdir("stake");
    let hh = chain::HardhatNode::start().await;
    let admin = chain::funded(&hh.url, chain::wallet("admin")).await;
    let attester = chain::wallet("attester");
    let (d, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(attester.address())).await.unwrap();
    admin.set_min_stake(&d, 0, chain::tokens(100)).await.unwrap();

    // The control plane and its gateway from control.json, as `b3iq-control serve` makes them.
    let cp_home = dir.join("control");
    std::fs::create_dir_all(&cp_home).unwrap();
    b3iq_chain::key_file::create_key_file(&cp_home.join("settler.key")).unwrap();
    let treasury = chain::wallet("protocol").address().to_string().to_lowercase();
    std::fs::write(
        cp_home.join("control.json"),
        serde_json::to_vec(&json!({
            "heartbeat_interval_s": 1,
            "settlement": {"rpc_url": hh.url, "deployment": d, "settler_key_file": "settler.key",
                           "protocol_account": treasury, "verifier_account": treasury,
                           "require_stake": true, "stake_cache_s": 1},
        }))
        .unwrap(),
    )
    .unwrap();
    let net = common::net::serve_control(&cp_home, |home, settings, cp, _| {
        let gw = home.gateway(settings, cp).unwrap();
        assert!(gw.config().stake.is_some(), "require_stake reaches the gateway");
        gw
    })
    .await;
    let net = common::net::with_org(net).await;
    let (cp, gw, url, org) = (net.cp.clone(), net.gw.clone(), net.url.clone(), net.org.clone());
    let now = b3iq_host::context::unix_now_ms();

    let a = node(&net, &dir, "a", policy(2)).await;
    let b = node(&net, &dir, "b", policy(2)).await;
    wait_tunnels(&gw, 2).await;
    cp.add_credits(&org, 1_000_000_000, "seed", now).await.unwrap();
    let (_, token) = cp.create_gateway_key(&org, "app", 100_000, None, now).await.unwrap();
    let c = gw_client(&net.ca);

    // Both nodes online (fresh heartbeats), so stake is what decides below.
    let until = Instant::now() + Duration::from_secs(60);
    for n in [&a, &b] {
        let id = NodeId::parse(&n.id).unwrap();
        while cp.node(&org, &id, b3iq_host::context::unix_now_ms()).await.unwrap().presence != "online" {
            assert!(Instant::now() < until, "node {} never came online", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Neither node is registered or staked: nothing is routed.
    let refused = serve(&c, &url, &token, 1).await.unwrap_err();
    assert!(!refused.starts_with("200"), "{refused}");

    // Both register (the attester signs, each operator sends); only `a` stakes the minimum.
    let domain = registry_domain(admin.chain_id().await.unwrap(), d.node_registry);
    let deadline = b3iq_host::context::unix_now() + 3600;
    let mut operators = Vec::new();
    for (n, name) in [(&a, "op-a"), (&b, "op-b")] {
        let id = NodeId::parse(&n.id).unwrap();
        let public_key = cp.store().node(&id).await.unwrap().unwrap().public_key;
        let op = chain::funded(&hh.url, chain::wallet(name)).await;
        let att = NodeAttestation {
            public_key,
            operator: op.address(),
            hardware_hash: Hash32([7; 32]),
            software_version: 0x00_01_00,
            mode: OperatingMode::Network,
            device_class: 0,
            nonce: op.attestation_nonce(&d, &id).await.unwrap(),
            deadline,
        };
        let (sol, sig) = sign_attestation(&attester, &domain, &att).unwrap();
        op.register_node(&d, sol, sig).await.unwrap();
        admin.mint(&d, op.address(), chain::tokens(1_000)).await.unwrap();
        op.approve(&d, d.stake_vault, chain::tokens(1_000)).await.unwrap();
        operators.push((id, op));
    }
    operators[0].1.stake(&d, &operators[0].0, chain::tokens(100)).await.unwrap();
    // Registered, no stake: `b` is not staked (the vault refuses a first stake below the minimum).
    assert!(operators[1].1.stake(&d, &operators[1].0, chain::tokens(99)).await.is_err());
    assert!(admin.is_staked(&d, &operators[0].0).await.unwrap());
    assert!(!admin.is_staked(&d, &operators[1].0).await.unwrap());
    // Within the cache period (1 s here) `a` is routed to.
    let until = Instant::now() + Duration::from_secs(30);
    while let Err(e) = serve(&c, &url, &token, 1).await {
        assert!(Instant::now() < until, "the staked node got no request: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = serve(&c, &url, &token, 6).await.unwrap();
    assert!(served.iter().all(|n| *n == a.id), "only the staked node serves: {served:?} (a = {})", a.id);

    // `b` stakes the minimum: within the cache period it gets requests too.
    operators[1].1.stake(&d, &operators[1].0, chain::tokens(100)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = HashSet::new();
    while !seen.contains(&b.id) {
        assert!(Instant::now() < until, "the newly staked node got no request: {seen:?}");
        // Two at once, so the second goes elsewhere when the first node is taken.
        let (x, y) = tokio::join!(serve(&c, &url, &token, 1), serve(&c, &url, &token, 1));
        seen.extend(x.unwrap().into_iter().chain(y.unwrap()));
    }

    // `a` starts unbonding its whole stake: it leaves routing.
    operators[0].1.request_unbond(&d, &operators[0].0, chain::tokens(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let served = serve(&c, &url, &token, 6).await.unwrap();
    assert!(served.iter().all(|n| *n == b.id), "an unbonding node gets nothing: {served:?} (b = {})", b.id);
    let v: Value = c.get(format!("{url}/v1/models")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["id"], MODEL, "the model stays routable through the staked node");
}
