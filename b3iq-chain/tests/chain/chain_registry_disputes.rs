//! NodeRegistry, StakeVault and Disputes on a real local chain: forged attestations, stake
//! unbonding, and the dispute lifecycle (no slash without an upheld dispute, none during the
//! appeal window, evidence window shorter than unbonding, frozen withdrawals).

use std::collections::BTreeMap;

use crate::common::*;
use alloy::primitives::U256;
use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_chain::convert::{from_address, node_b256};
use b3iq_chain::{ChainClient, DeployParams, Deployment};
use b3iq_core::split::SplitPolicy;
use b3iq_core::{Hash32, NodeKey, OperatingMode};
use b3iq_protocol::{EpochBuilder, EpochConfig, Payees};

const DAY: u64 = 86_400;

fn attestation(
    key: &NodeKey,
    operator: alloy::primitives::Address,
    nonce: u64,
    deadline: u64,
) -> NodeAttestation {
    NodeAttestation {
        public_key: key.public(),
        operator,
        hardware_hash: Hash32([3; 32]),
        software_version: 0x00_01_00,
        mode: OperatingMode::Network,
        device_class: 2,
        nonce: U256::from(nonce),
        deadline,
    }
}

async fn post_small_epoch(
    admin: &ChainClient,
    settler: &ChainClient,
    d: &Deployment,
    key: &NodeKey,
    epoch_id: u64,
) {
    let start = 1_800_000_000_000 + epoch_id * 3_600_000;
    let payees = Payees {
        hosts: BTreeMap::from([(
            key.node_id(),
            from_address(&admin.node(d, &key.node_id()).await.unwrap().operator),
        )]),
        publishers: BTreeMap::new(),
        protocol: from_address(&wallet("protocol").address()),
        verifier: from_address(&wallet("verifiers").address()),
    };
    let mut b = EpochBuilder::new(
        EpochConfig {
            epoch_id,
            start_ms: start,
            end_ms: start + 3_600_000,
            token_units_per_micro_credit: 1_000_000_000_000,
            policy: SplitPolicy::default(),
        },
        payees,
    )
    .unwrap();
    b.add(receipt(key, 1, "m:q4", start + 5, 1_000_000))
        .unwrap();
    let epoch = b.build().unwrap();
    let total = U256::from(epoch.total_payout);
    admin.mint(d, admin.address(), total).await.unwrap();
    admin.approve(d, d.settlement, total).await.unwrap();
    admin.fund_escrow(d, total).await.unwrap();
    settler.post_epoch(d, &epoch).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_stake_and_dispute_rules_on_local_chain() {
    let chain = HardhatNode::start().await;
    let admin = funded(&chain.url, wallet("admin")).await;
    let settler = funded(&chain.url, wallet("settler")).await;
    let op = funded(&chain.url, wallet("operator")).await;
    let other = funded(&chain.url, wallet("other")).await;
    let challenger = funded(&chain.url, wallet("challenger")).await;
    let v1 = funded(&chain.url, wallet("verifier-1")).await;
    let v2 = funded(&chain.url, wallet("verifier-2")).await;
    let arbiter = funded(&chain.url, wallet("arbiter")).await;
    let attester = wallet("attester");
    let impostor = wallet("impostor");

    let (d, _) = admin
        .deploy(&DeployParams::defaults(attester.address()))
        .await
        .unwrap();
    admin.grant_settler(&d, settler.address()).await.unwrap();
    admin.grant_verifier(&d, v1.address()).await.unwrap();
    admin.grant_verifier(&d, v2.address()).await.unwrap();
    admin.grant_arbiter(&d, arbiter.address()).await.unwrap();
    admin.set_min_stake(&d, 2, tokens(1_000)).await.unwrap();
    let domain = registry_domain(admin.chain_id().await.unwrap(), d.node_registry);
    let key = NodeKey::from_seed([42; 32]);
    let node = key.node_id();
    let now = admin.block_timestamp().await.unwrap();

    // --- registration ---
    // Forged: signed by a key that is not the attester.
    let (sol, sig) = sign_attestation(
        &impostor,
        &domain,
        &attestation(&key, op.address(), 0, now + 3600),
    )
    .unwrap();
    assert_reverted(op.register_node(&d, sol, sig).await, "InvalidAttestation");
    // Valid attestation, tampered after signing (device class raised).
    let (mut sol, sig) = sign_attestation(
        &attester,
        &domain,
        &attestation(&key, op.address(), 0, now + 3600),
    )
    .unwrap();
    sol.deviceClass = 7;
    assert_reverted(op.register_node(&d, sol, sig).await, "InvalidAttestation");
    // Signed for another chain / registry: wrong domain.
    let wrong_domain = registry_domain(1, d.node_registry);
    let (sol, sig) = sign_attestation(
        &attester,
        &wrong_domain,
        &attestation(&key, op.address(), 0, now + 3600),
    )
    .unwrap();
    assert_reverted(op.register_node(&d, sol, sig).await, "InvalidAttestation");
    // Sent by someone other than the attested operator.
    let (sol, sig) = sign_attestation(
        &attester,
        &domain,
        &attestation(&key, op.address(), 0, now + 3600),
    )
    .unwrap();
    assert_reverted(
        other.register_node(&d, sol.clone(), sig.clone()).await,
        "NotOperator",
    );
    // Expired.
    let (esol, esig) = sign_attestation(
        &attester,
        &domain,
        &attestation(&key, op.address(), 0, now - 1),
    )
    .unwrap();
    assert_reverted(op.register_node(&d, esol, esig).await, "AttestationExpired");
    // Valid.
    let reg = op
        .register_node(&d, sol.clone(), sig.clone())
        .await
        .unwrap();
    assert!(reg.gas_used > 21_000);
    // Replay of the same attestation.
    assert_reverted(op.register_node(&d, sol, sig).await, "BadNonce");
    // Update with a fresh attestation (nonce 1).
    let mut upd = attestation(&key, op.address(), 1, now + 3600);
    upd.software_version = 0x00_02_00;
    let (usol, usig) = sign_attestation(&attester, &domain, &upd).unwrap();
    op.update_node(&d, usol, usig).await.unwrap();
    assert_eq!(
        op.node(&d, &node).await.unwrap().softwareVersion,
        0x00_02_00
    );

    // --- stake and unbonding ---
    admin.mint(&d, op.address(), tokens(5_000)).await.unwrap();
    op.approve(&d, d.stake_vault, tokens(5_000)).await.unwrap();
    op.stake(&d, &node, tokens(2_000)).await.unwrap();
    op.request_unbond(&d, &node, tokens(500)).await.unwrap();
    assert_reverted(op.withdraw_stake(&d, &node).await, "UnbondingNotElapsed");
    admin.increase_time(7 * DAY).await.unwrap();
    assert_reverted(op.withdraw_stake(&d, &node).await, "UnbondingNotElapsed");
    admin.increase_time(7 * DAY + 1).await.unwrap();
    let before = op.balance_of(&d, op.address()).await.unwrap();
    op.withdraw_stake(&d, &node).await.unwrap();
    assert_eq!(
        op.balance_of(&d, op.address()).await.unwrap() - before,
        tokens(500)
    );

    // --- slashing only through an upheld dispute ---
    assert_reverted(
        admin
            .send(
                "StakeVault.slash",
                admin
                    .stake_vault(&d)
                    .slash(node_b256(&node), tokens(1), U256::ZERO),
            )
            .await,
        "NotDisputes",
    );
    post_small_epoch(&admin, &settler, &d, &key, 1).await;
    admin
        .mint(&d, challenger.address(), tokens(1_000))
        .await
        .unwrap();
    challenger
        .approve(&d, d.disputes, tokens(1_000))
        .await
        .unwrap();
    let (id, _) = challenger
        .open_dispute(&d, &node, 1, &Hash32([0xee; 32]), tokens(300))
        .await
        .unwrap();
    // Open but unresolved: no slash.
    assert_reverted(challenger.execute_slash(&d, id).await, "WrongStatus");
    // Withdrawals are frozen while it is open.
    op.request_unbond(&d, &node, tokens(100)).await.unwrap();
    admin.increase_time(14 * DAY + 1).await.unwrap();
    assert_reverted(op.withdraw_stake(&d, &node).await, "FrozenByDispute");
    // Non-verifiers cannot vote.
    assert_reverted(
        other.vote_dispute(&d, id, true).await,
        "AccessControlUnauthorizedAccount",
    );
    v1.vote_dispute(&d, id, true).await.unwrap();
    assert_reverted(v1.vote_dispute(&d, id, true).await, "AlreadyVoted");
    assert_reverted(challenger.execute_slash(&d, id).await, "WrongStatus");
    v2.vote_dispute(&d, id, true).await.unwrap();
    // Upheld, but the appeal window is open.
    assert_reverted(challenger.execute_slash(&d, id).await, "AppealWindowOpen");
    admin.increase_time(29 * DAY).await.unwrap();
    assert_reverted(challenger.execute_slash(&d, id).await, "AppealWindowOpen");
    // The operator appeals in time; while appealed nothing executes.
    assert_reverted(other.appeal_dispute(&d, id).await, "NotOperator");
    op.appeal_dispute(&d, id).await.unwrap();
    assert_reverted(challenger.execute_slash(&d, id).await, "WrongStatus");
    assert_reverted(
        other.decide_appeal(&d, id, false).await,
        "AccessControlUnauthorizedAccount",
    );
    arbiter.decide_appeal(&d, id, false).await.unwrap();
    admin.increase_time(1).await.unwrap();
    let stake_before = op.stake_of(&d, &node).await.unwrap();
    let chal_before = op.balance_of(&d, challenger.address()).await.unwrap();
    challenger.execute_slash(&d, id).await.unwrap();
    let stake_after = op.stake_of(&d, &node).await.unwrap();
    assert_eq!(
        U256::from(stake_before.bonded - stake_after.bonded),
        tokens(300)
    );
    let escrow = op
        .call("slashedEscrow", op.stake_vault(&d).slashedEscrow())
        .await
        .unwrap();
    assert_eq!(
        escrow,
        tokens(300),
        "slashed funds are escrowed in the vault"
    );
    let bond = op
        .call("bondAmount", op.disputes(&d).bondAmount())
        .await
        .unwrap();
    assert_eq!(
        op.balance_of(&d, challenger.address()).await.unwrap() - chal_before,
        bond,
        "bond returned"
    );
    assert_reverted(challenger.execute_slash(&d, id).await, "WrongStatus");
    // Frozen no more.
    op.withdraw_stake(&d, &node).await.unwrap();

    // --- a rejected dispute forfeits the bond and slashes nothing ---
    post_small_epoch(&admin, &settler, &d, &key, 2).await;
    let (id2, _) = challenger
        .open_dispute(&d, &node, 2, &Hash32([0xdd; 32]), tokens(100))
        .await
        .unwrap();
    v1.vote_dispute(&d, id2, false).await.unwrap();
    v2.vote_dispute(&d, id2, false).await.unwrap();
    admin.increase_time(31 * DAY).await.unwrap();
    assert_reverted(challenger.execute_slash(&d, id2).await, "WrongStatus");
    assert_eq!(
        op.call("forfeitedBonds", op.disputes(&d).forfeitedBonds())
            .await
            .unwrap(),
        bond
    );

    // --- evidence window (7 days) is shorter than unbonding (14 days) and enforced ---
    post_small_epoch(&admin, &settler, &d, &key, 3).await;
    admin.increase_time(7 * DAY + 1).await.unwrap();
    assert_reverted(
        challenger
            .open_dispute(&d, &node, 3, &Hash32([0xcc; 32]), tokens(1))
            .await,
        "EvidenceWindowClosed",
    );
    // A dispute must name a posted epoch.
    assert_reverted(
        challenger
            .open_dispute(&d, &node, 99, &Hash32([0xcc; 32]), tokens(1))
            .await,
        "UnknownEpoch",
    );

    // --- deregistration ---
    assert_reverted(other.deregister_node(&d, &node).await, "NotOperator");
    op.deregister_node(&d, &node).await.unwrap();
    assert!(!op.node(&d, &node).await.unwrap().active);
    assert_reverted(op.stake(&d, &node, tokens(1)).await, "NodeNotActive");
    // Re-registration needs a fresh attestation (nonce 2) and keeps the key.
    let now = admin.block_timestamp().await.unwrap();
    let (rsol, rsig) = sign_attestation(
        &attester,
        &domain,
        &attestation(&key, op.address(), 2, now + 3600),
    )
    .unwrap();
    op.register_node(&d, rsol, rsig).await.unwrap();
    assert!(op.node(&d, &node).await.unwrap().active);
    assert_eq!(
        op.attestation_nonce(&d, &node).await.unwrap(),
        U256::from(3u64)
    );
}
