//! CPU reference implementations of the kernels, in f64 where they sum: the kernels' unit tests
//! compare against them. Quantization follows llama.cpp's reference quantizers
//! (`quantize_row_q4_1_ref`, `quantize_row_q8_0_ref` in ggml-quants.c).

use super::kernels::WeightType;

/// IEEE half to f32 (normals, subnormals, zeros, infinities, NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let man = (h & 0x3ff) as f32;
    sign * match exp {
        0 => man * 2f32.powi(-24),
        31 if man == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + man / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

/// f32 to IEEE half, rounding to nearest (ties to even); values past the half range saturate
/// to infinity, tiny ones flush to zero.
pub fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = v.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 2f32.powi(-24) {
        return sign;
    }
    if a < 2f32.powi(-14) {
        // Subnormal: a multiple of 2^-24.
        return sign | (a / 2f32.powi(-24)).round_ties_even() as u16;
    }
    let e = a.log2().floor() as i32;
    let e = if 2f32.powi(e) > a { e - 1 } else { e };
    let m = (a / 2f32.powi(e) - 1.0) * 1024.0;
    let mut m = m.round_ties_even() as u32;
    let mut e = e;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    if e > 15 {
        return sign | 0x7c00;
    }
    sign | (((e + 15) as u16) << 10) | m as u16
}

/// Quantizes `values` (a multiple of 32) to GGUF bytes of `ty`.
pub fn quantize(ty: WeightType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in values.chunks(32) {
        match ty {
            WeightType::F32 => b.iter().for_each(|v| out.extend(v.to_le_bytes())),
            WeightType::F16 => b
                .iter()
                .for_each(|v| out.extend(f32_to_f16(*v).to_le_bytes())),
            WeightType::Q4_1 => {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f32_to_f16(d).to_le_bytes());
                out.extend(f32_to_f16(min).to_le_bytes());
                for j in 0..16 {
                    let q = |x: f32| (((x - min) * id + 0.5) as u8).min(15);
                    out.push(q(b[j]) | (q(b[16 + j]) << 4));
                }
            }
            WeightType::Q8_0 => {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f32_to_f16(d).to_le_bytes());
                out.extend(b.iter().map(|x| ((x * id).round() as i8) as u8));
            }
        }
    }
    out
}

/// Dequantizes the first `n` values of GGUF bytes of `ty`.
pub fn dequantize(ty: WeightType, bytes: &[u8], n: usize) -> Vec<f32> {
    let h = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]));
    let mut out = Vec::with_capacity(n);
    for b in bytes.chunks(ty.gguf_block_bytes()) {
        match ty {
            WeightType::F32 => out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            WeightType::F16 => out.extend((0..32).map(|i| h(b, 2 * i))),
            WeightType::Q4_1 => {
                let (d, m) = (h(b, 0), h(b, 2));
                out.extend((0..32).map(|i| {
                    let q = if i < 16 {
                        b[4 + i] & 0xf
                    } else {
                        b[4 + i - 16] >> 4
                    };
                    d * q as f32 + m
                }));
            }
            WeightType::Q8_0 => {
                let d = h(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
    }
    out.truncate(n);
    out
}

/// `y[t, r] = sum_k w[r, k] x[t, k]` for `n` items (`w`: `rows x k`).
pub fn linear(w: &[f32], rows: usize, k: usize, x: &[f32], n: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * rows];
    for t in 0..n {
        for r in 0..rows {
            y[t * rows + r] = (0..k)
                .map(|i| w[r * k + i] as f64 * x[t * k + i] as f64)
                .sum();
        }
    }
    y
}

/// RMSNorm of each `dim`-wide row times `w`.
pub fn rms_norm(x: &[f32], w: &[f32], dim: usize, eps: f64) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            let s = 1.0 / (ms + eps).sqrt();
            row.iter()
                .zip(w)
                .map(move |(&v, &w)| v as f64 * s * w as f64)
        })
        .collect()
}

/// RoPE, llama.cpp's normal mode, on `tokens x n_head*head_dim` (see `rope.wgsl`).
pub fn rope(
    x: &[f32],
    pos: &[u32],
    n_head: usize,
    head_dim: usize,
    n_dims: usize,
    base: f64,
) -> Vec<f64> {
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..n_head {
            for i in 0..n_dims / 2 {
                let theta = p as f64 * base.powf(-2.0 * i as f64 / n_dims as f64);
                let o = (t * n_head + h) * head_dim + 2 * i;
                let (x0, x1) = (y[o], y[o + 1]);
                y[o] = x0 * theta.cos() - x1 * theta.sin();
                y[o + 1] = x0 * theta.sin() + x1 * theta.cos();
            }
        }
    }
    y
}

/// Causal grouped-query attention of a batch holding every position of its sequences (token
/// `t` attends to the batch tokens of its sequence at positions up to its own, in position
/// order), as llama.cpp's CPU flash attention computes it over an f16 KV cache
/// (`ggml_compute_forward_flash_attn_ext_f16`): query, keys and values rounded to f16, a running
/// maximum and sum per key, the weighted values accumulated in f16. In f32, like the kernel.
#[allow(clippy::too_many_arguments)]
pub fn attention(q: &[f32], k: &[f32], v: &[f32], pos: &[u32], seq: &[u32], n_head: usize, n_kv: usize, hd: usize) -> Vec<f64> {
    let kv_dim = n_kv * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0; pos.len() * n_head * hd];
    for t in 0..pos.len() {
        let mut keys: Vec<usize> = (0..pos.len()).filter(|&u| seq[u] == seq[t] && pos[u] <= pos[t]).collect();
        keys.sort_by_key(|&u| pos[u]);
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qv: Vec<f32> = q[(t * n_head + h) * hd..][..hd].iter().map(|&x| f16_round(x)).collect();
            let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
            let mut acc = vec![0f32; hd];
            for &u in &keys {
                let kr = &k[u * kv_dim + kvh * hd..][..hd];
                let s = qv.iter().zip(kr).map(|(&a, &b)| a * f16_round(b)).sum::<f32>() * scale;
                let (mut ms, mut vs) = (1f32, 1f32);
                if s > m {
                    ms = (m - s).exp();
                    m = s;
                    acc.iter_mut().for_each(|a| *a = f16_round(*a * ms));
                } else {
                    vs = (s - m).exp();
                }
                for (d, a) in acc.iter_mut().enumerate() {
                    *a = f16_round(f16_round(v[u * kv_dim + kvh * hd + d]).mul_add(vs, *a));
                }
                l = l * ms + vs;
            }
            for d in 0..hd {
                out[(t * n_head + h) * hd + d] = (acc[d] * (1.0 / l)) as f64;
            }
        }
    }
    out
}

/// `v` rounded to the nearest f16 (what an f16 KV cache keeps).
pub fn f16_round(v: f32) -> f32 {
    f16_to_f32(f32_to_f16(v))
}

/// Activations as llama.cpp's CPU backend quantizes them before a quantized product
/// (`quantize_row_q8_0`/`q8_1`): per 32 values `d = max|x| / 127`, `q = roundf(x / d)`, and the
/// product sees `q * fp16(d)`.
pub fn quantize_activations(x: &[f32]) -> Vec<f32> {
    x.chunks(32)
        .flat_map(|b| {
            let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let dh = f16_round(d);
            b.iter().map(move |v| (v * id).round() * dh)
        })
        .collect()
}
