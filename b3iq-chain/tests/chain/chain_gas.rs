//! Gas report on a real local chain: register, stake, post epoch, and claims in 1,024-leaf and
//! 1,048,576-leaf payout trees (common case: bitmap word and recipient balance already non-zero;
//! worst case: both zero). Every number is a transaction's `gasUsed`, so it includes the 21,000
//! base cost. Targets: claim <= 60,000 in the common case; post epoch <= 80,000.
//!
//! The table is printed (run with `--nocapture`) and written to
//! `$TMPDIR/b3iq-protocol-gas-report.md`.

use std::fmt::Write as _;

use crate::common::*;
use alloy::primitives::U256;
use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_chain::convert::{from_address, to_address};
use b3iq_chain::{ChainClient, DeployParams, Deployment};
use b3iq_core::payout::{EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::{Hash32, NodeKey, OperatingMode};

const CLAIM_TARGET: u64 = 60_000;
const POST_TARGET: u64 = 80_000;

struct Claims {
    common: u64,
    worst: u64,
    proof_len: usize,
}

/// Posts a `leaves`-leaf epoch and measures a worst-case and a common-case claim.
async fn measure(
    admin: &ChainClient,
    settler: &ChainClient,
    claimer: &ChainClient,
    d: &Deployment,
    epoch_id: u64,
    leaves: u64,
    report: &mut String,
) -> (u64, Claims) {
    let started = std::time::Instant::now();
    // Leaves 0..leaves pay deterministic synthetic accounts; leaves 256..259 pay fresh real
    // accounts so balances can be checked.
    let fresh: Vec<_> = (0..4)
        .map(|i| wallet(&format!("gas-recipient-{epoch_id}-{i}")).address())
        .collect();
    let entries: Vec<PayoutEntry> = (0..leaves)
        .map(|i| {
            let account = if (256..260).contains(&i) {
                from_address(&fresh[(i - 256) as usize])
            } else {
                let mut a = [0u8; 20];
                a[..8].copy_from_slice(&(i + 1).to_be_bytes());
                a[19] = 0xb3;
                EthAddress(a)
            };
            PayoutEntry {
                index: i,
                account,
                amount: 1_000_000_000_000 + u128::from(i),
            }
        })
        .collect();
    let total: u128 = entries.iter().map(|e| e.amount).sum();
    let tree = PayoutTree::build(entries).unwrap();
    let build_s = started.elapsed().as_secs_f64();

    let funded_total = U256::from(total) * U256::from(2u64);
    admin.mint(d, admin.address(), funded_total).await.unwrap();
    admin.approve(d, d.settlement, funded_total).await.unwrap();
    admin.fund_escrow(d, funded_total).await.unwrap();
    let posted = settler
        .post_epoch_parts(
            d,
            epoch_id,
            &Hash32([0xab; 32]),
            &tree.root(),
            total,
            leaves * 3,
            leaves,
        )
        .await
        .unwrap();
    admin.increase_time(86_400 + 1).await.unwrap();

    let claim = |i: u64| {
        let e = tree.entries()[i as usize];
        let proof = tree.proof_at(i as usize).unwrap();
        (e, proof)
    };
    // Worst case: first claim in bitmap word 1 (indices 256..511), recipient balance zero.
    let (e, proof) = claim(256);
    let before = claimer.balance_of(d, to_address(&e.account)).await.unwrap();
    assert_eq!(before, U256::ZERO);
    let worst = claimer
        .claim(d, epoch_id, &e, &proof)
        .await
        .unwrap()
        .gas_used;
    assert_eq!(
        claimer.balance_of(d, to_address(&e.account)).await.unwrap(),
        U256::from(e.amount)
    );
    // Common case: same bitmap word already non-zero, recipient already holds tokens.
    let (e, proof) = claim(257);
    admin
        .mint(d, to_address(&e.account), U256::from(1u64))
        .await
        .unwrap();
    let common = claimer
        .claim(d, epoch_id, &e, &proof)
        .await
        .unwrap()
        .gas_used;
    assert_eq!(
        claimer.balance_of(d, to_address(&e.account)).await.unwrap(),
        U256::from(e.amount + 1)
    );
    let _ = writeln!(
        report,
        "| {leaves} | {} | {} | {common} | {worst} | {build_s:.1} s |",
        proof.len(),
        posted.outcome.gas_used
    );
    (
        posted.outcome.gas_used,
        Claims {
            common,
            worst,
            proof_len: proof.len(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_report_register_stake_post_claim() {
    let chain = HardhatNode::start().await;
    let admin = funded(&chain.url, wallet("admin")).await;
    let settler = funded(&chain.url, wallet("settler")).await;
    let op = funded(&chain.url, wallet("operator")).await;
    let claimer = funded(&chain.url, wallet("claimer")).await;
    let attester = wallet("attester");
    let (d, deploy_gas) = admin
        .deploy(&DeployParams::defaults(attester.address()))
        .await
        .unwrap();
    admin.grant_settler(&d, settler.address()).await.unwrap();
    admin.set_min_stake(&d, 1, tokens(500)).await.unwrap();

    let key = NodeKey::from_seed([77; 32]);
    let domain = registry_domain(31337, d.node_registry);
    let now = admin.block_timestamp().await.unwrap();
    let (sol, sig) = sign_attestation(
        &attester,
        &domain,
        &NodeAttestation {
            public_key: key.public(),
            operator: op.address(),
            hardware_hash: Hash32([1; 32]),
            software_version: 0x00_01_00,
            mode: OperatingMode::Network,
            device_class: 1,
            nonce: U256::ZERO,
            deadline: now + 3600,
        },
    )
    .unwrap();
    let register = op.register_node(&d, sol, sig).await.unwrap().gas_used;
    admin.mint(&d, op.address(), tokens(1_000)).await.unwrap();
    let approve = op
        .approve(&d, d.stake_vault, tokens(1_000))
        .await
        .unwrap()
        .gas_used;
    let stake_first = op
        .stake(&d, &key.node_id(), tokens(600))
        .await
        .unwrap()
        .gas_used;
    let stake_more = op
        .stake(&d, &key.node_id(), tokens(100))
        .await
        .unwrap()
        .gas_used;

    let mut table = String::from(
        "| leaves | proof length | post epoch | claim (common) | claim (worst) | tree build |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let (post_1k, c1k) = measure(&admin, &settler, &claimer, &d, 1, 1 << 10, &mut table).await;
    let (post_1m, c1m) = measure(&admin, &settler, &claimer, &d, 2, 1 << 20, &mut table).await;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# B3IQ contracts gas report (hardhat node, solc 0.8.28, via-IR, optimizer 20000 runs)\n"
    );
    let _ = writeln!(
        report,
        "All numbers are transaction gasUsed, including the 21,000 base cost.\n"
    );
    let _ = writeln!(report, "| operation | gas |\n|---|---:|");
    let _ = writeln!(
        report,
        "| NodeRegistry.register (EIP-712 attestation) | {register} |"
    );
    let _ = writeln!(report, "| ERC20.approve (before staking) | {approve} |");
    let _ = writeln!(
        report,
        "| StakeVault.stake (first deposit) | {stake_first} |"
    );
    let _ = writeln!(report, "| StakeVault.stake (top-up) | {stake_more} |");
    for (name, g) in &deploy_gas {
        let _ = writeln!(report, "| deploy {name} | {g} |");
    }
    let _ = writeln!(report, "\n{table}");
    println!("{report}");
    let path = std::env::temp_dir().join("b3iq-protocol-gas-report.md");
    std::fs::write(&path, &report).unwrap();
    println!("written to {}", path.display());

    assert_eq!(c1k.proof_len, 10);
    assert_eq!(c1m.proof_len, 20);
    assert!(
        post_1k <= POST_TARGET && post_1m <= POST_TARGET,
        "post epoch over {POST_TARGET}: {post_1k}, {post_1m}"
    );
    assert!(
        c1k.common <= CLAIM_TARGET,
        "1,024-leaf common claim {} > {CLAIM_TARGET}",
        c1k.common
    );
    assert!(
        c1m.common <= CLAIM_TARGET,
        "1,048,576-leaf common claim {} > {CLAIM_TARGET}",
        c1m.common
    );
    assert!(c1k.worst > c1k.common && c1m.worst > c1m.common);
}
