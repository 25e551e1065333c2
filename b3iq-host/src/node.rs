//! The embedding API: [`LocalNode::builder`] starts a node (home dir, state.db, runtime, HTTP
//! server) in the current tokio runtime and hands back a handle.
//!
//! ```no_run
//! # async fn demo() -> Result<(), b3iq_host::HostError> {
//! let node = b3iq_host::LocalNode::builder()
//!     .home("/tmp/b3iq-demo")
//!     .listen("127.0.0.1:0")
//!     .model("smollm2-135m-instruct-q4_1")
//!     .start()
//!     .await?;
//! println!("setup: {:?}", node.setup_url());
//! node.claim("owner", "a long password").await?;
//! let (_id, secret) = node.create_key("my-app", &["inference"])?;
//! // point an OpenAI client at http://{node.local_addr()}/v1 with `secret`
//! # let _ = secret;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use b3iq_runtime::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::context::runtime::{served_by, start_runtime, ModelChoice};
use crate::context::{unix_now, Context, NodeState};
use crate::error::{HostError, Result};
use crate::inference::receipts::{self, StoredReceipt};
use crate::owner::{self, Via};

/// Builder for a [`LocalNode`].
#[derive(Default)]
pub struct LocalNodeBuilder {
    home: Option<PathBuf>,
    listen: Option<String>,
    model: Option<String>,
    no_model: bool,
    runtime: Option<Arc<dyn Runtime>>,
    progress_bar: bool,
    tls: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    backend: Option<String>,
}

impl std::fmt::Debug for LocalNodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNodeBuilder")
            .field("home", &self.home)
            .field("listen", &self.listen)
            .field("model", &self.model)
            .finish()
    }
}

impl LocalNodeBuilder {
    /// Home directory (default: `B3IQ_HOME`, else `~/.b3iq`).
    pub fn home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// Listen address (default: `config.json` `listen`, `127.0.0.1:7420`). Port 0 picks a free one.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Model profile id or GGUF path (default: `config.json` `model`, else the default profile,
    /// installed into the model store if missing).
    pub fn model(mut self, profile_or_path: impl Into<String>) -> Self {
        self.model = Some(profile_or_path.into());
        self
    }

    /// The inference backend, overriding config.json's `backend`: `auto`, `llama_cpp` or `wgpu`.
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backend = Some(name.into());
        self
    }

    /// Start without loading any model (inference routes answer 503 `model_not_loaded`).
    pub fn no_model(mut self) -> Self {
        self.no_model = true;
        self
    }

    /// Serve with an already built runtime (its loaded models are served).
    pub fn runtime(mut self, rt: Arc<dyn Runtime>) -> Self {
        self.runtime = Some(rt);
        self
    }

    /// TLS for this start, overriding config.json's `tls`: `off`, `self-signed` or `provided`
    /// (then with [`LocalNodeBuilder::tls_files`]). See `context::tls`.
    pub fn tls(mut self, mode: impl Into<String>) -> Self {
        self.tls = Some(mode.into());
        self
    }

    /// PEM certificate chain and key for `tls("provided")`, overriding config.json's
    /// `tls_cert` and `tls_key`.
    pub fn tls_files(mut self, cert: impl Into<String>, key: impl Into<String>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// Show a progress bar on stderr while a model profile is fetched.
    pub fn progress_bar(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }

    /// Create or open the home, load the model, bind and serve.
    ///
    /// # Errors
    /// `Config` for a bad listen address or a LAN bind before the node has an owner; the
    /// errors of [`Context::open`]; the runtime's when the model cannot be installed or loaded;
    /// `Home` when the address cannot be bound.
    pub async fn start(self) -> Result<LocalNode> {
        let mut ctx = Context::open(self.home.clone())?;
        if let Some(t) = &self.tls {
            ctx.config.tls = t.clone();
        }
        if let Some(b) = &self.backend {
            ctx.config.backend = b.clone();
        }
        if self.tls_cert.is_some() {
            ctx.config.tls_cert = self.tls_cert.clone();
            ctx.config.tls_key = self.tls_key.clone();
            // A certificate given without a mode means "serve it".
            if self.tls.is_none() {
                ctx.config.tls = "provided".into();
            }
        }
        ctx.config.validate()?;
        let listen = self
            .listen
            .clone()
            .unwrap_or_else(|| ctx.config.listen.clone());
        let addr: SocketAddr = listen.parse().map_err(|_| {
            HostError::Config(format!(
                "listen address {listen:?} is not IP:PORT (e.g. 127.0.0.1:7420)"
            ))
        })?;
        let claimed = ctx.claimed()?;
        if !addr.ip().is_loopback() && !claimed {
            return Err(HostError::Config(format!(
                "refusing to listen on {addr} before the node has an owner; start on 127.0.0.1, claim it, then restart with --listen {addr}"
            )));
        }
        if claimed {
            // A node claimed before trust roots were persisted gets its owner root now.
            owner::ensure_owner_trust_root(&ctx)?;
        }
        // Jobs a previous process left queued or running end as failed ("interrupted"); partial
        // downloads of an interrupted install are removed.
        let interrupted = crate::jobs::reconcile_at_start(&ctx)?;
        if !interrupted.is_empty() {
            tracing::warn!(
                jobs = interrupted.len(),
                "jobs left unfinished by the previous run were marked failed (interrupted)"
            );
        }
        let (setup_token, fresh_token) = match owner::setup_token_at_start(&ctx)? {
            Some((t, fresh)) => (Some(t), fresh),
            None => (None, false),
        };

        // Runtime and model.
        let (runtime, served) = if let Some(rt) = self.runtime.clone() {
            let served = served_by(&rt).await?;
            (Some(rt), served)
        } else if self.no_model {
            (None, Vec::new())
        } else {
            let choice = ModelChoice::parse_in(&ctx.home, self.model.as_deref().or(ctx.config.model.as_deref()))?;
            let mut config = ctx.config.clone();
            // Verifiable work by default once enrolled (`config.json` `fingerprints`).
            if config.fingerprints.is_none() {
                config.fingerprints = Some(crate::managed::enrollment(&ctx.db)?.is_some());
            }
            let (rt, m) = start_runtime(&ctx.home, &config, choice, self.progress_bar).await?;
            (Some(rt), vec![m])
        };

        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            HostError::Config(format!(
                "cannot listen on {addr}: {e} (another b3iqd or another program holds it: \
                 `b3iqd status` shows a running node; or pass --listen 127.0.0.1:PORT)"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| HostError::home("local_addr", e))?;
        // The address the node was told to listen on is one of its names: an IP literal in `Host`
        // cannot be rebound by DNS, and clients use the URL `serve` prints.
        if !local.ip().is_unspecified() && !local.ip().is_loopback() {
            let name = match local.ip() {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            };
            if !ctx
                .config
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
            {
                ctx.config.allowed_hosts.push(name);
            }
        }
        let tls = crate::context::tls::load(&ctx.home, &ctx.config, Some(local))?;
        if tls.is_none() && !local.ip().is_loopback() {
            tracing::warn!(listen = %local, "serving the LAN without TLS: passwords, session cookies and API keys cross the network in clear text; set \"tls\": \"self-signed\" in config.json or pass --tls self-signed");
        }

        let state = Arc::new(NodeState::new(ctx, runtime, served)?);
        let _ = state.listen.set(local);
        let tls_meta = tls
            .as_ref()
            .and_then(|t| serde_json::to_string(&t.info).ok())
            .unwrap_or_default();
        state.db.meta_set(crate::store::META_TLS_BOUND, &tls_meta)?;
        if let Some(t) = &tls {
            let _ = state.tls.set(t.info.clone());
            tracing::info!(mode = t.info.mode, fingerprint_sha256 = %t.info.fingerprint_sha256, cert = %t.info.cert_path.display(), "serving over TLS");
        }
        // `b3iqd status` and the offline support bundle report the address actually bound.
        state
            .db
            .meta_set(crate::store::META_LISTEN_BOUND, &local.to_string())?;
        state.db.audit(
            unix_now(),
            "system",
            "node.start",
            &state.node_id.to_text(),
            "ok",
            &format!("listen={local}"),
        );

        let app = crate::http::router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let limits = crate::http::serve::ServeLimits::from_config(&state.config);
        let server = tokio::spawn(crate::http::serve::serve(
            listener,
            app,
            limits,
            tls.map(|t| t.server_config),
            rx,
        ));
        let (managed_stop, managed_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::managed::run_heartbeats(
            state.clone(),
            managed_rx.clone(),
        ));
        tokio::spawn(crate::managed::remote_jobs::run(
            state.clone(),
            managed_rx.clone(),
        ));
        tokio::spawn(crate::http::tunnel::run(state.clone(), managed_rx));
        let scheme = crate::http::Scheme::of(&state).as_str();
        let setup_url =
            setup_token.map(|t| format!("{scheme}://{}/setup/#token={t}", display_addr(local)));
        tracing::info!(node_id = %state.node_id.to_text(), listen = %local, claimed, "b3iq node serving");
        Ok(LocalNode {
            state,
            local,
            setup_url,
            fresh_token,
            shutdown: Some(tx),
            server: Some(server),
            managed_stop,
        })
    }
}

fn display_addr(a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        format!("127.0.0.1:{}", a.port())
    } else {
        a.to_string()
    }
}

/// A running node. Dropping it without [`LocalNode::shutdown`] stops the server abruptly.
pub struct LocalNode {
    state: Arc<NodeState>,
    local: SocketAddr,
    setup_url: Option<String>,
    fresh_token: bool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Stops the managed-mode heartbeat task (it runs whether or not the node is enrolled, and
    /// picks up `b3iqd enroll` / `unenroll` without a restart).
    managed_stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("local_addr", &self.local)
            .finish_non_exhaustive()
    }
}

impl LocalNode {
    /// A builder.
    pub fn builder() -> LocalNodeBuilder {
        LocalNodeBuilder::default()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The base URL (`http://127.0.0.1:PORT`, `https://` when serving over TLS).
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            crate::http::Scheme::of(&self.state).as_str(),
            display_addr(self.local)
        )
    }

    /// What the server serves over TLS (mode, certificate fingerprint and file), `None` for plain
    /// HTTP.
    pub fn tls(&self) -> Option<&crate::context::tls::TlsInfo> {
        self.state.tls.get()
    }

    /// The one-time setup URL while the node is unclaimed (contains the setup token: a secret).
    pub fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    /// Whether the setup token was issued by this start (print it) or reused.
    pub fn setup_token_is_new(&self) -> bool {
        self.fresh_token
    }

    /// The node id (`b3n_...`).
    pub fn node_id(&self) -> String {
        self.state.node_id.to_text()
    }

    /// The short human code.
    pub fn node_code(&self) -> String {
        self.state.node_code()
    }

    /// The shared state (for advanced embedding and tests).
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// The setup token file's path (`$B3IQ_HOME/setup-token`, mode 0600) while unclaimed.
    pub fn setup_token_path(&self) -> PathBuf {
        self.state.home.setup_token_path()
    }

    /// Claim the node programmatically with the pending setup token.
    ///
    /// # Errors
    /// As [`owner::claim_with_pending_token`].
    pub async fn claim(&self, username: &str, password: &str) -> Result<()> {
        let st = self.state.clone();
        let (u, p) = (username.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            owner::claim_with_pending_token(&st, &u, &p, Via::Embedding)
        })
        .await
        .map_err(|e| HostError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Create a local API key; returns `(id, secret)`. The secret is not stored.
    ///
    /// # Errors
    /// As [`owner::create_key`].
    pub fn create_key(&self, name: &str, scopes: &[&str]) -> Result<(String, String)> {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (info, secret) = owner::create_key(&self.state, name, &scopes, None, Via::Embedding)?;
        Ok((info.id, secret))
    }

    /// All receipts, oldest first, with their verification status.
    ///
    /// # Errors
    /// `Db`.
    pub fn receipts(&self) -> Result<Vec<StoredReceipt>> {
        receipts::all(&self.state)
    }

    /// Stop accepting connections, finish in-flight requests, and wait for the server.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        self.stopped().await;
    }

    async fn stopped(&self) {
        let _ = self.managed_stop.send(true);
        // Receipts of requests cut short are written before the node reports itself stopped.
        let left = self
            .state
            .drain_background(std::time::Duration::from_secs(10))
            .await;
        if left > 0 {
            tracing::error!(
                tasks = left,
                "background work (cancelled-request receipts) did not finish within 10 s"
            );
        }
        let _ = self.state.db.meta_set(crate::store::META_LISTEN_BOUND, "");
        let _ = self.state.db.meta_set(crate::store::META_TLS_BOUND, "");
        self.state.refusals.flush(&self.state.db, unix_now());
        self.state
            .db
            .audit(unix_now(), "system", "node.stop", "", "ok", "");
    }

    /// Serve until the future completes (e.g. ctrl-c), then shut down gracefully.
    pub async fn serve_until(mut self, signal: impl std::future::Future<Output = ()>) {
        let server = self.server.take();
        let tx = self.shutdown.take();
        if let Some(mut h) = server {
            tokio::select! {
                _ = signal => {
                    tracing::info!("shutting down");
                    if let Some(tx) = tx { let _ = tx.send(()); }
                    let _ = h.await;
                }
                _ = &mut h => {}
            }
        }
        self.stopped().await;
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        let _ = self.managed_stop.send(true);
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}
