//! The wgpu fallback backend (feature `wgpu-backend`): LLaMA-architecture GGUF models on any
//! GPU wgpu reaches (Vulkan, Metal, DX12; Mesa's lavapipe on the CPU in CI), with hand-written
//! WGSL kernels.
//!
//! - [`device`]: adapter and device setup; every GPU failure (no adapter, a kernel that does
//!   not compile, out of memory, a lost device) is a [`WgpuError`], never a panic.
//! - [`kernels`]: the kernels (dequantizing matrix-vector and matrix-matrix products for Q4_1,
//!   Q8_0, F16 and F32 weights, RMSNorm, RoPE, KV-cache store, causal grouped-query attention,
//!   SwiGLU, residual add, embedding lookup, output-row gather) and their dispatches.
//! - [`model`]: the LLaMA forward pass over GGUF weights ([`WgpuModel`]) and the engine decoder
//!   ([`WgpuDecoder`]: batched decode of several sequences, each with its KV stream).
//! - [`runtime`]: [`WgpuBackend`] (the engine's backend, with llama.cpp's tokenizer, chat
//!   template and samplers in vocab-only mode) and [`WgpuRuntime`] (a [`crate::Runtime`]).
//! - [`reference`]: CPU references of the kernels (and llama.cpp's reference quantizers).
//!
//! Design notes and the validation contract against llama.cpp: `shared/design/wgpu.md` and
//! the project's docs/runtime.md.

pub mod device;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod runtime;

pub use device::{GpuDevice, WgpuError};
pub use kernels::{GpuMatrix, Kernels, WeightType};
pub use model::{ModelShape, WgpuDecoder, WgpuModel};
pub use runtime::{WgpuBackend, WgpuConfig, WgpuRuntime};

#[cfg(test)]
mod tests;
