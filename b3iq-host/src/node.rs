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
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use b3iq_core::digest::Sha256Digest;
use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{LoadModelSpec, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth;
use crate::db::Db;
use crate::error::{HostError, Result};
use crate::home::{write_atomic, Home};
use crate::metrics::Metrics;
use crate::models::ModelChoice;
use crate::receipts::{self, StoredReceipt};
use crate::state::{load_or_create_identity, unix_now, NodeState, ServedModel};

/// Builder for a [`LocalNode`].
#[derive(Default)]
pub struct LocalNodeBuilder {
    home: Option<PathBuf>,
    listen: Option<String>,
    model: Option<String>,
    no_model: bool,
    runtime: Option<Arc<dyn Runtime>>,
    progress_bar: bool,
}

impl std::fmt::Debug for LocalNodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNodeBuilder").field("home", &self.home).field("listen", &self.listen).field("model", &self.model).finish()
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

    /// Show a progress bar on stderr while a model profile is fetched.
    pub fn progress_bar(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }

    /// Create or open the home, load the model, bind and serve.
    pub async fn start(self) -> Result<LocalNode> {
        let home = match &self.home {
            Some(h) => Home::at(h.clone()),
            None => Home::from_env()?,
        };
        home.ensure()?;
        let config = home.load_or_init_config()?;
        let db = Db::open(&home.db_path())?;
        let key = load_or_create_identity(&home)?;
        let node_id = key.node_id();

        let listen = self.listen.clone().unwrap_or_else(|| config.listen.clone());
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| HostError::Config(format!("listen address {listen:?} is not IP:PORT (e.g. 127.0.0.1:7420)")))?;
        let claimed = auth::is_claimed(&db)?;
        if !addr.ip().is_loopback() && !claimed {
            return Err(HostError::Config(format!(
                "refusing to listen on {addr} before the node has an owner; start on 127.0.0.1, claim it, then restart with --listen {addr}"
            )));
        }

        // Setup token: reuse a still-valid pending one, else issue a new one.
        let now = unix_now();
        let mut fresh_token = false;
        let setup_token = if claimed {
            None
        } else {
            let existing = std::fs::read_to_string(home.setup_token_path()).ok().map(|s| s.trim().to_string());
            let valid = existing.as_ref().is_some_and(|t| setup_token_valid(&db, t, now));
            if valid {
                existing
            } else {
                let (t, _) = auth::issue_setup_token(&db, now, config.setup_token_ttl_s)?;
                write_atomic(&home.setup_token_path(), format!("{t}\n").as_bytes(), 0o600)?;
                db.audit(now, "system", "setup.token", "", "ok", "setup token issued");
                fresh_token = true;
                Some(t)
            }
        };

        // Runtime and model.
        let (runtime, served) = if let Some(rt) = self.runtime.clone() {
            let mut served = Vec::new();
            for info in rt.list_models().await.map_err(|e| HostError::Runtime(e.to_string()))? {
                served.push(served_model(info, None)?);
            }
            (Some(rt), served)
        } else if self.no_model {
            (None, Vec::new())
        } else {
            let choice = ModelChoice::parse(self.model.as_deref().or(config.model.as_deref()))?;
            let (path, id, profile, expected) = match choice {
                ModelChoice::Path(p) => match crate::models::profile_for_file(&p) {
                    // A known file (same name and size as a catalog profile): serve it under the
                    // profile id, and let the runtime check its sha256.
                    Some(prof) => (p, prof.id.clone(), Some(prof.id.clone()), Some(prof.sha256.clone())),
                    None => {
                        let id = p.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "model".into());
                        (p, id, None, None)
                    }
                },
                ModelChoice::Profile(pid) => {
                    let m = crate::models::ensure_profile(&home, &pid, self.progress_bar).await?;
                    (m.path, pid.clone(), Some(pid), None)
                }
            };
            let mut lc = LlamaConfig::default();
            if config.threads > 0 {
                lc.threads = config.threads;
            }
            lc.max_sequences = config.parallel.clamp(1, 64);
            lc.queue_capacity = config.max_queue;
            lc.context_per_sequence = config.context_tokens.max(64);
            let rt = LlamaRuntime::new(lc).map_err(|e| HostError::Runtime(e.to_string()))?;
            let info = rt
                .load_model(LoadModelSpec { expected_sha256: expected, ..LoadModelSpec::from_path(path).with_id(id) })
                .await
                .map_err(|e| HostError::Runtime(e.to_string()))?;
            let rt: Arc<dyn Runtime> = Arc::new(rt);
            (Some(rt), vec![served_model(info, profile)?])
        };

        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HostError::home(format!("bind {addr} (is another b3iqd running? use --listen)"), e))?;
        let local = listener.local_addr().map_err(|e| HostError::home("local_addr", e))?;

        let state = Arc::new(NodeState {
            home,
            config,
            db,
            key,
            node_id,
            runtime,
            served: RwLock::new(served),
            metrics: Metrics::default(),
            started: Instant::now(),
            listen: OnceLock::new(),
            hardware: OnceLock::new(),
            jobs: Default::default(),
        });
        let _ = state.listen.set(local);
        state.db.audit(now, "system", "node.start", &state.node_id.to_text(), "ok", &format!("listen={local}"));

        let app = crate::http::router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        let setup_url = setup_token.map(|t| format!("http://{}/setup/#token={t}", display_addr(local)));
        tracing::info!(node_id = %state.node_id.to_text(), listen = %local, claimed, "b3iq node serving");
        Ok(LocalNode { state, local, setup_url, fresh_token, shutdown: Some(tx), server: Some(server) })
    }
}

fn display_addr(a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        format!("127.0.0.1:{}", a.port())
    } else {
        a.to_string()
    }
}

fn setup_token_valid(db: &Db, token: &str, now: u64) -> bool {
    use rusqlite::OptionalExtension;
    let h = crate::creds::hash_secret(token);
    db.lock()
        .query_row("SELECT expires_at FROM setup_tokens WHERE token_hash = ?1", [h], |r| r.get::<_, i64>(0))
        .optional()
        .ok()
        .flatten()
        .is_some_and(|e| e as u64 > now)
}

fn served_model(info: b3iq_runtime::runtime::ModelInfo, profile: Option<String>) -> Result<ServedModel> {
    let digest = if info.sha256.is_empty() {
        Sha256Digest([0; 32])
    } else {
        Sha256Digest::parse(&info.sha256).map_err(|e| HostError::Core(e.to_string()))?
    };
    Ok(ServedModel { id: info.id.clone(), profile, info, digest })
}

/// A running node. Dropping it without [`LocalNode::shutdown`] stops the server abruptly.
pub struct LocalNode {
    state: Arc<NodeState>,
    local: SocketAddr,
    setup_url: Option<String>,
    fresh_token: bool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode").field("local_addr", &self.local).finish_non_exhaustive()
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

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", display_addr(self.local))
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

    /// Claim the node programmatically with the pending setup token.
    pub async fn claim(&self, username: &str, password: &str) -> Result<()> {
        let token = std::fs::read_to_string(self.state.home.setup_token_path())
            .map_err(|_| HostError::SetupTokenInvalid)?
            .trim()
            .to_string();
        let st = self.state.clone();
        let (u, p) = (username.to_string(), password.to_string());
        let now = unix_now();
        tokio::task::spawn_blocking(move || auth::claim(&st.db, &token, &u, &p, now, st.config.session_ttl_s))
            .await
            .map_err(|e| HostError::Internal(e.to_string()))??;
        crate::home::remove_durably(&self.state.home.setup_token_path())?;
        crate::jobs::ensure_owner_issuer(&self.state.home)?;
        self.state.db.audit(now, "setup", "node.claim", username, "ok", "claimed through the embedding API");
        Ok(())
    }

    /// Create a local API key; returns `(id, secret)`. The secret is not stored.
    pub fn create_key(&self, name: &str, scopes: &[&str]) -> Result<(String, String)> {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (info, secret) = auth::create_key(&self.state.db, name, &scopes, None, unix_now())?;
        self.state.db.audit(unix_now(), "owner", "key.create", &info.id, "ok", "embedding API");
        Ok((info.id, secret))
    }

    /// All receipts, oldest first, with their verification status.
    pub fn receipts(&self) -> Result<Vec<StoredReceipt>> {
        receipts::all(&self.state.db, &self.state.key.public())
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
        self.state.db.audit(unix_now(), "system", "node.stop", "", "ok", "");
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
        self.state.db.audit(unix_now(), "system", "node.stop", "", "ok", "");
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}
