//! Mirrors `b3iq-runtime/src/runtime.rs`: load a GGUF with the llama.cpp backend and generate,
//! streaming. `TokenStream` is a handle: `close()` (or garbage collection) cancels the work.
//! index.js makes it an async iterator.

use std::sync::Arc;

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{self as rt_api, GenerationEvent, GenerationStream, LoadModelSpec, Runtime as _};
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::convert::{from_js, to_js};
use crate::error::{raise, to_async, Result};

/// An in-process llama.cpp runtime.
#[napi]
pub struct Runtime {
    inner: Arc<LlamaRuntime>,
}

/// A runtime (`threads` defaults to the machine's cores, at most 16).
#[napi]
pub async fn create_runtime(threads: Option<u32>) -> napi::Result<Runtime> {
    let mut config = LlamaConfig::default();
    if let Some(threads) = threads {
        config.threads = threads;
    }
    let inner = LlamaRuntime::new(config).map_err(raise).map_err(to_async)?;
    Ok(Runtime { inner: Arc::new(inner) })
}

/// Options of `Runtime.loadModel`.
#[napi(object)]
pub struct LoadModelOptions {
    /// The id to serve it under (default: the file stem).
    pub model_id: Option<String>,
    /// If set, the file's sha256 must match.
    pub expected_sha256: Option<String>,
    /// Context window per sequence.
    pub context_length: Option<u32>,
}

#[napi]
impl Runtime {
    /// Loads a GGUF; resolves to its description (`id`, `sha256`, ...).
    #[napi]
    pub async fn load_model(&self, path: String, options: Option<LoadModelOptions>) -> napi::Result<serde_json::Value> {
        self.load(path, options).await.map_err(to_async)
    }

    async fn load(&self, path: String, options: Option<LoadModelOptions>) -> Result<serde_json::Value> {
        let mut spec = LoadModelSpec::from_path(path);
        if let Some(o) = options {
            if let Some(id) = o.model_id {
                spec = spec.with_id(id);
            }
            spec.expected_sha256 = o.expected_sha256;
            spec.context_length = o.context_length;
        }
        to_js(&self.inner.load_model(spec).await.map_err(raise)?)
    }

    /// The loaded models.
    #[napi]
    pub async fn models(&self) -> napi::Result<serde_json::Value> {
        let models = self.inner.list_models().await.map_err(raise).map_err(to_async)?;
        to_js(&models).map_err(to_async)
    }

    /// Starts a generation from the runtime's JSON request (index.js builds it from options).
    #[napi]
    pub async fn generate(&self, request: serde_json::Value) -> napi::Result<TokenStream> {
        let request: rt_api::GenerateRequest = from_js("generate request", request).map_err(to_async)?;
        let stream = self.inner.generate(request).await.map_err(raise).map_err(to_async)?;
        Ok(TokenStream { stream: Arc::new(Mutex::new(Some(stream))), done: Arc::new(Mutex::new(None)) })
    }
}

/// A running generation. `next()` resolves to the next piece of text, or `null` at the end.
#[napi]
pub struct TokenStream {
    stream: Arc<Mutex<Option<GenerationStream>>>,
    done: Arc<Mutex<Option<GenerationEvent>>>,
}

#[napi]
impl TokenStream {
    /// The next piece of text, or `null` when the stream ended or was closed.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<String>> {
        let mut guard = self.stream.lock().await;
        let Some(stream) = guard.as_mut() else { return Ok(None) };
        let event = stream.next_event().await;
        match event {
            Some(Ok(GenerationEvent::Delta { text, .. })) => Ok(Some(text)),
            Some(Ok(done)) => {
                *guard = None;
                *self.done.lock().await = Some(done);
                Ok(None)
            }
            Some(Err(err)) => {
                *guard = None;
                Err(to_async(raise(err)))
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }

    /// Cancels the generation (if running) and releases it. Idempotent.
    #[napi]
    pub fn close(&self) {
        if let Ok(mut guard) = self.stream.try_lock() {
            if let Some(s) = guard.take() {
                s.cancel();
            }
            return;
        }
        // A `next()` is in flight: cancel through a task once it yields the lock.
        let stream = Arc::clone(&self.stream);
        napi::bindgen_prelude::spawn(async move {
            if let Some(s) = stream.lock().await.take() {
                s.cancel();
            }
        });
    }

    /// `{ event: "done", finish_reason, usage, timings }` after a normal end, else `null`.
    #[napi]
    pub async fn result(&self) -> napi::Result<Option<serde_json::Value>> {
        match self.done.lock().await.as_ref() {
            Some(done) => Ok(Some(to_js(done).map_err(to_async)?)),
            None => Ok(None),
        }
    }
}
