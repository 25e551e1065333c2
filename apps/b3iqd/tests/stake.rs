//! On-chain registration and stake in routing (issue 14, items 3 and 4) on a real hardhat node:
//! a control plane that is NodeRegistry's attester (`POST /v1/node/registration`) and whose
//! gateway checks `StakeVault.isStaked` (`settlement.require_stake`), and real `b3iqd` nodes in
//! network mode that register and stake through the real CLI (`b3iqd wallet register | stake |
//! unbond | stake-status`). Nothing is routed before staking; a node unbonding leaves routing;
//! forged, replayed and unenrolled registration requests are refused; stake moved to a new
//! node does not carry reputation.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use b3iq_core::payout::EthAddress;
use b3iq_core::reputation::ReputationEventKind;
use b3iq_core::{NodeId, NodeKey};
use b3iq_protocol::messages::Audience;
use b3iq_protocol::registration_api::{RegistrationGrant, RegistrationRequest};
use common::net::{b3iqd, gw_client, node, policy, wait_tunnels, Node};
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

/// As [`serve`], each request retried for up to 30 s while no node is routable: on a loaded
/// machine a heartbeat can arrive later than the gateway's freshness window (3 intervals), and
/// which node serves is what the callers check.
async fn serve_retrying(c: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match serve(c, url, token, 1).await {
                Ok(s) => break out.extend(s),
                Err(e) if Instant::now() < until => {
                    eprintln!("no node routable now, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                Err(e) => panic!("no node served for 30 s: {e}"),
            }
        }
    }
    out
}

/// `b3iqd wallet ARGS --rpc RPC` in `home`: the JSON it printed, or its exit failure's stderr.
fn wallet(home: &Path, rpc: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["wallet"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--rpc", rpc]);
    let (ok, out, err) = b3iqd(home, &all);
    if ok {
        Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}")))
    } else {
        Err(err)
    }
}

/// 10^18 base units per token, as the decimal string the CLI takes.
fn units(tokens: u64) -> String {
    chain::tokens(tokens).to_string()
}

async fn post_registration(c: &reqwest::Client, url: &str, r: &RegistrationRequest) -> (u16, Value) {
    let resp = c.post(format!("{url}/v1/node/registration")).json(r).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn reputation_bps(c: &reqwest::Client, url: &str, n: &Node) -> u64 {
    let v: Value = c.get(format!("{url}/v1/public/nodes/{}", n.id)).send().await.unwrap().json().await.unwrap();
    v["reputation_bps"].as_u64().unwrap_or_else(|| panic!("public node: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_register_and_stake_through_the_cli_and_reputation_stays_with_the_node() {
    let dir = tempdir("stake");
    let hh = chain::HardhatNode::start().await;
    let rpc = hh.url.clone();
    let admin = chain::funded(&rpc, chain::wallet("admin")).await;
    // Deployed with a placeholder attester: the owner names the control plane's below.
    let (d, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(chain::wallet("attester").address())).await.unwrap();
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
            "settlement": {"rpc_url": rpc, "deployment": d, "settler_key_file": "settler.key",
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
    // The attester key is made on first start (mode 0600); the registry owner names it.
    let home = b3iq_control::ControlHome::locate(Some(cp_home.clone())).unwrap();
    let registrar = home.registrar(&home.settings().unwrap(), &cp).await.unwrap().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(cp_home.join("attester.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let c = gw_client(&net.ca);
    let contracts: Value = c.get(format!("{url}/v1/network/contracts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(contracts["attester"], registrar.address().to_string());
    assert_eq!(contracts["stake_vault"], EthAddress(d.stake_vault.0 .0).to_string());

    let now = b3iq_host::context::unix_now_ms();
    let a = node(&net, &dir, "a", policy(2)).await;
    let b = node(&net, &dir, "b", policy(2)).await;
    wait_tunnels(&gw, 2).await;
    cp.add_credits(&org, 1_000_000_000, "seed", now).await.unwrap();
    let (_, token) = cp.create_gateway_key(&org, "app", 100_000, None, now).await.unwrap();

    // Both nodes online (fresh heartbeats, network mode), so chain state is what decides below.
    let until = Instant::now() + Duration::from_secs(60);
    for n in [&a, &b] {
        let id = NodeId::parse(&n.id).unwrap();
        while cp.node(&org, &id, b3iq_host::context::unix_now_ms()).await.unwrap().presence != "online" {
            assert!(Instant::now() < until, "node {} never came online", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(!serve(&c, &url, &token, 1).await.unwrap_err().starts_with("200"), "nothing is routed before registration");

    // Operator wallets: `a`'s made by `b3iqd wallet create`, funded with gas and tokens.
    let mut operators = Vec::new();
    for n in [&a, &b] {
        let (ok, out, err) = b3iqd(&n.d.home, &["wallet", "create"]);
        assert!(ok, "{err}");
        let address: Value = serde_json::from_str(&out).unwrap();
        let key = b3iq_chain::key_file::load_key_file(&n.d.home.join("wallet.key")).unwrap();
        assert_eq!(address["address"], EthAddress(key.address().0 .0).to_string());
        let op = chain::funded(&rpc, key).await;
        admin.mint(&d, op.address(), chain::tokens(1_000)).await.unwrap();
        operators.push(op);
    }

    // The attester is not the registry's yet: the CLI checks before paying gas, sends nothing.
    let e = wallet(&a.d.home, &rpc, &["register"]).unwrap_err();
    assert!(e.contains("setAttester") && e.contains(&registrar.address().to_string()), "{e}");
    admin.set_attester(&d, b3iq_chain::Address::from(registrar.address().0)).await.unwrap();

    // Refused registration requests: forged, for an unenrolled node, to another control
    // plane, replayed.
    let a_key = NodeKey::from_key_file(&std::fs::read(a.d.home.join("identity.key")).unwrap()).unwrap();
    let audience = Audience::new(cp.config().audience.as_str()).unwrap();
    let op_a = EthAddress(operators[0].address().0 .0);
    let stranger = NodeKey::from_seed([42; 32]);
    let mut forged = RegistrationRequest::sign(&stranger, audience.clone(), op_a, b3iq_host::context::unix_now_ms());
    (forged.node_id, forged.public_key) = (a_key.node_id(), a_key.public());
    let (status, v) = post_registration(&c, &url, &forged).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("message")), "signed by another key: {v}");
    let (status, v) = post_registration(&c, &url, &RegistrationRequest::sign(&stranger, audience.clone(), op_a, b3iq_host::context::unix_now_ms())).await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("node_not_enrolled")), "{v}");
    let (status, v) = post_registration(&c, &url, &RegistrationRequest::sign(&a_key, Audience::new("cp-elsewhere").unwrap(), op_a, b3iq_host::context::unix_now_ms())).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("audience")), "{v}");
    let once = RegistrationRequest::sign(&a_key, audience.clone(), op_a, b3iq_host::context::unix_now_ms());
    let (status, v) = post_registration(&c, &url, &once).await;
    assert_eq!(status, 200, "{v}");
    let grant: RegistrationGrant = serde_json::from_value(v).unwrap();
    // Derived by the control plane: no benchmark yet, so class 0 and no hardware hash; the
    // running b3iqd's version; the registry's nonce for a new node.
    assert_eq!((grant.attestation.device_class, grant.attestation.hardware_hash.0, grant.attestation.nonce), (0, [0; 32], 0));
    assert_eq!(grant.attestation.software_version, b3iq_control::registration::software_version_word(env!("CARGO_PKG_VERSION")).unwrap());
    assert_eq!(grant.attestation.operator, op_a);
    let (status, v) = post_registration(&c, &url, &once).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("replayed")), "{v}");

    // Both register through the CLI; again is a no-op; nothing is routed before staking.
    for n in [&a, &b] {
        let r = wallet(&n.d.home, &rpc, &["register"]).unwrap();
        assert_eq!((r["status"].as_str(), r["node_id"].as_str(), r["device_class"].as_u64()), (Some("registered"), Some(n.id.as_str()), Some(0)), "{r}");
    }
    let again = wallet(&a.d.home, &rpc, &["register"]).unwrap();
    assert_eq!(again["status"], "already_registered", "{again}");
    // `b3iqd dispute list` finds the Disputes contract through the control plane when not told.
    let (ok, out, err) = b3iqd(&a.d.home, &["dispute", "list", "--rpc", &rpc]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["node_id"].as_str(), v["disputes"].as_array().map(Vec::len)), (Some(a.id.as_str()), Some(0)), "{v}");
    let st = wallet(&b.d.home, &rpc, &["stake-status"]).unwrap();
    assert_eq!((st["registered"].as_bool(), st["is_staked"].as_bool(), st["bonded"].as_str(), st["min_stake"].clone()), (Some(true), Some(false), Some("0"), json!(units(100))), "{st}");
    assert!(!serve(&c, &url, &token, 1).await.unwrap_err().starts_with("200"), "registered, not staked: nothing routed");

    // Clear refusals: a balance too small, an amount that is not a whole number, below the minimum.
    let e = wallet(&b.d.home, &rpc, &["stake", &units(5_000)]).unwrap_err();
    assert!(e.contains("insufficient token balance"), "{e}");
    let e = wallet(&b.d.home, &rpc, &["stake", "1.5"]).unwrap_err();
    assert!(e.contains("whole number"), "{e}");
    let e = wallet(&b.d.home, &rpc, &["stake", &units(99)]).unwrap_err();
    assert!(e.contains("BelowMinimumStake"), "{e}");
    // `a` stakes the minimum: within the cache period (1 s) only `a` is routed to.
    let st = wallet(&a.d.home, &rpc, &["stake", &units(100)]).unwrap();
    assert_eq!((st["is_staked"].as_bool(), st["bonded"].as_str()), (Some(true), Some(units(100).as_str())), "{st}");
    let until = Instant::now() + Duration::from_secs(30);
    while let Err(e) = serve(&c, &url, &token, 1).await {
        assert!(Instant::now() < until, "the staked node got no request: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = serve_retrying(&c, &url, &token, 6).await;
    assert!(served.iter().all(|n| *n == a.id), "only the staked node serves: {served:?} (a = {})", a.id);

    // `b` stakes the minimum: within the cache period it gets requests too.
    wallet(&b.d.home, &rpc, &["stake", &units(100)]).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = HashSet::new();
    while !seen.contains(&b.id) {
        assert!(Instant::now() < until, "the newly staked node got no request: {seen:?}");
        // Two at once, so the second goes elsewhere when the first node is taken.
        let (x, y) = tokio::join!(serve_retrying(&c, &url, &token, 1), serve_retrying(&c, &url, &token, 1));
        seen.extend(x.into_iter().chain(y));
    }

    // `a` has served and passed verification challenges (recorded as the verifier does):
    // a reputation well above a new node's.
    let a_id = NodeId::parse(&a.id).unwrap();
    for i in 0..6 {
        gw.reputation().record(a_id, b3iq_host::context::unix_now_ms() + i, ReputationEventKind::Challenge { passed: true });
    }
    gw.flush_reputation(b3iq_host::context::unix_now_ms()).await.unwrap();
    let a_score = reputation_bps(&c, &url, &a).await;
    assert!(a_score >= 2_000, "six passed challenges and served requests: {a_score} bps");

    // Its operator moves the stake: `a` unbonds (leaving routing), the operator withdraws it and
    // stakes the same tokens on a new node `n` (new key), enrolled and registered with the
    // same wallet.
    let st = wallet(&a.d.home, &rpc, &["unbond", &units(100)]).unwrap();
    assert_eq!((st["is_staked"].as_bool(), st["bonded"].as_str(), st["unbonding"].as_str()), (Some(false), Some("0"), Some(units(100).as_str())), "{st}");
    assert!(st["withdrawable_at"].as_u64().unwrap() > 0, "{st}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let served = serve_retrying(&c, &url, &token, 6).await;
    assert!(served.iter().all(|n| *n == b.id), "an unbonding node gets nothing: {served:?} (b = {})", b.id);
    // Too early to withdraw; after the vault's unbonding delay (14 days on this chain's clock)
    // the tokens come back to the operator.
    let e = wallet(&a.d.home, &rpc, &["withdraw"]).unwrap_err();
    assert!(e.contains("UnbondingNotElapsed"), "{e}");
    let before = admin.balance_of(&d, operators[0].address()).await.unwrap();
    admin.increase_time(14 * 24 * 3600 + 1).await.unwrap();
    let st = wallet(&a.d.home, &rpc, &["withdraw"]).unwrap();
    assert_eq!((st["withdrawn"].as_str(), st["unbonding"].as_str()), (Some(units(100).as_str()), Some("0")), "{st}");
    assert_eq!(admin.balance_of(&d, operators[0].address()).await.unwrap(), before + chain::tokens(100));
    let fresh = node(&net, &dir, "n", policy(2)).await;
    wait_tunnels(&gw, 3).await;
    // Clear refusals, nonzero exit: no operator key (the new node has no wallet.key), a node
    // not enrolled anywhere, a chain that does not answer.
    let e = wallet(&fresh.d.home, &rpc, &["register"]).unwrap_err();
    assert!(e.contains("no operator key") && e.contains("wallet create"), "{e}");
    let lone = dir.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    b3iq_host::context::home::write_atomic(&lone.join("identity.key"), &NodeKey::from_seed([43; 32]).to_key_file(), 0o600).unwrap();
    let e = wallet(&lone, &rpc, &["register"]).unwrap_err();
    assert!(e.contains("not enrolled") && e.contains("b3iqd enroll"), "{e}");
    let e = wallet(&a.d.home, "http://127.0.0.1:9", &["stake-status"]).unwrap_err();
    assert!(e.contains("http://127.0.0.1:9") && e.contains("unreachable"), "{e}");
    let a_wallet = a.d.home.join("wallet.key");
    let key_arg = a_wallet.to_str().unwrap();
    // Not registered yet: staking is refused with the way out.
    let e = wallet(&fresh.d.home, &rpc, &["stake", &units(100), "--key-file", key_arg]).unwrap_err();
    assert!(e.contains("not registered") && e.contains("wallet register"), "{e}");
    let fresh_id = NodeId::parse(&fresh.id).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match wallet(&fresh.d.home, &rpc, &["register", "--key-file", key_arg]) {
            Ok(r) => {
                assert_eq!(r["operator"], op_a.to_string(), "{r}");
                break;
            }
            // Its first network-mode heartbeat may not have landed yet.
            Err(e) if e.contains("not in network mode") && Instant::now() < until => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(e) => panic!("register the new node: {e}"),
        }
    }
    let st = wallet(&fresh.d.home, &rpc, &["stake", &units(100), "--key-file", key_arg]).unwrap();
    assert_eq!(st["is_staked"], true, "{st}");
    assert_ne!(fresh_id, a_id);

    // Reputation stayed with `a`: the new node starts at zero, `a` keeps its score.
    gw.flush_reputation(b3iq_host::context::unix_now_ms()).await.unwrap();
    assert_eq!(reputation_bps(&c, &url, &fresh).await, 0, "stake does not carry reputation");
    assert_eq!(gw.reputation().score(&fresh_id), 0);
    let a_after = reputation_bps(&c, &url, &a).await;
    assert!(a_after + 5 >= a_score, "a keeps its history: {a_after} bps, was {a_score}");
    let stored = cp.store().reputations().await.unwrap();
    assert!(stored.iter().any(|r| r.node_id() == a_id), "a's reputation is in the store");
    assert!(stored.iter().all(|r| r.node_id() != fresh_id || r.score_bps(b3iq_host::context::unix_now_ms(), gw.reputation().params()) == 0), "the new node's, if any, is zero");

    // With `a` staked again (the operator's remaining tokens) and all three available, routing
    // follows reputation: `a` serves most sequential requests, the new node the fewest.
    wallet(&a.d.home, &rpc, &["stake", &units(100)]).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let s = serve_retrying(&c, &url, &token, 1).await;
        if s[0] == a.id {
            break;
        }
        assert!(Instant::now() < until, "the restaked node got no request");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut served = Vec::new();
    for _ in 0..20 {
        // One at a time, each after the last one's slot is free: equal loads, so the draw by
        // reputation decides.
        served.extend(serve_retrying(&c, &url, &token, 1).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let count = |id: &str| served.iter().filter(|n| *n == id).count();
    assert!(count(&a.id) >= 12 && count(&a.id) > count(&fresh.id), "a {} of 20, new node {}, b {}", count(&a.id), count(&fresh.id), count(&b.id));
    let v: Value = c.get(format!("{url}/v1/models")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["id"], MODEL, "the model stays routable through the staked nodes");
}
