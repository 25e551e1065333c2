//! The settlement story on a real local chain (hardhat@2 node): deploy, register nodes with
//! valid attestations, stake, post an epoch built from real signed receipts, every party claims
//! exactly its share; and the settlement negative cases.

use std::collections::BTreeMap;

use crate::common::*;
use alloy::primitives::{Address, U256};
use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_chain::convert::{from_address, to_address};
use b3iq_chain::DeployParams;
use b3iq_core::split::SplitPolicy;
use b3iq_core::{Hash32, NodeKey, OperatingMode};
use b3iq_protocol::{EpochBuilder, EpochConfig, Payees, ProtocolError};

const DAY: u64 = 86_400;
const EPOCH_START_MS: u64 = 1_800_000_000_000;
const EPOCH_END_MS: u64 = EPOCH_START_MS + 3_600_000;
const MODEL_A: &str = "smollm2-135m-instruct:q4_1";
const MODEL_B: &str = "community/tiny-model:q8_0";

/// Independent re-statement of the split rule (70/10/15/5, floors for publisher, protocol and
/// verifier, remainder to the host; no publisher -> its part to the protocol).
fn expected_split(total: u64, has_publisher: bool) -> (u64, u64, u64, u64) {
    let publisher = total / 10;
    let protocol = total * 15 / 100;
    let verifier = total * 5 / 100;
    let host = total - publisher - protocol - verifier;
    if has_publisher {
        (host, publisher, protocol, verifier)
    } else {
        (host, 0, protocol + publisher, verifier)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_settlement_story_on_local_chain() {
    let chain = HardhatNode::start().await;
    let admin = funded(&chain.url, wallet("admin")).await;
    let settler = funded(&chain.url, wallet("settler")).await;
    let op1 = funded(&chain.url, wallet("operator-1")).await;
    let op2 = funded(&chain.url, wallet("operator-2")).await;
    let publisher = funded(&chain.url, wallet("publisher")).await;
    let outsider = funded(&chain.url, wallet("outsider")).await;
    let attester = wallet("attester");
    let protocol_treasury = wallet("protocol").address();
    let verifier_pool = wallet("verifier-pool").address();

    // Deploy and wire.
    let (d, deploy_gas) = admin
        .deploy(&DeployParams::defaults(attester.address()))
        .await
        .unwrap();
    assert_eq!(
        deploy_gas.len(),
        6,
        "token + five contracts deployed: {deploy_gas:?}"
    );
    admin.grant_settler(&d, settler.address()).await.unwrap();
    admin.set_min_stake(&d, 1, tokens(500)).await.unwrap();
    let chain_id = admin.chain_id().await.unwrap();
    assert_eq!(chain_id, 31337);
    let domain = registry_domain(chain_id, d.node_registry);

    // Register two nodes with valid attestations.
    let k1 = NodeKey::from_seed([11; 32]);
    let k2 = NodeKey::from_seed([22; 32]);
    let now = admin.block_timestamp().await.unwrap();
    for (key, op) in [(&k1, &op1), (&k2, &op2)] {
        let att = NodeAttestation {
            public_key: key.public(),
            operator: op.address(),
            hardware_hash: Hash32([7; 32]),
            software_version: 0x00_01_00,
            mode: OperatingMode::Network,
            device_class: 1,
            nonce: U256::ZERO,
            deadline: now + 3600,
        };
        let (sol, sig) = sign_attestation(&attester, &domain, &att).unwrap();
        // The contract computes the same EIP-712 digest as alloy.
        let onchain = op
            .call(
                "attestationDigest",
                op.node_registry(&d).attestationDigest(sol.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            onchain,
            b3iq_chain::attestation::attestation_digest(&sol, &domain)
        );
        op.register_node(&d, sol, sig).await.unwrap();
        let rec = op.node(&d, &key.node_id()).await.unwrap();
        assert!(rec.active);
        assert_eq!(rec.operator, op.address());
        assert_eq!(rec.publicKey.0, key.public().to_bytes());
        assert_eq!(rec.deviceClass, 1);
    }

    // Stake: mint, approve, stake (a stake below the class minimum is refused).
    for op in [&op1, &op2] {
        admin.mint(&d, op.address(), tokens(1_000)).await.unwrap();
        op.approve(&d, d.stake_vault, tokens(1_000)).await.unwrap();
    }
    assert_reverted(
        op1.stake(&d, &k1.node_id(), tokens(100)).await,
        "BelowMinimumStake",
    );
    op1.stake(&d, &k1.node_id(), tokens(600)).await.unwrap();
    op2.stake(&d, &k2.node_id(), tokens(500)).await.unwrap();
    assert_eq!(
        U256::from(op1.stake_of(&d, &k1.node_id()).await.unwrap().bonded),
        tokens(600)
    );
    assert!(op1
        .call(
            "isStaked",
            op1.stake_vault(&d).isStaked(k1.node_id().0.into())
        )
        .await
        .unwrap());
    assert_reverted(
        outsider.stake(&d, &k1.node_id(), tokens(1)).await,
        "NotOperator",
    );

    // The publisher registers model A with a royalty recipient; model B has no publisher.
    let model_a_id = Hash32(alloy::primitives::keccak256(MODEL_A.as_bytes()).0);
    admin
        .mint(&d, publisher.address(), tokens(1_000))
        .await
        .unwrap();
    publisher
        .approve(&d, d.model_registry, tokens(1_000))
        .await
        .unwrap();
    publisher
        .register_model(
            &d,
            &model_a_id,
            &Hash32([9; 32]),
            &[5; 32],
            publisher.address(),
            tokens(1_000),
        )
        .await
        .unwrap();
    let model = publisher
        .call(
            "getModel",
            publisher.model_registry(&d).getModel(model_a_id.0.into()),
        )
        .await
        .unwrap();
    assert_eq!(model.royaltyRecipient, publisher.address());

    // Payees read back from the chain.
    let mut hosts = BTreeMap::new();
    for key in [&k1, &k2] {
        hosts.insert(
            key.node_id(),
            from_address(&admin.node(&d, &key.node_id()).await.unwrap().operator),
        );
    }
    let payees = Payees {
        hosts,
        publishers: BTreeMap::from([(MODEL_A.to_string(), from_address(&model.royaltyRecipient))]),
        protocol: from_address(&protocol_treasury),
        verifier: from_address(&verifier_pool),
    };

    // Receipts: node 1 serves model A three times, node 2 serves model B twice; plus a
    // duplicate, one outside the epoch, one with a broken signature and one local-mode receipt.
    let r = |k: &NodeKey, i: u8, m: &str, price: u64| {
        receipt(k, i, m, EPOCH_START_MS + u64::from(i) * 1000, price)
    };
    let mut batch = vec![
        r(&k1, 1, MODEL_A, 1_000_003),
        r(&k1, 2, MODEL_A, 2_500_000),
        r(&k1, 3, MODEL_A, 777),
        r(&k2, 4, MODEL_B, 3_000_001),
        r(&k2, 5, MODEL_B, 999_999),
    ];
    batch.push(batch[0].clone()); // duplicate
    batch.push(receipt(&k1, 9, MODEL_A, EPOCH_END_MS, 50)); // outside the epoch
    let mut forged = r(&k2, 6, MODEL_B, 10_000_000).into_body();
    forged.price_micro_credits = 20_000_000;
    let forged = b3iq_core::Signed::from_parts(
        forged,
        k2.public(),
        *r(&k2, 6, MODEL_B, 10_000_000).signature(),
    )
    .unwrap();
    batch.push(forged);
    let mut local = r(&k1, 7, MODEL_A, 0).into_body();
    local.mode = OperatingMode::Local;
    batch.push(local.sign(&k1).unwrap());

    let factor: u128 = 1_000_000_000_000; // 1 token (18 decimals) per credit
    let config = EpochConfig {
        epoch_id: 1,
        start_ms: EPOCH_START_MS,
        end_ms: EPOCH_END_MS,
        token_units_per_micro_credit: factor,
        policy: SplitPolicy::default(),
    };
    let mut builder = EpochBuilder::new(config, payees).unwrap();
    let report = builder.add_all(batch);
    assert_eq!(
        (report.accepted, report.duplicates, report.conflicts),
        (5, 1, 0)
    );
    assert_eq!(report.rejected.len(), 3, "{:?}", report.rejected);
    assert!(matches!(
        report.rejected[0].1,
        ProtocolError::OutsideEpoch { .. }
    ));
    assert!(matches!(
        report.rejected[1].1,
        ProtocolError::InvalidReceiptSignature { .. }
    ));
    assert!(matches!(
        report.rejected[2].1,
        ProtocolError::NotNetworkMode { .. }
    ));
    let epoch = builder.build().unwrap();
    assert_eq!(epoch.receipt_count, 5);

    // Expected amounts, computed independently.
    let t1 = 1_000_003u64 + 2_500_000 + 777;
    let t2 = 3_000_001u64 + 999_999;
    let (h1, p1, pr1, v1) = expected_split(t1, true);
    let (h2, _p2, pr2, v2) = expected_split(t2, false);
    let mut expected: BTreeMap<Address, u128> = BTreeMap::new();
    expected.insert(op1.address(), u128::from(h1) * factor);
    expected.insert(op2.address(), u128::from(h2) * factor);
    expected.insert(publisher.address(), u128::from(p1) * factor);
    expected.insert(protocol_treasury, u128::from(pr1 + pr2) * factor);
    expected.insert(verifier_pool, u128::from(v1 + v2) * factor);
    assert_eq!(epoch.leaf_count(), 5);
    assert_eq!(epoch.total_payout, u128::from(t1 + t2) * factor);
    assert_eq!(expected.values().sum::<u128>(), epoch.total_payout);
    for e in epoch.entries() {
        assert_eq!(expected[&to_address(&e.account)], e.amount, "leaf {e:?}");
    }

    // Fund the escrow with exactly the total.
    let total = U256::from(epoch.total_payout);
    admin.mint(&d, admin.address(), total).await.unwrap();
    admin.approve(&d, d.settlement, total).await.unwrap();
    admin.fund_escrow(&d, total).await.unwrap();

    // Only the settler may post.
    assert_reverted(
        admin.post_epoch(&d, &epoch).await,
        "AccessControlUnauthorizedAccount",
    );
    assert_reverted(
        outsider.post_epoch(&d, &epoch).await,
        "AccessControlUnauthorizedAccount",
    );
    let posted = settler.post_epoch(&d, &epoch).await.unwrap();
    assert!(
        posted.outcome.gas_used <= 80_000,
        "post epoch used {} gas",
        posted.outcome.gas_used
    );
    assert_reverted(settler.post_epoch(&d, &epoch).await, "EpochAlreadyPosted");
    assert_eq!(
        admin.epoch_posted_at(&d, 1).await.unwrap(),
        posted.posted_at
    );

    // No claim during the challenge window.
    let e0 = epoch.entries()[0];
    assert_reverted(
        outsider.claim(&d, 1, &e0, &epoch.proof(0).unwrap()).await,
        "ChallengeWindowOpen",
    );
    admin.increase_time(DAY + 1).await.unwrap();

    // Wrong proofs: another leaf's proof, an inflated amount, another account, a wrong epoch.
    assert_reverted(
        outsider.claim(&d, 1, &e0, &epoch.proof(1).unwrap()).await,
        "InvalidProof",
    );
    let mut inflated = e0;
    inflated.amount += 1;
    assert_reverted(
        outsider
            .claim(&d, 1, &inflated, &epoch.proof(0).unwrap())
            .await,
        "InvalidProof",
    );
    let mut stolen = e0;
    stolen.account = from_address(&outsider.address());
    assert_reverted(
        outsider
            .claim(&d, 1, &stolen, &epoch.proof(0).unwrap())
            .await,
        "InvalidProof",
    );
    let mut short = epoch.proof(0).unwrap();
    short.pop();
    assert_reverted(outsider.claim(&d, 1, &e0, &short).await, "InvalidProof");
    assert_reverted(
        outsider.claim(&d, 9, &e0, &epoch.proof(0).unwrap()).await,
        "UnknownEpoch",
    );

    // Every party claims (through its own wallet where it has one) and gets exactly its share.
    for e in epoch.entries() {
        let who = to_address(&e.account);
        let before = admin.balance_of(&d, who).await.unwrap();
        let sender = [&op1, &op2, &publisher]
            .into_iter()
            .find(|c| c.address() == who)
            .unwrap_or(&outsider);
        let out = sender
            .claim(&d, 1, e, &epoch.proof(e.index).unwrap())
            .await
            .unwrap();
        assert!(out.gas_used > 21_000);
        let after = admin.balance_of(&d, who).await.unwrap();
        assert_eq!(after - before, U256::from(expected[&who]), "claim of {who}");
        assert!(admin.is_claimed(&d, 1, e.index).await.unwrap());
    }
    // Double claim.
    assert_reverted(
        op1.claim(&d, 1, &e0, &epoch.proof(0).unwrap()).await,
        "AlreadyClaimed",
    );
    // The escrow paid out exactly the total: nothing left.
    assert_eq!(
        admin.balance_of(&d, d.settlement).await.unwrap(),
        U256::ZERO
    );
    let available = admin
        .call("escrowAvailable", admin.settlement(&d).escrowAvailable())
        .await
        .unwrap();
    assert_eq!(available, U256::ZERO);

    // A second epoch cannot be posted without escrow.
    let mut e2 = epoch.clone();
    e2.epoch_id = 2;
    assert_reverted(settler.post_epoch(&d, &e2).await, "InsufficientEscrow");

    // A guardian can cancel an epoch during its challenge window (reservation back to escrow),
    // not after it, and never refund more than is reserved.
    admin.grant_guardian(&d, admin.address()).await.unwrap();
    admin.mint(&d, admin.address(), total).await.unwrap();
    admin.approve(&d, d.settlement, total).await.unwrap();
    admin.fund_escrow(&d, total).await.unwrap();
    settler.post_epoch(&d, &e2).await.unwrap();
    assert_reverted(
        admin.cancel_epoch(&d, 2, e2.total_payout + 1).await,
        "RefundExceedsReserved",
    );
    assert_reverted(
        settler.cancel_epoch(&d, 2, e2.total_payout).await,
        "AccessControlUnauthorizedAccount",
    );
    admin.cancel_epoch(&d, 2, e2.total_payout).await.unwrap();
    assert_eq!(admin.epoch_posted_at(&d, 2).await.unwrap(), 0);
    let available = admin
        .call("escrowAvailable", admin.settlement(&d).escrowAvailable())
        .await
        .unwrap();
    assert_eq!(available, total);
    admin.increase_time(DAY + 1).await.unwrap();
    assert_reverted(
        op1.claim(&d, 2, &e0, &epoch.proof(0).unwrap()).await,
        "UnknownEpoch",
    );
    let mut e3 = epoch.clone();
    e3.epoch_id = 3;
    settler.post_epoch(&d, &e3).await.unwrap();
    admin.increase_time(DAY).await.unwrap();
    assert_reverted(
        admin.cancel_epoch(&d, 3, e3.total_payout).await,
        "ChallengeWindowClosed",
    );

    // Governance delists a model; only the owner may.
    assert_reverted(
        publisher
            .delist_model(&d, &model_a_id, &Hash32([1; 32]))
            .await,
        "OwnableUnauthorizedAccount",
    );
    admin
        .delist_model(&d, &model_a_id, &Hash32([1; 32]))
        .await
        .unwrap();
    assert!(!admin
        .call(
            "isListed",
            admin.model_registry(&d).isListed(model_a_id.0.into())
        )
        .await
        .unwrap());
    // The publisher's stake comes back only after the withdraw delay (14 days).
    let mr = publisher.model_registry(&d);
    assert_reverted(
        publisher
            .send(
                "ModelRegistry.withdrawStake",
                mr.withdrawStake(model_a_id.0.into()),
            )
            .await,
        "StakeLocked",
    );
    admin.increase_time(14 * DAY).await.unwrap();
    let before = publisher.balance_of(&d, publisher.address()).await.unwrap();
    assert_reverted(
        outsider
            .send(
                "ModelRegistry.withdrawStake",
                outsider
                    .model_registry(&d)
                    .withdrawStake(model_a_id.0.into()),
            )
            .await,
        "NotPublisher",
    );
    publisher
        .send(
            "ModelRegistry.withdrawStake",
            mr.withdrawStake(model_a_id.0.into()),
        )
        .await
        .unwrap();
    assert_eq!(
        publisher.balance_of(&d, publisher.address()).await.unwrap() - before,
        tokens(1_000)
    );
}
