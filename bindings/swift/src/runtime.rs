//! Mirrors `b3iq-runtime/src/runtime.rs`: load a GGUF with llama.cpp and generate, streaming.
//! `TokenStream` is a handle: `close()` or releasing it cancels the generation.

use std::sync::Arc;

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{self as rt_api, GenerationEvent, GenerationStream, LoadModelSpec, Runtime as _};
use tokio::sync::Mutex;

use crate::convert::{from_json, to_json};
use crate::error::B3iqError;
use crate::tokio_rt::run;

/// An in-process llama.cpp runtime.
#[derive(uniffi::Object)]
pub struct Runtime {
    inner: Arc<LlamaRuntime>,
}

/// A runtime (`threads`: default the machine's cores, at most 16).
#[uniffi::export(async_runtime = "tokio")]
pub async fn create_runtime(threads: Option<u32>) -> Result<Arc<Runtime>, B3iqError> {
    let mut config = LlamaConfig::default();
    if let Some(threads) = threads {
        config.threads = threads;
    }
    let inner = run(async move { LlamaRuntime::new(config) }).await??;
    Ok(Arc::new(Runtime { inner: Arc::new(inner) }))
}

#[uniffi::export(async_runtime = "tokio")]
impl Runtime {
    /// Loads a GGUF; returns its description as JSON.
    pub async fn load_model(&self, path: String, model_id: Option<String>) -> Result<String, B3iqError> {
        let inner = Arc::clone(&self.inner);
        let mut spec = LoadModelSpec::from_path(path);
        if let Some(id) = model_id {
            spec = spec.with_id(id);
        }
        let info = run(async move { inner.load_model(spec).await }).await??;
        to_json(&info)
    }

    /// The loaded models as JSON.
    pub async fn models_json(&self) -> Result<String, B3iqError> {
        let inner = Arc::clone(&self.inner);
        to_json(&run(async move { inner.list_models().await }).await??)
    }

    /// Starts a generation from the runtime's JSON request
    /// (`{"model", "prompt": {"kind": "chat"|"text", "value"}, "sampling", "max_tokens", "stop"}`).
    pub async fn generate(&self, request_json: String) -> Result<Arc<TokenStream>, B3iqError> {
        let request: rt_api::GenerateRequest = from_json("generate request", &request_json)?;
        let inner = Arc::clone(&self.inner);
        let stream = run(async move { inner.generate(request).await }).await??;
        Ok(Arc::new(TokenStream { stream: Arc::new(Mutex::new(Some(stream))), done: Arc::new(Mutex::new(None)) }))
    }
}

/// A running generation: `next()` returns the next piece of text, or nil at the end.
#[derive(uniffi::Object)]
pub struct TokenStream {
    stream: Arc<Mutex<Option<GenerationStream>>>,
    done: Arc<Mutex<Option<GenerationEvent>>>,
}

#[uniffi::export(async_runtime = "tokio")]
impl TokenStream {
    /// The next piece of text, or nil when the stream ended or was closed.
    pub async fn next(&self) -> Result<Option<String>, B3iqError> {
        let (stream, done) = (Arc::clone(&self.stream), Arc::clone(&self.done));
        run(async move {
            let mut guard = stream.lock().await;
            let Some(s) = guard.as_mut() else { return Ok(None) };
            match s.next_event().await {
                Some(Ok(GenerationEvent::Delta { text, .. })) => Ok(Some(text)),
                Some(Ok(end)) => {
                    *guard = None;
                    *done.lock().await = Some(end);
                    Ok(None)
                }
                Some(Err(err)) => {
                    *guard = None;
                    Err(B3iqError::from(err))
                }
                None => {
                    *guard = None;
                    Ok(None)
                }
            }
        })
        .await?
    }

    /// Cancels the generation (if running) and releases it. Idempotent.
    pub async fn close(&self) -> Result<(), B3iqError> {
        let stream = Arc::clone(&self.stream);
        run(async move {
            if let Some(s) = stream.lock().await.take() {
                s.cancel();
            }
        })
        .await
    }

    /// `{"event": "done", "finish_reason", "usage", "timings"}` after a normal end, else nil.
    pub async fn result_json(&self) -> Result<Option<String>, B3iqError> {
        let done = self.done.lock().await.clone();
        done.map(|d| to_json(&d)).transpose()
    }
}
