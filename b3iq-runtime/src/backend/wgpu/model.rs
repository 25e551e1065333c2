//! The LLaMA forward pass on wgpu: [`WgpuModel`] (weights read from the GGUF with our
//! bounds-checked reader and uploaded as stored) and [`WgpuDecoder`] (KV cache, activations and
//! recorded dispatches for a [`DecoderShape`]; the engine's [`Decoder`]).
//!
//! One decode step, for the batch's tokens (llama.cpp's `llm_build_llama` graph):
//! `x = embd[token]`; per layer `h = rms_norm(x) * attn_norm`, `q, k, v = Wq h, Wk h, Wv h`,
//! RoPE (normal mode) on `q` and `k`, store `k, v` at (sequence, position), causal GQA attention,
//! `x += Wo att`, `h = rms_norm(x) * ffn_norm`, `x += Wdown (silu(Wgate h) * Wup h)`; then
//! `rms_norm(x) * output_norm` of the output rows and the output head (`output.weight`, or the
//! tied token embedding).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::device::{GpuDevice, WgpuError};
use super::kernels::{step_words, Count, GpuMatrix, Kernels, Op, WeightType};
use crate::backend::llama::RequestSampler;
use crate::engine::{DecodeBatch, DecodeError, Decoder, DecoderShape, SampleSite, SeqId, TokenId};
use crate::error::RuntimeError;
use crate::gguf::{GgufInfo, MetadataValue, TensorInfo};

/// Most output rows computed per output-head pass (more are done in passes of this many).
const OUTPUT_CHUNK: usize = 64;

/// The hyper-parameters of a LLaMA GGUF (`llama.*` metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Transformer blocks (`block_count`).
    pub n_layer: u32,
    /// Hidden size (`embedding_length`).
    pub dim: u32,
    /// Query heads (`attention.head_count`).
    pub n_head: u32,
    /// Key/value heads (`attention.head_count_kv`, grouped-query attention).
    pub n_kv_head: u32,
    /// Values per head (`dim / n_head`).
    pub head_dim: u32,
    /// Feed-forward size (`feed_forward_length`).
    pub ff: u32,
    /// Vocabulary size (rows of the token embedding).
    pub vocab: u32,
    /// RoPE base (`rope.freq_base`, 10000 when absent).
    pub rope_base: f32,
    /// Values of each head RoPE rotates (`rope.dimension_count`, `head_dim` when absent).
    pub rope_dims: u32,
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`).
    pub eps: f32,
    /// Training context (`context_length`).
    pub ctx_train: u32,
}

struct Layer {
    attn_norm: wgpu::Buffer,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    ffn_norm: wgpu::Buffer,
    gate: GpuMatrix,
    up: GpuMatrix,
    down: GpuMatrix,
}

/// A LLaMA model's weights on a GPU, with the kernels compiled for it.
pub struct WgpuModel {
    kernels: Kernels,
    shape: ModelShape,
    tok_embd: GpuMatrix,
    output: GpuMatrix,
    output_norm: wgpu::Buffer,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for WgpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuModel")
            .field("shape", &self.shape)
            .field("device", self.kernels.device())
            .finish()
    }
}

fn meta_u32(info: &GgufInfo, key: &str) -> Result<Option<u32>, String> {
    match info.metadata.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| format!("metadata `{key}` is not a 32-bit unsigned integer")),
    }
}

fn meta_f32(info: &GgufInfo, key: &str) -> Result<Option<f32>, String> {
    match info.metadata.get(key) {
        None => Ok(None),
        Some(MetadataValue::Float(f)) => Ok(Some(*f as f32)),
        Some(_) => Err(format!("metadata `{key}` is not a float")),
    }
}

impl ModelShape {
    /// Reads the shape from a GGUF header.
    ///
    /// # Errors
    /// A message naming the missing or inconsistent key (the architecture must be `llama`, with
    /// no RoPE scaling).
    pub fn from_gguf(info: &GgufInfo) -> Result<Self, String> {
        if info.architecture != "llama" {
            return Err(format!(
                "architecture `{}` (only `llama` runs on wgpu)",
                info.architecture
            ));
        }
        let need = |k: &str| {
            meta_u32(info, &format!("llama.{k}"))?
                .ok_or_else(|| format!("metadata `llama.{k}` is missing"))
        };
        if let Some(MetadataValue::String(s)) = info.metadata.get("llama.rope.scaling.type") {
            if s != "none" {
                return Err(format!("RoPE scaling `{s}`"));
            }
        }
        let dim = need("embedding_length")?;
        let n_head = need("attention.head_count")?;
        let n_kv_head = meta_u32(info, "llama.attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || dim % n_head != 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(format!(
                "{n_head} heads and {n_kv_head} KV heads over {dim} values"
            ));
        }
        let head_dim = dim / n_head;
        let embd = info
            .tensors
            .iter()
            .find(|t| t.name == "token_embd.weight")
            .ok_or("tensor `token_embd.weight` is missing")?;
        Ok(Self {
            n_layer: need("block_count")?,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ff: need("feed_forward_length")?,
            vocab: embd
                .dims
                .get(1)
                .and_then(|&v| u32::try_from(v).ok())
                .ok_or("token_embd.weight is not a 2-D matrix")?,
            rope_base: meta_f32(info, "llama.rope.freq_base")?.unwrap_or(10_000.0),
            rope_dims: meta_u32(info, "llama.rope.dimension_count")?.unwrap_or(head_dim),
            eps: meta_f32(info, "llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            ctx_train: meta_u32(info, "llama.context_length")?.unwrap_or(2048),
        })
    }
}

/// Reads tensors' bytes from the file at the offsets the header reader validated.
struct TensorReader<'a> {
    info: &'a GgufInfo,
    file: File,
    path: &'a Path,
}

impl TensorReader<'_> {
    fn tensor(&self, name: &str) -> Result<&TensorInfo, String> {
        self.info
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))
    }

    fn bytes(&mut self, t: &TensorInfo) -> Result<Vec<u8>, String> {
        let io = |e: std::io::Error| {
            format!(
                "reading tensor `{}` from {}: {e}",
                t.name,
                self.path.display()
            )
        };
        // offset + size lies inside the data section (checked by GgufInfo::read).
        self.file
            .seek(SeekFrom::Start(self.info.data_offset + t.offset))
            .map_err(io)?;
        let mut buf = vec![0u8; t.size_bytes as usize];
        self.file.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }

    /// A `rows x k` matrix (`ne = [k, rows]`).
    fn matrix(
        &mut self,
        dev: &GpuDevice,
        name: &str,
        k: u32,
        rows: u32,
    ) -> Result<GpuMatrix, String> {
        let t = self.tensor(name)?.clone();
        if t.dims != [u64::from(k), u64::from(rows)] {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected [{k}, {rows}]",
                t.dims
            ));
        }
        let ty = WeightType::from_ggml(&t.ggml_type).ok_or_else(|| {
            format!(
                "tensor `{name}` is {} (the wgpu kernels read f32, f16, q4_1 and q8_0)",
                t.ggml_type
            )
        })?;
        let bytes = self.bytes(&t)?;
        GpuMatrix::upload(dev, name, ty, rows, k, &bytes).map_err(|e| e.to_string())
    }

    /// An f32 vector of `n` values.
    fn vector(&mut self, dev: &GpuDevice, name: &str, n: u32) -> Result<wgpu::Buffer, String> {
        let t = self.tensor(name)?.clone();
        if t.dims != [u64::from(n)] || t.ggml_type != "f32" {
            return Err(format!(
                "tensor `{name}` is {} {:?}, expected f32 [{n}]",
                t.ggml_type, t.dims
            ));
        }
        let bytes = self.bytes(&t)?;
        dev.storage_init(name, &bytes).map_err(|e| e.to_string())
    }
}

impl WgpuModel {
    /// Loads a LLaMA GGUF onto `dev`: quantized blocks as stored (Q8_0 repacked to whole
    /// words), norms as f32, the output head tied to the token embedding when the file has no
    /// `output.weight`.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidGguf`] for a malformed file, [`RuntimeError::ModelLoad`] for a
    /// model the kernels cannot run (architecture, tensor types, shapes) or that does not fit
    /// the device.
    pub fn load(dev: &GpuDevice, path: &Path) -> Result<Self, RuntimeError> {
        let info = GgufInfo::read_path(path)?;
        let fail = |reason: String| RuntimeError::ModelLoad {
            path: path.to_path_buf(),
            reason: format!("wgpu backend: {reason}"),
        };
        let shape =
            ModelShape::from_gguf(&info).map_err(|e| fail(format!("unsupported model: {e}")))?;
        if shape.head_dim > 128 || shape.rope_dims > shape.head_dim || shape.rope_dims % 2 != 0 {
            return Err(fail(format!(
                "head size {} with {} RoPE dims is not supported",
                shape.head_dim, shape.rope_dims
            )));
        }
        let file = File::open(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let mut r = TensorReader {
            info: &info,
            file,
            path,
        };
        let s = shape;
        let kv_dim = s.n_kv_head * s.head_dim;
        let mut layers = Vec::with_capacity(s.n_layer as usize);
        for l in 0..s.n_layer {
            let n = |t: &str| format!("blk.{l}.{t}.weight");
            let mut layer = || -> Result<Layer, String> {
                Ok(Layer {
                    wq: r.matrix(dev, &n("attn_q"), s.dim, s.dim)?,
                    wk: r.matrix(dev, &n("attn_k"), s.dim, kv_dim)?,
                    wv: r.matrix(dev, &n("attn_v"), s.dim, kv_dim)?,
                    wo: r.matrix(dev, &n("attn_output"), s.dim, s.dim)?,
                    gate: r.matrix(dev, &n("ffn_gate"), s.dim, s.ff)?,
                    up: r.matrix(dev, &n("ffn_up"), s.dim, s.ff)?,
                    down: r.matrix(dev, &n("ffn_down"), s.ff, s.dim)?,
                    attn_norm: r.vector(dev, &n("attn_norm"), s.dim)?,
                    ffn_norm: r.vector(dev, &n("ffn_norm"), s.dim)?,
                })
            };
            let layer = layer().map_err(fail)?;
            layers.push(layer);
        }
        let tok_embd = r
            .matrix(dev, "token_embd.weight", s.dim, s.vocab)
            .map_err(fail)?;
        let output = if info.tensors.iter().any(|t| t.name == "output.weight") {
            r.matrix(dev, "output.weight", s.dim, s.vocab)
                .map_err(fail)?
        } else {
            tok_embd.clone()
        };
        let output_norm = r.vector(dev, "output_norm.weight", s.dim).map_err(fail)?;
        Ok(Self {
            kernels: Kernels::new(dev),
            shape,
            tok_embd,
            output,
            output_norm,
            layers,
        })
    }

    /// The model's hyper-parameters.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// The device the weights live on.
    pub fn device(&self) -> &GpuDevice {
        self.kernels.device()
    }
}

/// A decoder over a [`WgpuModel`]: per-layer KV caches of `max_sequences x
/// context_per_sequence` f32 rows, activations for `batch_tokens` tokens, and the recorded
/// forward pass. Sequence `s` uses KV stream `s`.
pub struct WgpuDecoder<'m> {
    model: &'m WgpuModel,
    shape: DecoderShape,
    step: wgpu::Buffer,
    body: Vec<Op>,
    head: Vec<Op>,
    logits_buf: wgpu::Buffer,
    hidden_buf: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Logits of the last decode's output rows, `vocab` each, in output order.
    logits: Vec<f32>,
    /// Final-norm hidden states of the output rows, `dim` each.
    hidden: Vec<f32>,
    /// Per batch row of the last decode: its output index, if it kept output.
    outputs: Vec<Option<usize>>,
    chunk: Vec<f32>,
}

impl std::fmt::Debug for WgpuDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuDecoder")
            .field("shape", &self.shape)
            .field("rows", &self.outputs.len())
            .finish()
    }
}

fn decode_err(e: WgpuError) -> DecodeError {
    DecodeError::Failed(format!("wgpu: {e}"))
}

impl<'m> WgpuDecoder<'m> {
    /// Allocates the caches and activations for `shape` and records the forward pass.
    ///
    /// # Errors
    /// [`WgpuError::OutOfMemory`] when the caches or activations do not fit,
    /// [`WgpuError::ShaderCompile`] when a kernel does not compile on this device.
    pub fn new(model: &'m WgpuModel, shape: DecoderShape) -> Result<Self, WgpuError> {
        let s = model.shape;
        let k = &model.kernels;
        let dev = model.device();
        let b = shape.batch_tokens.max(1);
        let (bu, dim, kv_dim, ff) = (
            u64::from(b),
            u64::from(s.dim),
            u64::from(s.n_kv_head * s.head_dim),
            u64::from(s.ff),
        );
        let out_cap = (b as usize).min(OUTPUT_CHUNK) as u64;
        let f = 4u64;
        let step = dev.storage("step", (4 + 4 * bu) * 4)?;
        let x = dev.storage("x", bu * dim * f)?;
        let h = dev.storage("h", bu * dim * f)?;
        let q = dev.storage("q", bu * dim * f)?;
        let kb = dev.storage("k", bu * kv_dim * f)?;
        let vb = dev.storage("v", bu * kv_dim * f)?;
        let att = dev.storage("att", bu * dim * f)?;
        let o = dev.storage("o", bu * dim * f)?;
        let g = dev.storage("gate", bu * ff * f)?;
        let u = dev.storage("up", bu * ff * f)?;
        let hidden_buf = dev.storage("hidden", out_cap * dim * f)?;
        let logits_buf = dev.storage("logits", out_cap * u64::from(s.vocab) * f)?;
        let staging = dev.readback(
            "logits read-back",
            out_cap * u64::from(s.vocab).max(dim) * f,
        )?;
        let cache =
            u64::from(shape.max_sequences) * u64::from(shape.context_per_sequence) * kv_dim * f;
        let ctx = shape.context_per_sequence;
        let mut body = vec![k.get_rows(&model.tok_embd, &x, &step, b)?];
        for (l, layer) in model.layers.iter().enumerate() {
            let kc = dev.storage(&format!("K cache of layer {l}"), cache)?;
            let vc = dev.storage(&format!("V cache of layer {l}"), cache)?;
            // llama.cpp quantizes a quantized product's activations (Q8_1 for Q4_1 weights, Q8_0
            // for Q8_0): the same rounding here keeps the logits close to its.
            let quant =
                |ws: &[&GpuMatrix], buf: &wgpu::Buffer, n: u32| -> Result<Vec<Op>, WgpuError> {
                    Ok(if ws.iter().all(|w| w.ty.quantizes_activations()) {
                        vec![k.quantize_q8(buf, n, Count::Tokens)?]
                    } else {
                        Vec::new()
                    })
                };
            body.push(k.rms_norm(&layer.attn_norm, &x, &h, s.dim, s.eps, Count::Tokens)?);
            body.extend(quant(&[&layer.wq, &layer.wk, &layer.wv], &h, s.dim)?);
            body.extend([
                k.linear(&layer.wq, &h, &q, &step, Count::Tokens)?,
                k.linear(&layer.wk, &h, &kb, &step, Count::Tokens)?,
                k.linear(&layer.wv, &h, &vb, &step, Count::Tokens)?,
                k.rope(&q, &step, s.n_head, s.head_dim, s.rope_dims, s.rope_base, b)?,
                k.rope(
                    &kb,
                    &step,
                    s.n_kv_head,
                    s.head_dim,
                    s.rope_dims,
                    s.rope_base,
                    b,
                )?,
                k.kv_store(&kb, &vb, &kc, &vc, &step, kv_dim as u32, ctx, b)?,
                k.attention(
                    &q,
                    &kc,
                    &vc,
                    &att,
                    &step,
                    s.n_head,
                    s.n_kv_head,
                    s.head_dim,
                    ctx,
                    b,
                )?,
            ]);
            body.extend(quant(&[&layer.wo], &att, s.dim)?);
            body.extend([
                k.linear(&layer.wo, &att, &o, &step, Count::Tokens)?,
                k.add(&x, &o, s.dim)?,
                k.rms_norm(&layer.ffn_norm, &x, &h, s.dim, s.eps, Count::Tokens)?,
            ]);
            body.extend(quant(&[&layer.gate, &layer.up], &h, s.dim)?);
            body.extend([
                k.linear(&layer.gate, &h, &g, &step, Count::Tokens)?,
                k.linear(&layer.up, &h, &u, &step, Count::Tokens)?,
                k.swiglu(&g, &u, s.ff)?,
            ]);
            body.extend(quant(&[&layer.down], &g, s.ff)?);
            body.extend([
                k.linear(&layer.down, &g, &o, &step, Count::Tokens)?,
                k.add(&x, &o, s.dim)?,
            ]);
        }
        // The head: gather the output rows of the residual stream, final norm (kept as the
        // hidden state, and a copy rounded for the output matrix), output matrix.
        let hq = dev.storage("hidden, rounded", out_cap * dim * f)?;
        let mut head = vec![
            k.gather(&x, &h, &step, s.dim, b)?,
            k.rms_norm(
                &model.output_norm,
                &h,
                &hidden_buf,
                s.dim,
                s.eps,
                Count::Outputs,
            )?,
            k.rms_norm(&model.output_norm, &h, &hq, s.dim, s.eps, Count::Outputs)?,
        ];
        if model.output.ty.quantizes_activations() {
            head.push(k.quantize_q8(&hq, s.dim, Count::Outputs)?);
        }
        head.push(k.linear(&model.output, &hq, &logits_buf, &step, Count::Outputs)?);
        Ok(Self {
            model,
            shape,
            step,
            body,
            head,
            logits_buf,
            hidden_buf,
            staging,
            logits: Vec::new(),
            hidden: Vec::new(),
            outputs: Vec::new(),
            chunk: Vec::new(),
        })
    }

    /// The decoder's shape.
    pub fn shape(&self) -> DecoderShape {
        self.shape
    }

    fn write_step(&self, tokens: &[u32], pos: &[u32], seq: &[u32], out_rows: &[u32]) {
        let words = step_words(
            self.shape.batch_tokens.max(1) as usize,
            tokens,
            pos,
            seq,
            out_rows,
        );
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.model
            .device()
            .queue
            .write_buffer(&self.step, 0, &bytes);
    }

    fn run(&mut self, batch: &DecodeBatch) -> Result<(), WgpuError> {
        let dev = self.model.device().clone();
        let t = batch.tokens();
        let tokens: Vec<u32> = t.iter().map(|b| b.token).collect();
        let pos: Vec<u32> = t.iter().map(|b| b.pos).collect();
        let seq: Vec<u32> = t.iter().map(|b| b.seq).collect();
        let out_rows: Vec<u32> = t
            .iter()
            .enumerate()
            .filter(|(_, b)| b.wants_output)
            .map(|(i, _)| i as u32)
            .collect();
        let (vocab, dim) = (
            self.model.shape.vocab as usize,
            self.model.shape.dim as usize,
        );
        self.logits.clear();
        self.hidden.clear();
        let n = tokens.len() as u32;
        let mut first = true;
        for rows in out_rows
            .chunks(OUTPUT_CHUNK)
            .chain(out_rows.is_empty().then_some(&[][..]))
        {
            self.write_step(&tokens, &pos, &seq, rows);
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if first {
                    for op in &self.body {
                        op.record(&mut pass, n, rows.len() as u32);
                    }
                }
                for op in &self.head {
                    op.record(&mut pass, n, rows.len() as u32);
                }
            }
            first = false;
            dev.submit_and_wait(enc)?;
            if rows.is_empty() {
                break;
            }
            dev.read_f32(
                &self.logits_buf,
                &self.staging,
                rows.len() * vocab,
                &mut self.chunk,
            )?;
            self.logits.extend_from_slice(&self.chunk);
            dev.read_f32(
                &self.hidden_buf,
                &self.staging,
                rows.len() * dim,
                &mut self.chunk,
            )?;
            self.hidden.extend_from_slice(&self.chunk);
        }
        Ok(())
    }

    /// Runs the model over a batch (see [`Decoder::decode`]).
    ///
    /// # Errors
    /// [`DecodeError::KvCacheFull`] for a position past the sequence's KV stream,
    /// [`DecodeError::Failed`] for a bad batch (too long, unknown token or sequence) or a GPU
    /// error (its [`WgpuError`] message).
    pub fn decode_batch(&mut self, batch: &DecodeBatch) -> Result<(), DecodeError> {
        self.outputs.clear();
        if batch.len() > self.shape.batch_tokens as usize {
            return Err(DecodeError::Failed(format!(
                "{} tokens in a batch of at most {}",
                batch.len(),
                self.shape.batch_tokens
            )));
        }
        for t in batch.tokens() {
            if t.seq >= self.shape.max_sequences {
                return Err(DecodeError::Failed(format!(
                    "sequence {} is past max_sequences {}",
                    t.seq, self.shape.max_sequences
                )));
            }
            if t.token >= self.model.shape.vocab {
                return Err(DecodeError::Failed(format!(
                    "token {} is outside the vocabulary of {}",
                    t.token, self.model.shape.vocab
                )));
            }
            if t.pos >= self.shape.context_per_sequence {
                return Err(DecodeError::KvCacheFull);
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.run(batch).map_err(decode_err)?;
        let mut next = 0;
        self.outputs.extend(batch.tokens().iter().map(|t| {
            t.wants_output.then(|| {
                next += 1;
                next - 1
            })
        }));
        Ok(())
    }

    /// The logits of an output row of the last decode.
    pub fn row_logits(&self, row: usize) -> Option<&[f32]> {
        let v = self.model.shape.vocab as usize;
        let i = (*self.outputs.get(row)?)?;
        self.logits.get(i * v..(i + 1) * v)
    }

    /// The final-norm hidden state of an output row of the last decode.
    pub fn row_hidden(&self, row: usize) -> Option<&[f32]> {
        let d = self.model.shape.dim as usize;
        let i = (*self.outputs.get(row)?)?;
        self.hidden.get(i * d..(i + 1) * d)
    }
}

impl Decoder for WgpuDecoder<'_> {
    type Sampler = RequestSampler;

    fn decode(&mut self, batch: &DecodeBatch) -> Result<(), DecodeError> {
        self.decode_batch(batch)
    }

    fn sample(
        &mut self,
        sampler: &mut RequestSampler,
        site: SampleSite,
    ) -> Result<TokenId, DecodeError> {
        let logits = self.row_logits(site.row).ok_or_else(|| {
            DecodeError::Failed(format!("row {} of the last batch kept no logits", site.row))
        })?;
        let arr = LlamaTokenDataArray::from_iter(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| LlamaTokenData::new(LlamaToken::new(i as i32), l, 0.0)),
            false,
        );
        Ok(sampler.sample_array(arr, site.index))
    }

    fn logits(&self, row: usize) -> Option<&[f32]> {
        self.row_logits(row)
    }

    fn hidden_state(&self, row: usize) -> Option<&[f32]> {
        self.row_hidden(row)
    }

    fn clear_sequence(&mut self, _seq: SeqId) {
        // A sequence's cells are rewritten from position 0 by its next user before they are
        // read (attention reads positions 0..=pos only), so nothing needs clearing.
    }
}
