//! Posting an epoch exactly once (`ChainClient::ensure_epoch_posted`) on a real hardhat node:
//! the escrow is funded from the settler's tokens when short, a second call (a retry after a
//! crash or a lost answer) reads the chain and sends nothing, a post sent by an earlier process
//! that died before recording it is recognised, and another root under a posted epoch id is
//! refused without a transaction.

use std::collections::BTreeMap;

use crate::common::*;
use alloy::primitives::U256;
use alloy::providers::Provider;
use b3iq_chain::convert::from_address;
use b3iq_chain::{ChainError, DeployParams, EpochPost};
use b3iq_core::split::SplitPolicy;
use b3iq_core::NodeKey;
use b3iq_protocol::{EpochBuilder, EpochConfig, EpochSettlement, Payees};

const START_MS: u64 = 1_800_000_000_000;

fn epoch(epoch_id: u64, key: &NodeKey, payees: &Payees, price: u64) -> EpochSettlement {
    let config = EpochConfig {
        epoch_id,
        start_ms: START_MS,
        end_ms: START_MS + 60_000,
        token_units_per_micro_credit: 1_000_000_000_000,
        policy: SplitPolicy::default(),
    };
    let mut b = EpochBuilder::new(config, payees.clone()).unwrap();
    let report = b.add_all([
        receipt(key, 1, "m:q4", START_MS + 5, price),
        receipt(key, 2, "m:q4", START_MS + 6, 7),
    ]);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_is_posted_once_whatever_the_retries() {
    let chain = HardhatNode::start().await;
    let admin = funded(&chain.url, wallet("admin")).await;
    let settler = funded(&chain.url, wallet("settler")).await;
    let (d, _) = admin
        .deploy(&DeployParams::defaults(wallet("attester").address()))
        .await
        .unwrap();
    admin.grant_settler(&d, settler.address()).await.unwrap();
    admin
        .mint(&d, settler.address(), tokens(1_000))
        .await
        .unwrap();

    let key = NodeKey::from_seed([5; 32]);
    let payees = Payees {
        hosts: BTreeMap::from([(key.node_id(), from_address(&wallet("operator").address()))]),
        publishers: BTreeMap::new(),
        protocol: from_address(&wallet("protocol").address()),
        verifier: from_address(&wallet("verifier").address()),
    };
    let e1 = epoch(1, &key, &payees, 2_000_000);
    // A settler that restarts posts from the stored claim file: the same commitment.
    assert_eq!(b3iq_chain::EpochCommit::try_from(&e1.claim_file().unwrap()).unwrap(), b3iq_chain::EpochCommit::from(&e1));
    let total = U256::from(e1.total_payout);
    assert_eq!(settler.escrow_available(&d).await.unwrap(), U256::ZERO);

    // First call: funds exactly the missing escrow, then posts.
    let first = settler.ensure_epoch_posted(&d, &(&e1).into()).await.unwrap();
    let EpochPost::Posted(posted) = &first else {
        panic!("first call must post: {first:?}")
    };
    assert!(posted.outcome.gas_used > 0);
    assert_eq!(
        settler.escrow_available(&d).await.unwrap(),
        U256::ZERO,
        "the post reserved what was funded"
    );
    assert_eq!(settler.balance_of(&d, d.settlement).await.unwrap(), total);
    assert_eq!(
        settler.balance_of(&d, settler.address()).await.unwrap(),
        tokens(1_000) - total
    );
    let at = settler.epoch_posted_at(&d, 1).await.unwrap();
    assert_eq!(first.posted_at(), at);

    // A retry (the driver restarted, or the answer was lost): nothing is sent.
    let nonce = settler
        .provider()
        .get_transaction_count(settler.address())
        .await
        .unwrap();
    let again = settler.ensure_epoch_posted(&d, &(&e1).into()).await.unwrap();
    assert!(
        matches!(again, EpochPost::AlreadyPosted { posted_at } if posted_at == at),
        "{again:?}"
    );
    assert_eq!(
        settler
            .provider()
            .get_transaction_count(settler.address())
            .await
            .unwrap(),
        nonce,
        "no transaction on a retry"
    );
    assert_eq!(
        settler.balance_of(&d, d.settlement).await.unwrap(),
        total,
        "no second funding"
    );

    // A post sent by a process that died before recording it (plain postEpoch, escrow funded by
    // hand): recognised as posted.
    let e2 = epoch(2, &key, &payees, 3_000_000);
    settler
        .approve(&d, d.settlement, U256::from(e2.total_payout))
        .await
        .unwrap();
    settler
        .fund_escrow(&d, U256::from(e2.total_payout))
        .await
        .unwrap();
    settler.post_epoch(&d, &e2).await.unwrap();
    let nonce = settler
        .provider()
        .get_transaction_count(settler.address())
        .await
        .unwrap();
    assert!(matches!(
        settler.ensure_epoch_posted(&d, &(&e2).into()).await.unwrap(),
        EpochPost::AlreadyPosted { .. }
    ));
    assert_eq!(
        settler
            .provider()
            .get_transaction_count(settler.address())
            .await
            .unwrap(),
        nonce
    );

    // Another root under a posted id: refused before any transaction.
    let other = epoch(2, &key, &payees, 4_000_000);
    assert_ne!(other.payout_root, e2.payout_root);
    match settler.ensure_epoch_posted(&d, &(&other).into()).await {
        Err(ChainError::Unexpected { message, .. }) => {
            assert!(message.contains("another payout root"), "{message}")
        }
        r => panic!("expected a refusal, got {r:?}"),
    }
    assert_eq!(
        settler
            .provider()
            .get_transaction_count(settler.address())
            .await
            .unwrap(),
        nonce
    );
    assert_eq!(
        settler.balance_of(&d, d.settlement).await.unwrap(),
        total + U256::from(e2.total_payout),
        "escrow holds exactly the two posted epochs"
    );
}
