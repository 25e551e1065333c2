//! The ground layer: what every use case of the node stands on. The home directory and its
//! settings ([`home`]), `state.db` ([`crate::store`]), the node's keys and secrets ([`key`]), the
//! persisted operating mode ([`mode`]), and the inference runtime with the models it serves
//! ([`runtime`]).
//!
//! Nothing here imports the layers above it (inference, owner operations, jobs, HTTP): a
//! structure test (`b3iq-host/tests/layers.rs`) fails if it does.
//!
//! [`Context`] is an opened home without a server (what the CLI needs); [`NodeState`] is a
//! running node: a context plus the runtime, metrics and live settings, shared as
//! `Arc<NodeState>`. `NodeState` dereferences to its `Context`.

pub mod home;
pub mod key;
pub mod loaded;
pub mod mode;
pub mod runtime;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use b3iq_core::identity::{NodeId, NodeKey};
use b3iq_core::mode::OperatingMode;
use b3iq_core::receipt::NodeSalt;
use b3iq_runtime::hardware::HardwareReport;
use b3iq_runtime::runtime::Runtime;

pub use self::home::{Config, Home};
pub use self::runtime::ServedModel;
use crate::error::{HostError, Result};
use crate::metrics::Metrics;
use crate::store::Db;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An opened home: settings, `state.db` and the node's secrets. Works with or without a running
/// server (SQLite in WAL mode allows both).
pub struct Context {
    /// The home directory.
    pub home: Home,
    /// Settings (read when opened).
    pub config: Config,
    /// state.db.
    pub db: Db,
    /// The node's signing key.
    pub key: NodeKey,
    /// Its id.
    pub node_id: NodeId,
    /// The secret receipt commitment salts are derived from (`receipt-salt.key`).
    pub node_salt: NodeSalt,
    /// The bound on password hashes computed at once (sign-in, claim, password reset).
    pub hash_slots: crate::creds::HashSlots,
    /// Aggregated audit of refusals of unauthenticated callers.
    pub refusals: crate::store::audit::RefusalAudit,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node_id", &self.node_id.to_text())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Open (creating if needed) the home at `dir`, else the one named by `B3IQ_HOME` / `~/.b3iq`:
    /// directory tree, `config.json`, `state.db` (migrated), `identity.key`, `receipt-salt.key`.
    ///
    /// # Errors
    /// `Config` for an unreadable config or key file, `Home` for I/O, `Db` for SQLite.
    pub fn open(dir: Option<PathBuf>) -> Result<Context> {
        let home = match dir {
            Some(d) => Home::at(d),
            None => Home::from_env()?,
        };
        home.ensure()?;
        let config = home.load_or_init_config()?;
        let db = Db::open(&home.db_path())?;
        let key = key::load_or_create_identity(&home)?;
        let node_salt = key::load_or_create_node_salt(&home)?;
        let node_id = key.node_id();
        Ok(Context {
            home,
            config,
            db,
            key,
            node_id,
            node_salt,
            hash_slots: crate::creds::HashSlots::default(),
            refusals: Default::default(),
        })
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        unix_now()
    }

    /// Whether an owner exists.
    pub fn claimed(&self) -> Result<bool> {
        crate::store::auth::is_claimed(&self.db)
    }

    /// The short human code of the node id.
    pub fn node_code(&self) -> String {
        self.node_id.short_code()
    }

    /// The persisted operating mode (`local` until changed).
    pub fn stored_mode(&self) -> Result<OperatingMode> {
        mode::load(&self.db)
    }

    /// The address a daemon serving this home bound, when one is running: the address its last
    /// start recorded, if something still accepts connections there (checked with a 300 ms
    /// connect, to `127.0.0.1` for a wildcard bind). `None` when no daemon runs.
    ///
    /// # Errors
    /// `Db`.
    pub fn running_listen(&self) -> Result<Option<SocketAddr>> {
        let Some(addr) = self
            .db
            .meta_get(crate::store::META_LISTEN_BOUND)?
            .and_then(|v| v.parse::<SocketAddr>().ok())
        else {
            return Ok(None);
        };
        let probe = if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        Ok(
            std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(300))
                .is_ok()
                .then_some(addr),
        )
    }
}

/// Everything a running node's use cases need. Shared as `Arc<NodeState>`; dereferences to its
/// [`Context`].
pub struct NodeState {
    /// The opened home.
    pub ctx: Context,
    /// The inference runtime, if one was started.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// Models being served.
    pub served: RwLock<Vec<ServedModel>>,
    /// The operating mode (persisted in state.db; cached here).
    pub mode: RwLock<OperatingMode>,
    /// Metrics.
    pub metrics: Metrics,
    /// Process start.
    pub started: Instant,
    /// The bound address (set once listening).
    pub listen: OnceLock<SocketAddr>,
    /// What the server serves over TLS (set once listening with TLS; unset: plain HTTP).
    pub tls: OnceLock<tls::TlsInfo>,
    /// The hardware scan (run once, on first use).
    pub hardware: OnceLock<HardwareReport>,
    /// One job at a time: installs and benchmarks compete for disk and CPU.
    pub job_lock: tokio::sync::Mutex<()>,
    /// Work that must finish before the node stops (the receipt of a cancelled request).
    background: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Network requests admitted and not finished (the network share in use; `network::admit`).
    pub network_in_flight: std::sync::atomic::AtomicU32,
    /// Requests in flight and last use per loaded model ([`loaded`]).
    pub model_uses: loaded::ModelUses,
}

impl std::ops::Deref for NodeState {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("node_id", &self.node_id.to_text())
            .finish_non_exhaustive()
    }
}

impl NodeState {
    /// A node over an opened context, serving `served` on `runtime` (none: inference answers 503).
    ///
    /// # Errors
    /// `Db` or `Config` if the persisted mode cannot be read.
    pub fn new(
        ctx: Context,
        runtime: Option<Arc<dyn Runtime>>,
        served: Vec<ServedModel>,
    ) -> Result<NodeState> {
        let mode = ctx.stored_mode()?;
        let model_uses = loaded::ModelUses::default();
        for m in &served {
            model_uses.remember(m);
        }
        Ok(NodeState {
            ctx,
            runtime,
            served: RwLock::new(served),
            mode: RwLock::new(mode),
            metrics: Metrics::default(),
            started: Instant::now(),
            listen: OnceLock::new(),
            tls: OnceLock::new(),
            hardware: OnceLock::new(),
            job_lock: tokio::sync::Mutex::new(()),
            background: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            network_in_flight: std::sync::atomic::AtomicU32::new(0),
            model_uses,
        })
    }

    /// Run `task` on the current tokio runtime and keep it until [`NodeState::drain_background`]
    /// (the node awaits it before it stops). `false`, with the task not run, outside a runtime.
    pub fn spawn_background(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut set = self.background.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn_on(task, &handle);
        true
    }

    /// Wait up to `limit` for the background tasks; returns how many were still running after it
    /// (they are aborted).
    pub async fn drain_background(&self, limit: std::time::Duration) -> usize {
        let mut set =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        let _ =
            tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
        let left = set.len();
        set.abort_all();
        left
    }

    /// The operating mode now.
    pub fn mode(&self) -> OperatingMode {
        *self.mode.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the persisted mode into the cache (the CLI changes it in state.db while the
    /// daemon runs, e.g. `b3iqd enroll`); returns it.
    ///
    /// # Errors
    /// `Db` or `Config` (the cache is then unchanged).
    pub fn reload_mode(&self) -> Result<OperatingMode> {
        let m = mode::load(&self.db)?;
        *self.mode.write().unwrap_or_else(|p| p.into_inner()) = m;
        Ok(m)
    }

    /// Persist and switch the operating mode.
    ///
    /// # Errors
    /// `Db` if it cannot be persisted (the mode is then unchanged).
    pub fn set_mode(&self, m: OperatingMode) -> Result<()> {
        mode::store(&self.db, m)?;
        *self.mode.write().unwrap_or_else(|p| p.into_inner()) = m;
        Ok(())
    }

    /// Models served now.
    pub fn served_models(&self) -> Vec<ServedModel> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Find a served model by id.
    pub fn served_model(&self, id: &str) -> Option<ServedModel> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// The runtime, or `ModelNotLoaded` (503) when none is running.
    pub fn runtime(&self) -> Result<&Arc<dyn Runtime>> {
        self.runtime.as_ref().ok_or(HostError::ModelNotLoaded)
    }

    /// The hardware scan of this machine (b3iq-runtime's, run once).
    pub fn hardware(&self) -> &HardwareReport {
        self.hardware
            .get_or_init(|| runtime::scan_hardware(&self.home))
    }
}
