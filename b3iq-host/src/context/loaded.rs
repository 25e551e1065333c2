//! Several models served at once, Ollama-style: an installed model that a request names is
//! loaded on demand, the models loaded together stay within a count and a memory budget, and
//! the least recently used idle model is unloaded to make room.
//!
//! - **Ids.** An installed model is served under its catalog profile id, or under its file
//!   name's stem, lower-cased (`b3iqd model import ./Qwen2.5-0.5B-Q8_0.gguf` gives
//!   `qwen2.5-0.5b-q8_0`), the id `b3iqd serve --model PATH` uses for the same file.
//! - **Budget.** `config.json` `max_loaded_models` (3 by default: Ollama's
//!   `OLLAMA_MAX_LOADED_MODELS` on a CPU) and `model_memory_mb` (0 by default: half of the
//!   machine's RAM). A model's share is [`resident_estimate`]: its weights (the GGUF's tensor
//!   bytes) plus its KV cache (f16 K and V for every layer and cell).
//! - **Eviction.** Loading a model that does not fit unloads idle models (no request in
//!   flight), least recently used first. Models in use are never unloaded: when they alone
//!   fill the budget the load is refused with 503 `model_memory_budget`, naming them.
//! - **In use.** Every request holds a [`ModelUse`] for its model from admission to its last
//!   byte; `POST /api/models/unload` of a model in use answers 409 `model_busy`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use b3iq_runtime::gguf::GgufInfo;
use b3iq_runtime::runtime::LoadModelSpec;
use b3iq_runtime::store::{InstalledModel, ModelStore};

use super::runtime::{model_store, ServedModel};
use super::{Config, NodeState};
use crate::error::{HostError, Result};

/// A model that can be loaded: from the store, or one the node served since it started (a
/// `--model PATH` file outside the store stays loadable after it gave way).
#[derive(Debug, Clone, PartialEq)]
pub struct Loadable {
    /// The GGUF file.
    pub path: std::path::PathBuf,
    /// Its sha256 (lower-case hex; empty: not checked on load).
    pub sha256: String,
    /// The catalog profile, if any.
    pub profile: Option<String>,
}

/// Use counters of loaded models (by served id), and the models served since start.
#[derive(Debug, Default)]
pub struct ModelUses {
    uses: Mutex<HashMap<String, Arc<UseCounter>>>,
    known: Mutex<Vec<(String, Loadable)>>,
    /// One load or unload at a time (each may unload others first).
    pub(super) changing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct UseCounter {
    in_flight: AtomicU32,
    last_used_ms: AtomicU64,
}

/// A request's hold on its model: the model is not unloaded while it lives. Dropping it ends
/// the use and stamps the model as used now.
#[derive(Debug)]
pub struct ModelUse {
    counter: Arc<UseCounter>,
}

impl Drop for ModelUse {
    fn drop(&mut self) {
        self.counter.last_used_ms.store(super::unix_now_ms(), Ordering::Relaxed);
        self.counter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ModelUses {
    fn counter(&self, id: &str) -> Arc<UseCounter> {
        let mut m = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    /// Starts a use of model `id`.
    pub fn begin(&self, id: &str) -> ModelUse {
        let counter = self.counter(id);
        counter.in_flight.fetch_add(1, Ordering::AcqRel);
        counter.last_used_ms.store(super::unix_now_ms(), Ordering::Relaxed);
        ModelUse { counter }
    }

    /// Remembers a served model as loadable again under its id.
    pub fn remember(&self, m: &ServedModel) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if !k.iter().any(|(id, _)| *id == m.id) && !m.info.path.as_os_str().is_empty() {
            k.push((
                m.id.clone(),
                Loadable { path: m.info.path.clone(), sha256: m.info.sha256.clone(), profile: m.profile.clone() },
            ));
        }
    }

    fn known(&self) -> Vec<(String, Loadable)> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests in flight on `id`.
    pub fn in_flight(&self, id: &str) -> u32 {
        self.counter(id).in_flight.load(Ordering::Acquire)
    }

    /// When `id` was last used (unix ms; 0: never since start).
    pub fn last_used_ms(&self, id: &str) -> u64 {
        self.counter(id).last_used_ms.load(Ordering::Relaxed)
    }
}

/// The id an installed model is served under: its profile id, else its file name's stem,
/// lower-cased.
pub fn served_id(m: &InstalledModel) -> String {
    m.profile.clone().unwrap_or_else(|| {
        std::path::Path::new(&m.file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| m.sha256[..12].to_string())
    })
}

/// The installed model served under `id` ([`served_id`]), if any.
///
/// # Errors
/// `Runtime` when the model store cannot be read.
pub fn installed_by_id(store: &ModelStore, id: &str) -> Result<Option<InstalledModel>> {
    Ok(store.list()?.into_iter().find(|m| served_id(m) == id))
}

/// Memory a loaded model holds, in bytes: the tensor bytes of its GGUF plus an f16 KV cache of
/// `kv_cells` cells, `2 × n_layer × kv_cells × n_embd_k_gqa × 2` bytes with `n_embd_k_gqa =
/// n_embd × n_head_kv / n_head` (llama.cpp's `llama_kv_cache` layout; compute buffers are left
/// out, a few MiB on a CPU). A header without the attention shape counts the weights only.
pub fn resident_estimate(info: &GgufInfo, kv_cells: u64) -> u64 {
    let key = |k: &str| {
        info.metadata
            .get(&format!("{}.{k}", info.architecture))
            .and_then(|v| v.as_u64())
    };
    let kv = match (info.block_count, info.embedding_length, key("attention.head_count")) {
        (Some(layers), Some(embd), Some(heads)) if heads > 0 => {
            let kv_heads = key("attention.head_count_kv").unwrap_or(heads);
            let per_cell = embd.saturating_mul(kv_heads) / heads;
            2u64.saturating_mul(layers)
                .saturating_mul(kv_cells)
                .saturating_mul(per_cell)
                .saturating_mul(2)
        }
        _ => 0,
    };
    info.tensor_bytes.saturating_add(kv)
}

/// KV cells a model gets with `config`: `kv_cells`, else `parallel × context_tokens`.
pub fn kv_cells(config: &Config) -> u64 {
    config.kv_cells.map(u64::from).unwrap_or_else(|| {
        u64::from(config.parallel.clamp(1, 64)) * u64::from(config.context_tokens.max(64))
    })
}

impl NodeState {
    /// The memory budget for loaded models in bytes: `model_memory_mb`, or half of the RAM.
    pub fn model_memory_budget(&self) -> u64 {
        match self.config.model_memory_mb {
            0 => self.hardware().ram_total_bytes / 2,
            mb => mb.saturating_mul(1 << 20),
        }
    }

    /// The model `id` names when it is not loaded: an installed one (see [`served_id`]), else
    /// one served since start.
    ///
    /// # Errors
    /// `Runtime` when the model store cannot be read.
    pub fn loadable(&self, id: &str) -> Result<Option<Loadable>> {
        let store = model_store(&self.home)?;
        if let Some(m) = installed_by_id(&store, id)? {
            return Ok(Some(Loadable { path: m.path, sha256: m.sha256, profile: m.profile }));
        }
        Ok(self.model_uses.known().into_iter().find(|(k, _)| k == id).map(|(_, l)| l))
    }

    /// The ids a local request may name: the served models, then the installed ones not
    /// loaded (when a runtime runs, which would load them).
    ///
    /// # Errors
    /// `Runtime` when the model store cannot be read.
    pub fn available_models(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.served_models().into_iter().map(|m| m.id).collect();
        if self.runtime.is_some() {
            let stored = model_store(&self.home)?.list()?;
            let more = self.model_uses.known().into_iter().map(|(id, _)| id);
            for id in stored.iter().map(served_id).chain(more) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// The served model `id`, loading it first when it is installed but not loaded (unloading
    /// least recently used idle models to make room). `None`: no such model is served or
    /// installed (or no runtime runs).
    ///
    /// # Errors
    /// As [`NodeState::load_model`].
    pub async fn model_on_demand(&self, id: &str) -> Result<Option<ServedModel>> {
        if let Some(m) = self.served_model(id) {
            return Ok(Some(m));
        }
        if self.runtime.is_none() || self.loadable(id)?.is_none() {
            return Ok(None);
        }
        self.load_model(id).await.map(Some)
    }

    /// Loads the installed model `id` (a no-op when it is served): first unloads idle models,
    /// least recently used first, until it fits `max_loaded_models` and the memory budget.
    ///
    /// # Errors
    /// `ModelNotFound` when no installed model has that id; `ModelNotLoaded` without a
    /// runtime; `ModelMemoryBudget` (503) when the models in use leave no room; `Runtime` when
    /// the runtime cannot load it (its sha256 is checked on load).
    pub async fn load_model(&self, id: &str) -> Result<ServedModel> {
        self.load_model_reporting(id).await.map(|(m, _)| m)
    }

    /// As [`NodeState::load_model`], and also returns the ids of the idle models it unloaded to
    /// make room (least recently used first; empty when it fit or was already served).
    ///
    /// # Errors
    /// As [`NodeState::load_model`]; models unloaded before a later failure stay unloaded.
    pub async fn load_model_reporting(&self, id: &str) -> Result<(ServedModel, Vec<String>)> {
        let _one = self.model_uses.changing.lock().await;
        if let Some(m) = self.served_model(id) {
            return Ok((m, Vec::new()));
        }
        let mut gave_way = Vec::new();
        let rt = self.runtime()?.clone();
        let installed = self
            .loadable(id)?
            .ok_or_else(|| HostError::ModelNotFound(id.to_string()))?;
        let path = installed.path.clone();
        let header = tokio::task::spawn_blocking(move || GgufInfo::read_path(&path))
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?
            .map_err(|e| HostError::InvalidParameter(format!("model {id:?}: not a valid GGUF file: {e}")))?;
        let cells = kv_cells(&self.config);
        let need = resident_estimate(&header, cells);
        let budget = self.model_memory_budget();
        if need > budget {
            return Err(HostError::ModelMemoryBudget(format!(
                "model {id:?} needs about {} MiB, more than the whole budget of {} MiB (model_memory_mb in config.json)",
                need >> 20,
                budget >> 20
            )));
        }
        let max = self.config.max_loaded_models.max(1) as usize;
        loop {
            let served = self.served_models();
            let used: u64 = served.iter().map(|m| self.resident_of(m, cells)).sum();
            if served.len() < max && used.saturating_add(need) <= budget {
                break;
            }
            let idle = served
                .iter()
                .filter(|m| self.model_uses.in_flight(&m.id) == 0)
                .min_by_key(|m| self.model_uses.last_used_ms(&m.id));
            let Some(victim) = idle.cloned() else {
                let busy: Vec<String> = served.iter().map(|m| m.id.clone()).collect();
                return Err(HostError::ModelMemoryBudget(format!(
                    "model {id:?} needs about {} MiB; the models in use ({}) hold {} of the {} MiB budget (model_memory_mb) or all {max} places (max_loaded_models); retry when their requests finish",
                    need >> 20,
                    busy.join(", "),
                    used >> 20,
                    budget >> 20
                )));
            };
            tracing::info!(model = %victim.id, loading = %id, "unloading the least recently used idle model to make room");
            self.unload_now(&victim.id).await?;
            gave_way.push(victim.id);
        }
        let spec = LoadModelSpec {
            expected_sha256: Some(installed.sha256.clone()).filter(|s| !s.is_empty()),
            ..LoadModelSpec::from_path(installed.path.clone()).with_id(id)
        };
        let t0 = std::time::Instant::now();
        let info = rt.load_model(spec).await?;
        let m = ServedModel::new(info, installed.profile.clone())?;
        self.model_uses.remember(&m);
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(m.clone());
        tracing::info!(model = %id, estimate_mib = need >> 20, ms = t0.elapsed().as_millis() as u64, "model loaded");
        Ok((m, gave_way))
    }

    /// Unloads the served model `id`.
    ///
    /// # Errors
    /// `ModelNotFound` when it is not loaded; `ModelBusy` (409) while requests use it;
    /// `Runtime` when the runtime refuses.
    pub async fn unload_model(&self, id: &str) -> Result<()> {
        let _one = self.model_uses.changing.lock().await;
        if self.served_model(id).is_none() {
            return Err(HostError::NotFound(format!(
                "loaded model {id:?} (`b3iqd model ps` or GET /api/models lists the loaded ones)"
            )));
        }
        match self.model_uses.in_flight(id) {
            0 => self.unload_now(id).await,
            n => Err(HostError::ModelBusy(format!(
                "model {id:?} is serving {n} request(s); unload it when they finish"
            ))),
        }
    }

    async fn unload_now(&self, id: &str) -> Result<()> {
        self.runtime()?.unload_model(id).await?;
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|m| m.id != id);
        tracing::info!(model = %id, "model unloaded");
        Ok(())
    }

    /// The [`resident_estimate`] of a served model (its weights' size when the header cannot
    /// be read).
    fn resident_of(&self, m: &ServedModel, cells: u64) -> u64 {
        GgufInfo::read_path(&m.info.path)
            .map(|h| resident_estimate(&h, cells))
            .unwrap_or(m.info.size_bytes)
    }
}
