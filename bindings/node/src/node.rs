//! Mirrors `b3iq-host/src/node.rs`: `LocalNode`, an embedded B3IQ host on napi's tokio runtime.
//! Every method that waits returns a Promise.

use std::future::Future;
use std::sync::Arc;

use b3iq_core::ErrorCategory;
use b3iq_host::node as host;
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::convert::to_js;
use crate::error::{raise, to_async, BindingError, Result};

/// Options of `LocalNode.start`.
#[napi(object)]
pub struct LocalNodeOptions {
    /// Home directory (identity key, config, state.db); created on first start.
    pub home: String,
    /// A GGUF path or a model profile id; omitted: no model.
    pub model: Option<String>,
    /// Listen address; default `127.0.0.1:0` (a free loopback port).
    pub listen: Option<String>,
}

/// A running embedded host. Call `shutdown()` (or use `await using` with
/// `Symbol.asyncDispose`, see index.js) when done.
#[napi]
pub struct LocalNode {
    node: Arc<Mutex<Option<host::LocalNode>>>,
    base_url: String,
    port: u32,
    node_id: String,
    setup_url: Option<String>,
}

/// Runs a host future to completion on a blocking-pool thread of napi's runtime. The host's
/// futures are not all `Send`, so they are built and driven on that one thread; only their
/// inputs and outputs cross threads. Every async export goes through here, so this is where
/// errors become Promise rejections (`to_async`).
async fn on_host_thread<F, Fut, T>(make: F) -> napi::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
        .await
        .map_err(|e| {
            raise(BindingError::new(ErrorCategory::Internal, "internal", format!("host task failed: {e}")))
        })
        .and_then(|r| r)
        .map_err(to_async)
}

/// Starts a host (see `LocalNodeOptions`).
#[napi]
pub async fn start_local_node(options: LocalNodeOptions) -> napi::Result<LocalNode> {
    let node = on_host_thread(move || async move {
        let mut builder = host::LocalNode::builder()
            .home(options.home)
            .listen(options.listen.unwrap_or_else(|| "127.0.0.1:0".into()));
        builder = match options.model {
            Some(model) => builder.model(model),
            None => builder.no_model(),
        };
        builder.start().await.map_err(raise)
    })
    .await?;
    Ok(LocalNode {
        base_url: node.base_url(),
        port: u32::from(node.local_addr().port()),
        node_id: node.node_id(),
        setup_url: node.setup_url().map(str::to_owned),
        node: Arc::new(Mutex::new(Some(node))),
    })
}

fn stopped() -> napi::Error<String> {
    raise(BindingError::new(ErrorCategory::State, "stopped", "this LocalNode was shut down; start a new one"))
}

#[napi]
impl LocalNode {
    /// `http://127.0.0.1:PORT`; the OpenAI-compatible API is under `/v1`.
    #[napi(getter)]
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bound port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The node id (`b3n_...`).
    #[napi(getter)]
    pub fn node_id(&self) -> String {
        self.node_id.clone()
    }

    /// The one-time setup URL while unclaimed (it contains a secret token).
    #[napi(getter)]
    pub fn setup_url(&self) -> Option<String> {
        self.setup_url.clone()
    }

    /// Claims the node with its pending setup token (creates the owner account).
    #[napi]
    pub async fn claim(&self, username: String, password: String) -> napi::Result<()> {
        let node = Arc::clone(&self.node);
        on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            node.claim(&username, &password).await.map_err(raise)
        })
        .await
    }

    /// Creates a `b3iq_local_` key; resolves to `{ id, secret }` (the secret is shown once).
    #[napi]
    pub async fn create_key(&self, name: String, scopes: Option<Vec<String>>) -> napi::Result<serde_json::Value> {
        let node = Arc::clone(&self.node);
        on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            let scopes = scopes.unwrap_or_else(|| vec!["inference".into()]);
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let (id, secret) = node.create_key(&name, &scopes).map_err(raise)?;
            Ok(serde_json::json!({ "id": id, "secret": secret }))
        })
        .await
    }

    /// Every signed usage receipt, oldest first.
    #[napi]
    pub async fn receipts(&self) -> napi::Result<serde_json::Value> {
        let node = Arc::clone(&self.node);
        on_host_thread(move || async move {
            let guard = node.lock().await;
            let node = guard.as_ref().ok_or_else(stopped)?;
            to_js(&node.receipts().map_err(raise)?)
        })
        .await
    }

    /// Stops the server after in-flight requests finish. Idempotent.
    #[napi]
    pub async fn shutdown(&self) -> napi::Result<()> {
        let node = Arc::clone(&self.node);
        on_host_thread(move || async move {
            let node = node.lock().await.take();
            if let Some(node) = node {
                node.shutdown().await;
            }
            Ok(())
        })
        .await
    }

    /// True until `shutdown()`.
    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.node.try_lock().map(|g| g.is_some()).unwrap_or(true)
    }
}
