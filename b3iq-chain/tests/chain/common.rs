//! Shared test helpers: a real hardhat@2 node on a free loopback port (killed on drop, also on
//! panic), funded deterministic wallets, and signed receipts.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use b3iq_chain::{ChainClient, RetryPolicy};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use b3iq_core::{NodeKey, OperatingMode};

/// A running `hardhat node`; killed when dropped.
pub struct HardhatNode {
    child: Child,
    pub url: String,
    log: PathBuf,
}

/// The workspace's `contracts/` (found upward from the crate, so other crates' tests can
/// include this file with `#[path]`).
pub fn contracts_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|p| p.join("contracts"))
        .find(|p| p.join("hardhat.config.js").exists())
        .expect("contracts/ above the crate")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl HardhatNode {
    /// Starts `contracts/node_modules/.bin/hardhat node` on a free loopback port and waits until it
    /// answers `eth_chainId`.
    pub async fn start() -> Self {
        let dir = contracts_dir();
        let bin = dir.join("node_modules").join(".bin").join("hardhat");
        assert!(
            bin.exists(),
            "{} is missing: contracts/node_modules is not installed. Run `contracts/ci.sh` \
             (or `npm ci` in contracts/) before `cargo test -p b3iq-chain`.",
            bin.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("b3iq-hardhat-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args([
                "node",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(&dir)
            .env("HARDHAT_DISABLE_TELEMETRY_PROMPT", "true")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let mut node = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let quick = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!(
                    "hardhat node exited early ({status}); log:\n{}",
                    node.log_text()
                );
            }
            if ChainClient::connect(&node.url, PrivateKeySigner::random(), quick)
                .await
                .is_ok()
            {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "hardhat node did not answer within 120 s; log:\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for HardhatNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A deterministic wallet for `name`.
pub fn wallet(name: &str) -> PrivateKeySigner {
    let seed = keccak256(format!("b3iq protocol test wallet {name}").as_bytes());
    PrivateKeySigner::from_bytes(&seed).unwrap()
}

/// Connects `signer` and gives it 1,000 ETH for gas (`hardhat_setBalance`).
pub async fn funded(url: &str, signer: PrivateKeySigner) -> ChainClient {
    let c = ChainClient::connect(url, signer, RetryPolicy::default())
        .await
        .unwrap();
    let wei = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18u64));
    let _: serde_json::Value = c
        .provider()
        .raw_request(
            "hardhat_setBalance".into(),
            (c.address(), format!("0x{wei:x}")),
        )
        .await
        .unwrap();
    c
}

/// 10^18.
pub fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

pub fn address_of(s: &PrivateKeySigner) -> Address {
    s.address()
}

/// A signed network-mode receipt.
pub fn receipt(
    key: &NodeKey,
    request: u8,
    model: &str,
    started_at_ms: u64,
    price: u64,
) -> SignedReceipt {
    let salt = CommitmentSalt::from_bytes([request; 32]);
    Receipt {
        node_id: key.node_id(),
        request_id: RequestId([request; 16]),
        model_id: model.to_string(),
        artifact_digest: Sha256Digest::of(model.as_bytes()),
        backend: "llama.cpp".into(),
        mode: OperatingMode::Network,
        prompt_tokens: 10 + u32::from(request),
        completion_tokens: 20,
        started_at_ms,
        ttft_ms: 40,
        duration_ms: 500,
        price_micro_credits: price,
        prompt_commitment: Commitment::prompt(&salt, b"prompt"),
        output_commitment: Commitment::output(&salt, b"output"),
        commitment_basis: None,
        attestation_digest: None,
    }
    .sign(key)
    .unwrap()
}

/// Asserts that `r` is a revert whose decoded error starts with `name`.
#[track_caller]
pub fn assert_reverted<T: std::fmt::Debug>(r: b3iq_chain::Result<T>, name: &str) {
    match r {
        Err(b3iq_chain::ChainError::Reverted { error, .. }) if error.starts_with(name) => {}
        other => panic!("expected a revert with {name}, got {other:?}"),
    }
}
