//! Backends: what turns tokens into logits.
//!
//! - [`llama`]: llama.cpp in process (through `llama-cpp-2`), the engine's [`crate::engine::Backend`]
//!   and [`crate::engine::Decoder`] plus [`llama::LlamaRuntime`], which serves loaded models
//!   through one [`crate::engine::Engine`] each.
//! - [`llama_embeddings`]: the llama.cpp backend's embeddings, on a context and thread of their
//!   own beside each model's engine.
//! - [`upstream`]: any OpenAI-compatible server (vLLM, llama.cpp server, ...), a whole
//!   [`crate::Runtime`] of its own (the upstream schedules its own batches).
//!
//! A new in-process backend (wgpu) implements [`crate::engine::Backend`] and
//! [`crate::engine::Decoder`]; the scheduler is not touched.

pub mod llama;
pub mod llama_embeddings;
pub mod upstream;
#[cfg(feature = "wgpu-backend")]
pub mod wgpu;
