//! The WGSL kernels (shaders/*.wgsl), their pipelines, and recorded dispatches.
//!
//! Every kernel reads its fixed sizes from a small uniform buffer made once, and the sizes of
//! the current step from the *step buffer* (u32 words): `[n_tokens, n_outputs, 0, 0,
//! token[B], pos[B], seq[B], out_row[B]]` for a decoder of `B` batch tokens. So bind groups
//! are made once per decoder and a step only writes the step buffer and records dispatches.
//!
//! Weight matrices are `rows x k` (GGUF `ne = [k, rows]`), row-major, `k` a multiple of 32.
//! Their element access is one WGSL prelude per [`WeightType`] (`unit`, `unit_offsets`,
//! `elem`), pasted into the kernels that read weights at `//!WEIGHTS`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::device::{GpuDevice, WgpuError};

/// Workgroup size of every kernel (the x dimension).
pub const WORKGROUP: u32 = 64;
/// Most workgroups in one dispatch dimension (WebGPU's default limit).
const MAX_GROUPS: u32 = 65_535;
/// Tokens per thread in the batched matrix product (`matmul.wgsl`).
const MATMUL_TILE: u32 = 8;

/// How weights are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// f32, 32 words per 32-element block.
    F32,
    /// f16 (IEEE half), 16 words per block.
    F16,
    /// GGUF Q4_1 blocks as stored: 20 bytes = 5 words (f16 d, f16 m, 16 bytes of nibbles).
    Q4_1,
    /// GGUF Q8_0 blocks (34 bytes: f16 d, 32 int8) repacked to 36 bytes = 9 words, two zero
    /// bytes after `d` so the quants start on a word.
    Q8_0,
}

impl WeightType {
    /// Whether llama.cpp's CPU backend quantizes the activations (to Q8_0/Q8_1) before a
    /// product with weights of this type (see [`Kernels::quantize_q8`]).
    pub fn quantizes_activations(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q8_0)
    }

    /// The type of a GGUF tensor type name (`f32`, `f16`, `q4_1`, `q8_0`), if supported.
    pub fn from_ggml(name: &str) -> Option<Self> {
        Some(match name {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "q4_1" => Self::Q4_1,
            "q8_0" => Self::Q8_0,
            _ => return None,
        })
    }

    /// Bytes of one 32-element block in the GGUF file.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            Self::F32 => 128,
            Self::F16 => 64,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Self::F32 => include_str!("shaders/weights_f32.wgsl"),
            Self::F16 => include_str!("shaders/weights_f16.wgsl"),
            Self::Q4_1 => include_str!("shaders/weights_q4_1.wgsl"),
            Self::Q8_0 => include_str!("shaders/weights_q8_0.wgsl"),
        }
    }

    /// Converts a tensor's GGUF bytes (`blocks` blocks) to the GPU layout: as stored, except
    /// Q8_0, whose 34-byte blocks get two zero bytes after the scale.
    ///
    /// # Errors
    /// [`WgpuError::Unsupported`] when `bytes` is not `blocks` whole blocks.
    pub fn pack(self, bytes: &[u8], blocks: usize) -> Result<Vec<u8>, WgpuError> {
        let bb = self.gguf_block_bytes();
        if blocks.checked_mul(bb) != Some(bytes.len()) {
            return Err(WgpuError::Unsupported(format!(
                "{self:?} tensor data is {} bytes, expected {blocks} blocks of {bb}",
                bytes.len()
            )));
        }
        Ok(match self {
            Self::Q8_0 => {
                let mut out = Vec::with_capacity(blocks * 36);
                for b in bytes.chunks_exact(34) {
                    out.extend_from_slice(&b[..2]);
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&b[2..]);
                }
                out
            }
            _ => bytes.to_vec(),
        })
    }
}

/// A weight matrix on the GPU: `rows x k` values of type `ty`.
#[derive(Debug, Clone)]
pub struct GpuMatrix {
    /// Packed blocks (see [`WeightType::pack`]).
    pub buf: wgpu::Buffer,
    /// Storage type.
    pub ty: WeightType,
    /// Output rows.
    pub rows: u32,
    /// Values per row (a multiple of 32).
    pub k: u32,
}

impl GpuMatrix {
    /// Uploads a matrix from its GGUF bytes (`rows * k / 32` blocks).
    ///
    /// # Errors
    /// [`WgpuError::Unsupported`] for `k` not a multiple of 32 or a size mismatch,
    /// [`WgpuError::OutOfMemory`] when it does not fit.
    pub fn upload(
        dev: &GpuDevice,
        name: &str,
        ty: WeightType,
        rows: u32,
        k: u32,
        gguf_bytes: &[u8],
    ) -> Result<Self, WgpuError> {
        if k == 0 || k % 32 != 0 || rows == 0 {
            return Err(WgpuError::Unsupported(format!(
                "tensor `{name}` is {rows} x {k}; rows must be a multiple of 32 values"
            )));
        }
        let packed = ty.pack(gguf_bytes, rows as usize * (k / 32) as usize)?;
        Ok(Self {
            buf: dev.storage_init(name, &packed)?,
            ty,
            rows,
            k,
        })
    }
}

/// Which step-buffer count a dispatch scales with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The batch's tokens (`step[0]`).
    Tokens,
    /// The batch's output rows (`step[1]`).
    Outputs,
}

/// How many workgroups a dispatch has in y.
#[derive(Debug, Clone, Copy)]
enum GridY {
    /// One per counted item.
    Each(Count),
    /// One per tile of [`MATMUL_TILE`] counted items.
    Tiles(Count),
}

/// One recorded kernel launch: pipeline, bound buffers, and its grid (x and z fixed, y from
/// the step's counts).
#[derive(Debug, Clone)]
pub struct Dispatch {
    label: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    x: u32,
    z: u32,
    y: GridY,
}

/// A recorded operation: one dispatch, or a linear layer that picks the matrix-vector kernel
/// for one item and the tiled matrix-matrix kernel for more.
#[derive(Debug, Clone)]
pub enum Op {
    /// One kernel.
    One(Dispatch),
    /// `y = W x` for each counted item.
    Linear {
        /// One thread per (4 rows, item).
        matvec: Dispatch,
        /// One thread per (4 rows, tile of 8 items).
        matmul: Dispatch,
        /// What is counted.
        count: Count,
    },
}

fn groups(n: u32) -> u32 {
    n.div_ceil(WORKGROUP)
}

impl Op {
    /// Records the op into a compute pass for a step of `n_tokens` tokens and `n_outputs`
    /// output rows.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32, n_outputs: u32) {
        let count = |c: Count| match c {
            Count::Tokens => n_tokens,
            Count::Outputs => n_outputs,
        };
        let d = match self {
            Op::One(d) => d,
            Op::Linear {
                matvec,
                matmul,
                count: c,
            } => {
                if count(*c) <= 1 {
                    matvec
                } else {
                    matmul
                }
            }
        };
        let y = match d.y {
            GridY::Each(c) => count(c),
            GridY::Tiles(c) => count(c).div_ceil(MATMUL_TILE),
        };
        if y == 0 {
            return;
        }
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.insert_debug_marker(d.label);
        pass.dispatch_workgroups(d.x, y, d.z);
    }
}

/// The compiled kernels of one device, compiled on first use and cached.
pub struct Kernels {
    dev: GpuDevice,
    cache: Mutex<HashMap<(&'static str, Option<WeightType>), wgpu::ComputePipeline>>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("dev", &self.dev).finish()
    }
}

fn source(kernel: &str) -> &'static str {
    match kernel {
        "matvec" => include_str!("shaders/matvec.wgsl"),
        "matmul" => include_str!("shaders/matmul.wgsl"),
        "get_rows" => include_str!("shaders/get_rows.wgsl"),
        "rms_norm" => include_str!("shaders/rms_norm.wgsl"),
        "rope" => include_str!("shaders/rope.wgsl"),
        "kv_store" => include_str!("shaders/kv_store.wgsl"),
        "attention" => include_str!("shaders/attention.wgsl"),
        "swiglu" => include_str!("shaders/swiglu.wgsl"),
        "add" => include_str!("shaders/add.wgsl"),
        "gather" => include_str!("shaders/gather.wgsl"),
        "quantize_q8" => include_str!("shaders/quantize_q8.wgsl"),
        _ => "",
    }
}

/// Uniform parameters: u32 words (f32 values as their bits), padded to 16 bytes.
fn param_bytes(words: &[u32]) -> Vec<u8> {
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    v.resize(v.len().div_ceil(16).max(1) * 16, 0);
    v
}

impl Kernels {
    /// Kernels for `dev` (nothing is compiled yet).
    pub fn new(dev: &GpuDevice) -> Self {
        Self {
            dev: dev.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    /// The pipeline of `kernel` (for weight type `ty` where it reads weights), compiled once.
    ///
    /// # Errors
    /// [`WgpuError::ShaderCompile`].
    pub fn pipeline(
        &self,
        kernel: &'static str,
        ty: Option<WeightType>,
    ) -> Result<wgpu::ComputePipeline, WgpuError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&(kernel, ty)) {
            return Ok(p.clone());
        }
        let src = source(kernel);
        let src = match ty {
            Some(t) => src.replace("//!WEIGHTS", t.prelude()),
            None => src.to_string(),
        };
        let name = match ty {
            Some(t) => format!("{kernel}_{t:?}"),
            None => kernel.to_string(),
        };
        let p = self.dev.compute_pipeline(&name, &src)?;
        cache.insert((kernel, ty), p.clone());
        Ok(p)
    }

    fn dispatch(
        &self,
        kernel: &'static str,
        ty: Option<WeightType>,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        x: u32,
        y: GridY,
    ) -> Result<Dispatch, WgpuError> {
        let pipeline = self.pipeline(kernel, ty)?;
        let uniform = self.dev.uniform_init(kernel, &param_bytes(params))?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let dev = &self.dev;
        let bind_group = dev.scoped_bind_group(kernel, &layout, &entries)?;
        let (x, z) = if x > MAX_GROUPS {
            (MAX_GROUPS, x.div_ceil(MAX_GROUPS))
        } else {
            (x, 1)
        };
        Ok(Dispatch {
            label: kernel,
            pipeline,
            bind_group,
            x,
            z,
            y,
        })
    }

    /// `y[i] = W x[i]` for each counted item `i` (x: `count x k`, y: `count x rows`).
    ///
    /// # Errors
    /// [`WgpuError::ShaderCompile`], [`WgpuError::OutOfMemory`].
    pub fn linear(
        &self,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        step: &wgpu::Buffer,
        count: Count,
    ) -> Result<Op, WgpuError> {
        let slot = match count {
            Count::Tokens => 0,
            Count::Outputs => 1,
        };
        let matvec = self.dispatch(
            "matvec",
            Some(w.ty),
            &[w.rows, w.k],
            &[&w.buf, x, y],
            w.rows,
            GridY::Each(count),
        )?;
        let matmul = self.dispatch(
            "matmul",
            Some(w.ty),
            &[w.rows, w.k, slot],
            &[&w.buf, x, y, step],
            groups(w.rows),
            GridY::Tiles(count),
        )?;
        Ok(Op::Linear {
            matvec,
            matmul,
            count,
        })
    }

    /// Embedding lookup: `out[t] = W[token[t]]` (out: `tokens x W.k`).
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn get_rows(
        &self,
        w: &GpuMatrix,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
        batch: u32,
    ) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "get_rows",
            Some(w.ty),
            &[w.k, batch],
            &[&w.buf, out, step],
            groups(w.k),
            GridY::Each(Count::Tokens),
        )?))
    }

    /// RMSNorm of each counted row of `x` (`dim` wide) times `weight`, into `y`.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn rms_norm(
        &self,
        weight: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dim: u32,
        eps: f32,
        count: Count,
    ) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "rms_norm",
            None,
            &[dim, eps.to_bits()],
            &[weight, x, y],
            1,
            GridY::Each(count),
        )?))
    }

    /// RoPE (normal mode) in place on `x` (`tokens x n_head*head_dim`), rotating the first
    /// `n_dims` values of each head by the token's position.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &wgpu::Buffer,
        step: &wgpu::Buffer,
        n_head: u32,
        head_dim: u32,
        n_dims: u32,
        freq_base: f32,
        batch: u32,
    ) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "rope",
            None,
            &[n_head, head_dim, n_dims, batch, freq_base.to_bits()],
            &[x, step],
            groups(n_head * head_dim / 2),
            GridY::Each(Count::Tokens),
        )?))
    }

    /// Stores the tokens' K and V rows (`tokens x kv_dim`) in the caches
    /// (`sequences x ctx x kv_dim`) at their sequence and position.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store(
        &self,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        kc: &wgpu::Buffer,
        vc: &wgpu::Buffer,
        step: &wgpu::Buffer,
        kv_dim: u32,
        ctx: u32,
        batch: u32,
    ) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "kv_store",
            None,
            &[kv_dim, ctx, batch],
            &[k, v, kc, vc, step],
            groups(kv_dim),
            GridY::Each(Count::Tokens),
        )?))
    }

    /// Causal grouped-query attention of each token's query heads over its sequence's cache,
    /// scaled by `1/sqrt(head_dim)`, into `out` (`tokens x n_head*head_dim`).
    ///
    /// # Errors
    /// As [`Kernels::linear`]; [`WgpuError::Unsupported`] for `head_dim > 128` or a head count
    /// that is not a multiple of the KV head count.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &wgpu::Buffer,
        kc: &wgpu::Buffer,
        vc: &wgpu::Buffer,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
        n_head: u32,
        n_kv_head: u32,
        head_dim: u32,
        ctx: u32,
        batch: u32,
    ) -> Result<Op, WgpuError> {
        if head_dim > 128 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(WgpuError::Unsupported(format!(
                "attention with {n_head} heads, {n_kv_head} KV heads of {head_dim} values (needs head_dim <= 128 and heads a multiple of KV heads)"
            )));
        }
        let scale = 1.0 / (head_dim as f32).sqrt();
        Ok(Op::One(self.dispatch(
            "attention",
            None,
            &[n_head, n_kv_head, head_dim, ctx, batch, scale.to_bits()],
            &[q, kc, vc, out, step],
            n_head,
            GridY::Each(Count::Tokens),
        )?))
    }

    /// SwiGLU in place: `gate = silu(gate) * up` over `n` values per token.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn swiglu(&self, gate: &wgpu::Buffer, up: &wgpu::Buffer, n: u32) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "swiglu",
            None,
            &[n],
            &[gate, up],
            groups(n),
            GridY::Each(Count::Tokens),
        )?))
    }

    /// Residual add in place: `x += y` over `n` values per token.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn add(&self, x: &wgpu::Buffer, y: &wgpu::Buffer, n: u32) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "add",
            None,
            &[n],
            &[x, y],
            groups(n),
            GridY::Each(Count::Tokens),
        )?))
    }

    /// Rounds each counted row of `x` (`n` values, a multiple of 32) in place as llama.cpp
    /// quantizes activations to Q8_0/Q8_1 before a product with quantized weights, so the
    /// products here see the same inputs.
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn quantize_q8(&self, x: &wgpu::Buffer, n: u32, count: Count) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "quantize_q8",
            None,
            &[n],
            &[x],
            groups(n / 32),
            GridY::Each(count),
        )?))
    }

    /// Copies the output rows (`step`'s `out_row` list) of `x` (`tokens x dim`) into `out`
    /// (`outputs x dim`).
    ///
    /// # Errors
    /// As [`Kernels::linear`].
    pub fn gather(
        &self,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        step: &wgpu::Buffer,
        dim: u32,
        batch: u32,
    ) -> Result<Op, WgpuError> {
        Ok(Op::One(self.dispatch(
            "gather",
            None,
            &[dim, batch],
            &[x, out, step],
            groups(dim),
            GridY::Each(Count::Outputs),
        )?))
    }
}

/// The step buffer's words for a batch (see the module docs): `tokens`, `pos` and `seq` per
/// token, `out_rows` the rows whose output is kept; `batch` is the decoder's capacity.
pub fn step_words(
    batch: usize,
    tokens: &[u32],
    pos: &[u32],
    seq: &[u32],
    out_rows: &[u32],
) -> Vec<u32> {
    let mut w = vec![0u32; 4 + 4 * batch];
    w[0] = tokens.len() as u32;
    w[1] = out_rows.len() as u32;
    w[4..4 + tokens.len()].copy_from_slice(tokens);
    w[4 + batch..4 + batch + pos.len()].copy_from_slice(pos);
    w[4 + 2 * batch..4 + 2 * batch + seq.len()].copy_from_slice(seq);
    w[4 + 3 * batch..4 + 3 * batch + out_rows.len()].copy_from_slice(out_rows);
    w
}

/// Records `ops` in one compute pass and submits it, waiting for the GPU.
///
/// # Errors
/// [`WgpuError::DeviceLost`] or an error the dispatches raised.
pub fn run_ops(
    dev: &GpuDevice,
    ops: &[Op],
    n_tokens: u32,
    n_outputs: u32,
) -> Result<(), WgpuError> {
    let mut enc = dev.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for op in ops {
            op.record(&mut pass, n_tokens, n_outputs);
        }
    }
    dev.submit_and_wait(enc)
}
