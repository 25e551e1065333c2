//! The wgpu fallback backend (feature `wgpu-backend`): LLaMA-architecture GGUF models on any
//! GPU wgpu reaches (Vulkan, Metal, DX12; Mesa's lavapipe on the CPU in CI), with hand-written
//! WGSL kernels.
//!
//! - [`device`]: adapter and device setup; every GPU failure (no adapter, a kernel that does
//!   not compile, out of memory, a lost device) is a [`WgpuError`], never a panic.
//! - [`kernels`]: the kernels (dequantizing matrix-vector and matrix-matrix products for Q4_1,
//!   Q8_0, F16 and F32 weights, RMSNorm, RoPE, KV-cache store, causal grouped-query attention,
//!   SwiGLU, residual add, embedding lookup, output-row gather) and their dispatches.
//! - [`reference`]: CPU references of the kernels (and llama.cpp's reference quantizers).
//!
//! Design notes and the validation contract against llama.cpp: `shared/design/wgpu.md` and
//! the project's docs/runtime.md.

pub mod device;
pub mod kernels;
pub mod reference;

pub use device::{GpuDevice, WgpuError};
pub use kernels::{GpuMatrix, Kernels, WeightType};

#[cfg(test)]
mod tests;
