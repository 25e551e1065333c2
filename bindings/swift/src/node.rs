//! Mirrors `b3iq-host/src/node.rs`: `LocalNode`, an embedded B3IQ host. Async in Swift.

use std::sync::Arc;

use b3iq_core::ErrorCategory;
use b3iq_host::node as host;
use tokio::sync::Mutex;

use crate::convert::to_json;
use crate::error::{B3iqError, BindingError};
use crate::tokio_rt::run_on_host_thread;

/// A new API key: the secret is shown once.
#[derive(uniffi::Record)]
pub struct CreatedKey {
    /// Key id (for revocation and usage).
    pub id: String,
    /// The `b3iq_local_...` secret.
    pub secret: String,
}

/// A running embedded host. Call `shutdown()` when done.
#[derive(uniffi::Object)]
pub struct LocalNode {
    node: Arc<Mutex<Option<host::LocalNode>>>,
    base_url: String,
    port: u16,
    node_id: String,
    setup_url: Option<String>,
}

fn stopped() -> B3iqError {
    BindingError::new(ErrorCategory::State, "stopped", "this LocalNode was shut down; start a new one").into()
}

/// Starts a host with its home dir at `home`; `model` is a GGUF path or a profile id (none: no
/// model); `listen` defaults to `127.0.0.1:0` (a free loopback port).
#[uniffi::export(async_runtime = "tokio")]
pub async fn start_local_node(
    home: String,
    model: Option<String>,
    listen: Option<String>,
) -> Result<Arc<LocalNode>, B3iqError> {
    let node = run_on_host_thread(move || async move {
        let mut builder =
            host::LocalNode::builder().home(home).listen(listen.unwrap_or_else(|| "127.0.0.1:0".into()));
        builder = match model {
            Some(model) => builder.model(model),
            None => builder.no_model(),
        };
        Ok(builder.start().await?)
    })
    .await?;
    Ok(Arc::new(LocalNode {
        base_url: node.base_url(),
        port: node.local_addr().port(),
        node_id: node.node_id(),
        setup_url: node.setup_url().map(str::to_owned),
        node: Arc::new(Mutex::new(Some(node))),
    }))
}

#[uniffi::export(async_runtime = "tokio")]
impl LocalNode {
    /// `http://127.0.0.1:PORT`; the OpenAI-compatible API is under `/v1`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node id (`b3n_...`).
    pub fn node_id(&self) -> String {
        self.node_id.clone()
    }

    /// The one-time setup URL while unclaimed (it contains a secret token).
    pub fn setup_url(&self) -> Option<String> {
        self.setup_url.clone()
    }

    /// Claims the node with its pending setup token.
    pub async fn claim(&self, username: String, password: String) -> Result<(), B3iqError> {
        let node = Arc::clone(&self.node);
        run_on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            node.claim(&username, &password).await.map_err(B3iqError::from)
        })
        .await
    }

    /// Creates a `b3iq_local_` key with `scopes` (default `["inference"]`).
    pub async fn create_key(&self, name: String, scopes: Option<Vec<String>>) -> Result<CreatedKey, B3iqError> {
        let node = Arc::clone(&self.node);
        run_on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            let scopes = scopes.unwrap_or_else(|| vec!["inference".into()]);
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let (id, secret) = node.create_key(&name, &scopes)?;
            Ok(CreatedKey { id, secret })
        })
        .await
    }

    /// Every signed usage receipt, oldest first, as JSON.
    pub async fn receipts_json(&self) -> Result<String, B3iqError> {
        let node = Arc::clone(&self.node);
        run_on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            to_json(&node.receipts()?)
        })
        .await
    }

    /// Stops the server after in-flight requests finish. Idempotent.
    pub async fn shutdown(&self) -> Result<(), B3iqError> {
        let node = Arc::clone(&self.node);
        run_on_host_thread(move || async move {
            if let Some(node) = node.lock().await.take() {
                node.shutdown().await;
            }
            Ok(())
        })
        .await
    }
}
