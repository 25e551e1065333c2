//! The wgpu backend behind the engine: [`WgpuBackend`] (the engine's [`Backend`]: tokenizer,
//! chat template and sampler chains from llama.cpp in vocab-only mode, so requests give the same
//! tokens in and the same receipt fields out as on llama.cpp; [`WgpuDecoder`]s for compute) and
//! [`WgpuRuntime`] (a [`Runtime`] serving GGUF models through one [`Engine`] each).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::device::GpuDevice;
use super::model::{WgpuDecoder, WgpuModel};
use crate::backend::llama::{load_vocab_only, LlamaCppBackend, RequestSampler};
use crate::digest::{parse_sha256, sha256_file};
use crate::engine::{Backend, DecoderShape, Engine, EngineConfig, EngineCounters, TokenId};
use crate::error::RuntimeError;
use crate::runtime::*;

/// A model on the GPU with llama.cpp's text side (vocab-only).
pub struct WgpuBackend {
    text: LlamaCppBackend,
    model: WgpuModel,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("model", &self.model)
            .finish()
    }
}

impl WgpuBackend {
    /// Loads a GGUF: the vocabulary through llama.cpp (vocab-only), the weights onto `dev`.
    ///
    /// # Errors
    /// As [`WgpuModel::load`] and [`load_vocab_only`].
    pub fn load(dev: &GpuDevice, path: &Path) -> Result<Self, RuntimeError> {
        let model = WgpuModel::load(dev, path)?;
        let text = LlamaCppBackend::new(Arc::new(load_vocab_only(path)?), 1, false);
        Ok(Self { text, model })
    }

    /// The model on the GPU.
    pub fn model(&self) -> &WgpuModel {
        &self.model
    }
}

impl Backend for WgpuBackend {
    type Sampler = RequestSampler;
    type Decoder<'a> = WgpuDecoder<'a>;

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
        self.text.chat_prompt(messages)
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        self.text.tokenize(text, parse_special)
    }

    fn token_piece(&self, token: TokenId, out: &mut Vec<u8>) {
        self.text.token_piece(token, out)
    }

    fn is_end_of_generation(&self, token: TokenId) -> bool {
        self.text.is_end_of_generation(token)
    }

    fn new_sampler(
        &self,
        sampling: &SamplingParams,
        format: &ResponseFormat,
    ) -> Result<RequestSampler, RuntimeError> {
        self.text.new_sampler(sampling, format)
    }

    fn new_decoder(&self, shape: DecoderShape) -> Result<WgpuDecoder<'_>, RuntimeError> {
        WgpuDecoder::new(&self.model, shape).map_err(|e| RuntimeError::Backend(e.to_string()))
    }
}

/// Configuration of a [`WgpuRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuConfig {
    /// Most sequences decoded together (parallel slots per model).
    pub max_sequences: u32,
    /// Most requests waiting for a slot before `QueueFull`.
    pub queue_capacity: u32,
    /// Default context window per sequence (capped at the model's training context).
    pub context_per_sequence: u32,
    /// Most tokens in one decode step.
    pub batch_tokens: u32,
}

impl Default for WgpuConfig {
    fn default() -> Self {
        Self {
            max_sequences: 8,
            queue_capacity: 64,
            context_per_sequence: 2048,
            batch_tokens: 256,
        }
    }
}

struct Loaded {
    info: ModelInfo,
    engine: Engine<WgpuBackend>,
}

/// The wgpu backend as a [`Runtime`]: one GPU device, one engine per loaded model. A lost
/// device makes [`Runtime::health`] `Down`. Cheap to clone.
#[derive(Clone)]
pub struct WgpuRuntime {
    config: WgpuConfig,
    dev: GpuDevice,
    models: Arc<Mutex<HashMap<ModelId, Arc<Loaded>>>>,
    counters: Arc<EngineCounters>,
}

impl std::fmt::Debug for WgpuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuRuntime")
            .field("config", &self.config)
            .field("device", &self.dev)
            .finish()
    }
}

impl WgpuRuntime {
    /// Opens the GPU ([`GpuDevice::open`]) for a runtime with no model loaded.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for sizes out of range, [`RuntimeError::Backend`] when no GPU
    /// device can be opened (the [`super::WgpuError`] message says why).
    pub fn new(config: WgpuConfig) -> Result<Self, RuntimeError> {
        if config.max_sequences == 0
            || config.max_sequences > 64
            || config.batch_tokens < config.max_sequences.max(8)
            || config.context_per_sequence < 64
        {
            return Err(RuntimeError::Config(
                "max_sequences must be in 1..=64, batch_tokens >= max(8, max_sequences) and context_per_sequence >= 64".into(),
            ));
        }
        let dev = GpuDevice::open().map_err(|e| RuntimeError::Backend(e.to_string()))?;
        Ok(Self {
            config,
            dev,
            models: Arc::default(),
            counters: Arc::default(),
        })
    }

    /// The GPU device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    fn get(&self, id: &str) -> Result<Arc<Loaded>, RuntimeError> {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::ModelNotFound {
                model: id.to_string(),
            })
    }

    /// Loads a model without an async runtime (blocks the calling thread).
    ///
    /// # Errors
    /// As [`Runtime::load_model`].
    pub fn load_model_blocking(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let path = spec.path.clone();
        let id = spec
            .id
            .clone()
            .or_else(|| {
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
            return Err(RuntimeError::InvalidRequest(
                "model id must be 1..=128 printable characters".into(),
            ));
        }
        if self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Err(RuntimeError::InvalidRequest(format!(
                "model `{id}` is already loaded; unload it first"
            )));
        }
        let (sha256, size) = sha256_file(&path)?;
        if let Some(exp) = &spec.expected_sha256 {
            let exp = parse_sha256(exp)?;
            if exp != sha256 {
                return Err(RuntimeError::DigestMismatch {
                    what: path.display().to_string(),
                    expected: exp,
                    actual: sha256,
                });
            }
        }
        let backend = WgpuBackend::load(&self.dev, &path)?;
        let shape = *backend.model().shape();
        let gguf = crate::gguf::GgufInfo::read_path(&path)?;
        let ctx = spec
            .context_length
            .unwrap_or(self.config.context_per_sequence)
            .min(shape.ctx_train.max(64))
            .max(64);
        let info = ModelInfo {
            id: id.clone(),
            backend: BackendKind::Wgpu,
            sha256,
            size_bytes: size,
            context_length: ctx,
            train_context_length: shape.ctx_train,
            architecture: gguf.architecture.clone(),
            parameters: gguf.parameter_count,
            quantization: gguf.quantization.clone(),
            has_chat_template: gguf.has_chat_template,
            path: path.clone(),
            embedding_length: gguf.embedding_length.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        };
        let config = EngineConfig {
            shape: DecoderShape {
                max_sequences: self.config.max_sequences,
                context_per_sequence: ctx,
                batch_tokens: self.config.batch_tokens,
            },
            queue_capacity: self.config.queue_capacity,
            // The wgpu decoder does not cut sequences (`Decoder::truncate_sequence`).
            prompt_cache: false,
        };
        let engine = Engine::start(
            &format!("b3iq-wgpu-{id}"),
            Arc::new(backend),
            config,
            self.counters.clone(),
        )?;
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Arc::new(Loaded {
                    info: info.clone(),
                    engine,
                }),
            );
        Ok(info)
    }
}

#[async_trait]
impl Runtime for WgpuRuntime {
    fn backend_info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Wgpu,
            name: "wgpu (WGSL kernels)".to_string(),
            threads: 0,
            system_info: self.dev.describe(),
        }
    }

    async fn load_model(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || rt.load_model_blocking(spec))
            .await
            .map_err(|e| RuntimeError::Backend(format!("model loading panicked: {e}")))?
    }

    async fn unload_model(&self, id: &str) -> Result<(), RuntimeError> {
        let loaded = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .ok_or_else(|| RuntimeError::ModelNotFound {
                model: id.to_string(),
            })?;
        loaded.engine.stop();
        let _ = tokio::task::spawn_blocking(move || drop(loaded)).await;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let mut v: Vec<ModelInfo> = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|m| m.info.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        request.validate()?;
        if let Err(e) = self.dev.check() {
            return Err(RuntimeError::Backend(e.to_string()));
        }
        self.get(&request.model)?.engine.submit(&request)
    }

    async fn count_tokens(&self, model: &str, prompt: &Prompt) -> Result<u32, RuntimeError> {
        self.get(model)?.engine.count_tokens(prompt)
    }

    async fn health(&self) -> Health {
        let n = self.models.lock().unwrap_or_else(|p| p.into_inner()).len() as u32;
        let m = self.metrics();
        let (status, message) = if self.dev.is_lost() {
            (
                HealthStatus::Down,
                self.dev
                    .check()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            )
        } else if self.counters.engine_dead() {
            (
                HealthStatus::Down,
                "an engine thread stopped after a GPU error; reload the model".to_string(),
            )
        } else if m.queue_depth >= m.queue_capacity && m.queue_capacity > 0 {
            (
                HealthStatus::Degraded,
                format!("request queue is full ({} waiting)", m.queue_depth),
            )
        } else {
            (HealthStatus::Ok, String::new())
        };
        Health {
            status,
            backend: BackendKind::Wgpu,
            models_loaded: n,
            message,
        }
    }

    fn metrics(&self) -> RuntimeMetrics {
        let n = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            .max(1) as u32;
        self.counters.metrics(
            self.config.queue_capacity * n,
            self.config.max_sequences * n,
        )
    }
}
