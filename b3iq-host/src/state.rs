//! The shared state of a running node: home, config, state.db, identity, runtime, metrics.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use b3iq_core::digest::Sha256Digest;
use b3iq_core::identity::{NodeId, NodeKey};
use b3iq_core::mode::OperatingMode;
use b3iq_runtime::runtime::{ModelInfo, Runtime};

use crate::db::Db;
use crate::error::{HostError, Result};
use crate::home::{write_atomic, Config, Home};
use crate::metrics::Metrics;

/// A model the node serves.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The id clients use (`/v1/models`).
    pub id: String,
    /// The catalog profile it came from, if any.
    pub profile: Option<String>,
    /// What the runtime reports.
    pub info: ModelInfo,
    /// sha256 of the weights (for receipts).
    pub digest: Sha256Digest,
}

/// Everything a request handler needs. Shared as `Arc<NodeState>`.
pub struct NodeState {
    /// The home directory.
    pub home: Home,
    /// Settings (read at start).
    pub config: Config,
    /// state.db.
    pub db: Db,
    /// The node's signing key.
    pub key: NodeKey,
    /// Its id.
    pub node_id: NodeId,
    /// The inference runtime, if one was started.
    pub runtime: Option<Arc<dyn Runtime>>,
    /// Models being served.
    pub served: RwLock<Vec<ServedModel>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Process start.
    pub started: Instant,
    /// The bound address (set once listening).
    pub listen: OnceLock<SocketAddr>,
    /// Cached hardware scan (JSON shape of docs/api.md).
    pub hardware: OnceLock<serde_json::Value>,
    /// Background jobs.
    pub jobs: crate::jobs::Jobs,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState").field("node_id", &self.node_id.to_text()).finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Load the node key from `identity.key`, creating it (mode 0600) on first start.
pub fn load_or_create_identity(home: &Home) -> Result<NodeKey> {
    let path = home.identity_path();
    match std::fs::read(&path) {
        Ok(bytes) => NodeKey::from_key_file(&bytes).map_err(|e| {
            HostError::Config(format!("identity.key is not a valid node key ({e}); restore it from a backup"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate(&mut rand::rngs::OsRng);
            write_atomic(&path, &key.to_key_file(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(HostError::home("read identity.key", e)),
    }
}

impl NodeState {
    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        unix_now()
    }

    /// Whether a `Host` header is allowed.
    pub fn host_allowed(&self, host: &str) -> bool {
        crate::http::host_matches(host, &self.config.allowed_hosts)
    }

    /// Whether an owner exists.
    pub fn claimed(&self) -> Result<bool> {
        crate::auth::is_claimed(&self.db)
    }

    /// The short human code of the node id.
    pub fn node_code(&self) -> String {
        self.node_id.short_code()
    }

    /// The operating mode (only Local in this build).
    pub fn mode(&self) -> OperatingMode {
        OperatingMode::Local
    }

    /// Models served now.
    pub fn served_models(&self) -> Vec<ServedModel> {
        self.served.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Find a served model by id.
    pub fn served_model(&self, id: &str) -> Option<ServedModel> {
        self.served.read().unwrap_or_else(|p| p.into_inner()).iter().find(|m| m.id == id).cloned()
    }

    /// The runtime, or 503 when none is running.
    pub fn runtime(&self) -> Result<&Arc<dyn Runtime>> {
        self.runtime.as_ref().ok_or(HostError::ModelNotLoaded)
    }

    /// The hardware summary (scanned once).
    pub fn hardware(&self) -> serde_json::Value {
        self.hardware.get_or_init(crate::hardware::summary).clone()
    }
}
