//! The chain client against a node that is down or slow: clear errors after bounded retries,
//! and success when the node comes up while the client is still retrying.

use std::time::{Duration, Instant};

use crate::common::*;
use alloy::signers::local::PrivateKeySigner;
use b3iq_chain::{ChainClient, ChainError, RetryPolicy};

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        receipt_timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn down_node_gives_a_clear_error_after_the_retries() {
    let port = free_port(); // nothing listens there
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = ChainClient::connect(&url, PrivateKeySigner::random(), quick(4))
        .await
        .unwrap_err();
    match &err {
        ChainError::ChainUnreachable {
            url: u, attempts, ..
        } => {
            assert_eq!(u, &url);
            assert_eq!(*attempts, 4);
        }
        other => panic!("expected ChainUnreachable, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("unreachable after 4 attempts") && msg.contains("hardhat node"),
        "{msg}"
    );
    // Backoff happened (50 + 100 + 200 ms) but stayed bounded.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(20), "{waited:?}");
}

#[tokio::test]
async fn bad_urls_are_refused_up_front() {
    for url in ["not a url", "ftp://127.0.0.1:1", "ws//x"] {
        let err = ChainClient::connect(url, PrivateKeySigner::random(), quick(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChainError::InvalidRpcUrl { .. }),
            "{url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn slow_node_that_comes_up_late_is_reached_by_retrying() {
    // Hold a port, start the client retrying against it, then start hardhat there.
    let dir = contracts_dir();
    let bin = dir.join("node_modules/.bin/hardhat");
    assert!(
        bin.exists(),
        "contracts/node_modules is missing: run `contracts/ci.sh` (or `npm ci` in contracts/)"
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let policy = RetryPolicy {
        attempts: 400,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        receipt_timeout: Duration::from_secs(30),
    };
    let client = tokio::spawn({
        let url = url.clone();
        async move { ChainClient::connect(&url, PrivateKeySigner::random(), policy).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !client.is_finished(),
        "client must still be retrying: nothing listens yet"
    );
    let mut child = std::process::Command::new(&bin)
        .args([
            "node",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);
    let c = client
        .await
        .unwrap()
        .expect("client reaches the node once it is up");
    assert_eq!(c.chain_id().await.unwrap(), 31337);
}
