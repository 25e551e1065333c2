//! Disputes on a real hardhat node (issue 14, item 5): the control plane's dispute tool
//! (`b3iq_control::disputes`, a real SQLite store) takes conflicting-receipt evidence made with
//! a real `b3iqd` home's node key through open -> committee vote -> appeal window -> slash,
//! and the StakeVault's bond drops by exactly the slash; a restart (and a crash between the
//! send and its record) resumes without opening twice; the node's operator appeals a second
//! dispute with `b3iqd dispute appeal` and the arbiter decides it; evidence with a bad
//! signature, non-conflicting receipts or another node's receipt is refused before any
//! transaction.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_chain::convert::from_address;
use b3iq_chain::{ChainClient, Deployment, U256};
use b3iq_control::disputes::{DisputeSettings, DisputeTool};
use b3iq_control::store::credits::{GatewayKey, Hold, HoldSettlement};
use b3iq_control::store::sqlite::SqliteStore;
use b3iq_control::store::{ControlStore, Org, ReceiptRow};
use b3iq_control::ControlError;
use b3iq_core::evidence::Evidence;
use b3iq_core::receipt::SignedReceipt;
use b3iq_core::split::SplitPolicy;
use b3iq_core::{Hash32, NodeKey, OperatingMode};
use b3iq_protocol::{EpochBuilder, EpochConfig, Payees};
use common::net::b3iqd;
use common::tempdir;

#[path = "../../../b3iq-chain/tests/chain/common.rs"]
mod chain;

const DAY: u64 = 86_400;
const START_MS: u64 = 1_800_000_000_000;

/// Stores `receipts` as the gateway does (uploaded, each charging a hold), closes epoch 1 over
/// them, posts it on chain with the settler and records the post.
async fn settle(store: &dyn ControlStore, admin: &ChainClient, settler: &ChainClient, d: &Deployment, receipts: &[SignedReceipt], host: alloy::primitives::Address) {
    let now = START_MS + 3_600_000;
    store.create_org(&Org { id: "org_a".into(), name: "acme".into(), created_at_ms: now }).await.unwrap();
    let key = GatewayKey { id: "gk_00000000000000ee".into(), org_id: "org_a".into(), name: "app".into(), rate_per_min: 1000, spend_limit_per_day: None, created_at_ms: now, revoked_at_ms: None };
    store.create_gateway_key(&key, &[0xee; 32]).await.unwrap();
    store.add_credits("org_a", 1_000_000_000, "seed", now).await.unwrap();
    let rows = receipts
        .iter()
        .map(|r| {
            let b = r.body();
            ReceiptRow { receipt_id: r.receipt_id().0, node_id: b.node_id, model_id: b.model_id.clone(), mode: "network".into(), prompt_tokens: b.prompt_tokens, completion_tokens: b.completion_tokens, price_micro_credits: b.price_micro_credits, started_at_ms: b.started_at_ms, signed: r.encode() }
        })
        .collect();
    store.store_receipts(rows, now).await.unwrap();
    for (i, r) in receipts.iter().enumerate() {
        let id = [i as u8 + 1; 16];
        store.place_hold(&Hold { id, org_id: "org_a".into(), key_id: key.id.clone(), amount: 2_000_000, created_at_ms: now }).await.unwrap();
        store.settle_hold(&HoldSettlement { hold_id: id, charge: r.body().price_micro_credits, node_id: r.body().node_id, receipt_id: r.receipt_id().0, now_ms: now }).await.unwrap();
    }
    let e = store.close_epoch(now, now).await.unwrap().unwrap();
    assert_eq!((e.epoch_id, e.receipt_count), (1, receipts.len() as u64));
    let payees = Payees {
        hosts: BTreeMap::from([(receipts[0].body().node_id, from_address(&host))]),
        publishers: BTreeMap::new(),
        protocol: from_address(&chain::wallet("protocol").address()),
        verifier: from_address(&chain::wallet("verifiers").address()),
    };
    let config = EpochConfig { epoch_id: 1, start_ms: e.start_ms, end_ms: e.end_ms, token_units_per_micro_credit: 1_000_000_000_000, policy: SplitPolicy::default() };
    let mut b = EpochBuilder::new(config, payees).unwrap();
    for r in receipts {
        b.add(r.clone()).unwrap();
    }
    let epoch = b.build().unwrap();
    let total = U256::from(epoch.total_payout);
    admin.mint(d, admin.address(), total).await.unwrap();
    admin.approve(d, d.settlement, total).await.unwrap();
    admin.fund_escrow(d, total).await.unwrap();
    let posted = settler.post_epoch(d, &epoch).await.unwrap();
    store.set_epoch_posted(1, Some(&posted.outcome.tx_hash.to_string()), admin.block_timestamp().await.unwrap()).await.unwrap();
}

/// A network receipt for `request` priced `price`, signed by `key`.
fn receipt(key: &NodeKey, request: u8, price: u64) -> SignedReceipt {
    let mut b = chain::receipt(key, request, "smollm2", START_MS + u64::from(request), price).into_body();
    b.mode = OperatingMode::Network;
    b.sign(key).unwrap()
}

async fn bonded(c: &ChainClient, d: &Deployment, node: &b3iq_core::NodeId) -> U256 {
    U256::from(c.stake_of(d, node).await.unwrap().bonded)
}

async fn dispute_count(c: &ChainClient, d: &Deployment) -> U256 {
    c.call("Disputes.disputeCount", c.disputes(d).disputeCount()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_receipts_go_through_vote_appeal_window_and_slash_on_chain() {
    let dir = tempdir("disputes");
    let hh = chain::HardhatNode::start().await;
    let admin = chain::funded(&hh.url, chain::wallet("admin")).await;
    let settler = chain::funded(&hh.url, chain::wallet("settler")).await;
    let arbiter = chain::funded(&hh.url, chain::wallet("arbiter")).await;
    let attester = chain::wallet("attester");
    let (d, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(attester.address())).await.unwrap();
    admin.grant_settler(&d, settler.address()).await.unwrap();
    admin.grant_arbiter(&d, arbiter.address()).await.unwrap();
    admin.set_min_stake(&d, 0, chain::tokens(100)).await.unwrap();

    // A real b3iqd home: its node key signs the receipts; its payout wallet is the operator.
    let home = dir.join("node");
    let node_key = b3iq_host::ops::Offline::open(Some(home.clone())).unwrap().key.clone();
    let node = node_key.node_id();
    let op_addr = b3iq_chain::key_file::create_key_file(&home.join("wallet.key")).unwrap();
    let op = chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(&home.join("wallet.key")).unwrap()).await;
    assert_eq!(op.address(), op_addr);
    let domain = registry_domain(admin.chain_id().await.unwrap(), d.node_registry);
    let att = NodeAttestation { public_key: node_key.public(), operator: op.address(), hardware_hash: Hash32([7; 32]), software_version: 0x00_01_00, mode: OperatingMode::Network, device_class: 0, nonce: U256::ZERO, deadline: admin.block_timestamp().await.unwrap() + 3600 };
    let (sol, sig) = sign_attestation(&attester, &domain, &att).unwrap();
    op.register_node(&d, sol, sig).await.unwrap();
    admin.mint(&d, op.address(), chain::tokens(1_000)).await.unwrap();
    op.approve(&d, d.stake_vault, chain::tokens(1_000)).await.unwrap();
    op.stake(&d, &node, chain::tokens(1_000)).await.unwrap();

    // The control plane: its store, a challenger wallet with tokens for bonds, and two
    // committee keys (quorum 2).
    let cp_home = dir.join("control");
    std::fs::create_dir_all(&cp_home).unwrap();
    let store: Arc<dyn ControlStore> = Arc::new(SqliteStore::open(&cp_home.join("control.db")).unwrap());
    let mut voters = Vec::new();
    for f in ["challenger.key", "verifier-2.key"] {
        let a = b3iq_chain::key_file::create_key_file(&cp_home.join(f)).unwrap();
        chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(&cp_home.join(f)).unwrap()).await;
        admin.grant_verifier(&d, a).await.unwrap();
        voters.push(a);
    }
    admin.mint(&d, voters[0], chain::tokens(1_000)).await.unwrap();
    let settings = DisputeSettings { key_file: "challenger.key".into(), verifier_key_files: vec!["challenger.key".into(), "verifier-2.key".into()], slash_amount: chain::tokens(300).to_string(), min_fail_verdicts: 2, interval_s: 1 };
    let tool = || {
        let (store, settings, cp_home, url) = (store.clone(), settings.clone(), cp_home.clone(), hh.url.clone());
        async move {
            let (c, v) = DisputeTool::load_keys(&cp_home, &settings).unwrap();
            DisputeTool::connect(store, &url, d, settings, c, v).await.unwrap()
        }
    };
    let t = tool().await;

    // Receipts: request 1 signed twice with different prices (an equivocation), request 2 twice
    // too; the first of each is the one the gateway accepted, settled in epoch 1.
    let (r1, r1x) = (receipt(&node_key, 1, 1_000_000), receipt(&node_key, 1, 2_000_000));
    let (r2, r2x) = (receipt(&node_key, 2, 1_000_000), receipt(&node_key, 2, 3_000_000));
    settle(store.as_ref(), &admin, &settler, &d, &[r1.clone(), r2.clone()], op.address()).await;
    let now = b3iq_host::context::unix_now_ms();

    // Evidence that does not check is refused before any transaction.
    let other = NodeKey::from_seed([9; 32]);
    let mut forged = r1x.encode();
    let n = forged.len();
    forged[n - 1] ^= 1;
    let bad = [
        ("bad signature", Evidence::conflicting_receipts(r1.clone(), SignedReceipt::decode(&forged).unwrap()), "signature does not verify"),
        ("different requests", Evidence::conflicting_receipts(r1.clone(), r2.clone()), "no fault"),
        ("the same receipt", Evidence::ConflictingReceipts { a: r1.clone(), b: r1.clone() }, "no fault"),
        ("another node's receipt", Evidence::conflicting_receipts(r1.clone(), receipt(&other, 1, 5)), "receipt a is by"),
    ];
    for (what, e, why) in bad {
        match t.open(&e, now).await {
            Err(ControlError::Invalid { field: "evidence", reason }) => assert!(reason.contains(why), "{what}: {reason}"),
            x => panic!("{what}: expected a refusal, got {x:?}"),
        }
    }
    assert_eq!(dispute_count(&admin, &d).await, U256::ZERO, "nothing was opened on chain");
    assert!(store.list_disputes(false, 10).await.unwrap().is_empty(), "nothing was recorded");

    // Conflicting receipts: opened, both committee keys vote, upheld, in its appeal window.
    let e1 = Evidence::conflicting_receipts(r1x.clone(), r1.clone());
    let row = t.open(&e1, now).await.unwrap();
    assert_eq!(row.status, "upheld", "{row:?}");
    assert_eq!(row.epoch_id, Some(1));
    assert_eq!(row.evidence_hash, e1.hash().0);
    assert!(row.chain_tx.is_some() && row.vote_tx.is_some());
    let id1: U256 = row.chain_dispute_id.as_deref().unwrap().parse().unwrap();
    let on_chain = admin.dispute(&d, id1).await.unwrap();
    assert_eq!(on_chain.evidenceHash.0, e1.hash().0, "the evidence hash is on chain");
    assert_eq!((on_chain.status, on_chain.upholdVotes, on_chain.epochId), (2, 2, 1));
    assert_eq!(U256::from(on_chain.slashAmount), chain::tokens(300));

    // A second equivocation, opened while the epoch's evidence window is open.
    let row2 = t.open(&Evidence::conflicting_receipts(r2.clone(), r2x.clone()), now + 1).await.unwrap();
    assert_eq!(row2.status, "upheld");
    assert_eq!(dispute_count(&admin, &d).await, U256::from(2u64));

    // A restart resumes without opening again, also after a crash between the open's send and
    // its record (the row goes back to `pending` without a chain id: found in the events).
    let mut crashed = row2.clone();
    crashed.status = "pending".into();
    crashed.chain_dispute_id = None;
    crashed.chain_tx = None;
    store.update_dispute(&crashed).await.unwrap();
    let t = tool().await;
    let rows = t.tick(now).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == "upheld"), "{rows:?}");
    assert_eq!(rows[1].chain_dispute_id, row2.chain_dispute_id);
    assert_eq!(dispute_count(&admin, &d).await, U256::from(2u64), "never opened twice");
    // Resubmitting the same evidence is the same dispute.
    assert_eq!(t.open(&e1, now).await.unwrap().chain_dispute_id, row.chain_dispute_id);
    assert_eq!(dispute_count(&admin, &d).await, U256::from(2u64));

    // The operator appeals the second with `b3iqd dispute appeal` (the payout wallet's key),
    // inside its window; `b3iqd dispute list` shows both.
    let addr = format!("{}", d.disputes);
    let (ok, out, err) = b3iqd(&home, &["dispute", "list", "--rpc", &hh.url, "--disputes", &addr]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["node_id"], node.to_text());
    assert_eq!(listed["disputes"].as_array().unwrap().len(), 2);
    assert_eq!(listed["disputes"][0]["status"], "upheld");
    assert_eq!(listed["disputes"][0]["evidence_hash"], format!("0x{}", e1.hash().to_hex()));
    let id2 = row2.chain_dispute_id.clone().unwrap();
    let (ok, out, err) = b3iqd(&home, &["dispute", "appeal", &id2, "--rpc", &hh.url, "--disputes", &addr]);
    assert!(ok, "{err}");
    assert!(out.contains("\"appealed\""), "{out}");
    // Not against this node: refused before sending.
    let (ok, _, err) = b3iqd(&home, &["dispute", "appeal", "99", "--rpc", &hh.url, "--disputes", &addr]);
    assert!(!ok, "an unknown dispute cannot be appealed");
    assert!(err.contains("not against this node"), "{err}");

    // Inside the appeal window nothing executes.
    let before = bonded(&admin, &d, &node).await;
    assert_eq!(before, chain::tokens(1_000));
    let rows = t.tick(now).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["upheld", "appealed"]);
    assert_eq!(bonded(&admin, &d, &node).await, before);

    // After the appeal window: the first is slashed, exactly the slash asked; the appealed one
    // waits for the arbiter, who overturns it: no second slash.
    admin.increase_time(30 * DAY + 1).await.unwrap();
    let rows = t.tick(now).await.unwrap();
    assert_eq!(rows[0].status, "executed");
    assert!(rows[0].slash_tx.is_some());
    assert_eq!(rows[1].status, "appealed");
    let after = bonded(&admin, &d, &node).await;
    assert_eq!(before - after, chain::tokens(300), "the bond drops by exactly the slash");
    // The slash is a lost dispute in the node's reputation (core's `Dispute` event), once.
    let params = b3iq_core::reputation::ReputationParams::default();
    let acc = |rs: Vec<b3iq_core::reputation::Reputation>| {
        rs.into_iter().find(|r| r.node_id() == node).map(|r| r.accumulators(now, &params)).expect("a reputation row")
    };
    let (good0, bad0) = acc(store.reputations().await.unwrap());
    assert_eq!((good0, bad0 > 0), (0, true), "a lost dispute only: ({good0}, {bad0})");
    arbiter.decide_appeal(&d, id2.parse().unwrap(), true).await.unwrap();
    let rows = t.tick(now).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["overturned"]);
    let (good1, bad1) = acc(store.reputations().await.unwrap());
    assert!(good1 > 0 && bad1 == bad0, "the overturned one is a won dispute: ({good1}, {bad1})");
    assert!(t.tick(now).await.unwrap().is_empty(), "both disputes are final");
    let all = store.list_disputes(false, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["executed", "overturned"]);
    assert_eq!(bonded(&admin, &d, &node).await, after, "an overturned dispute slashes nothing");
    assert_eq!(dispute_count(&admin, &d).await, U256::from(2u64));
}
