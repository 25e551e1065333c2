// Causal attention over one sequence's KV cache with grouped-query heads, as llama.cpp's CPU
// flash attention computes it (ggml_compute_forward_flash_attn_ext_f16 with an f16 KV cache):
// the query is rounded to f16, keys are visited in position order with a running maximum M
// and sum S, and the weighted values are accumulated in f16 (rounded after every step).
// Query head h reads KV head h / (n_head / n_kv_head), positions 0..=pos of its sequence.
// One workgroup per (head, token): the 64 threads score 64 keys at a time, then each thread
// folds them into the dimensions it owns (d and d + 64), so any context length fits.
// head_dim <= 128.
struct P { n_head: u32, n_kv_head: u32, head_dim: u32, ctx: u32, batch: u32, scale: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;
var<workgroup> qs: array<f32, 128>;
var<workgroup> sc: array<f32, 64>;
var<workgroup> wn: u32;
var<workgroup> wbase: u32;

fn f16r(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = p.head_dim;
    let kv_dim = p.n_kv_head * hd;
    let kvh = h / (p.n_head / p.n_kv_head);
    if (lid == 0u) {
        let pos = step[4u + p.batch + t];
        let seq = step[4u + 2u * p.batch + t];
        wn = pos + 1u;
        wbase = seq * p.ctx;
    }
    let qo = t * p.n_head * hd + h * hd;
    for (var d = lid; d < hd; d += 64u) {
        qs[d] = f16r(q[qo + d]);
    }
    let n = workgroupUniformLoad(&wn);
    let base = workgroupUniformLoad(&wbase);
    var m = -3.0e38;
    var l = 0.0;
    var acc0 = 0.0;
    var acc1 = 0.0;
    for (var c = 0u; c < n; c += 64u) {
        let j = c + lid;
        var s = 0.0;
        if (j < n) {
            let ko = (base + j) * kv_dim + kvh * hd;
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot += qs[d] * kc[ko + d];
            }
            s = dot * p.scale;
        }
        sc[lid] = s;
        workgroupBarrier();
        let cn = min(64u, n - c);
        for (var jj = 0u; jj < cn; jj++) {
            let s = sc[jj];
            var ms = 1.0;
            var vs = 1.0;
            if (s > m) {
                ms = exp(m - s);
                m = s;
                acc0 = f16r(acc0 * ms);
                acc1 = f16r(acc1 * ms);
            } else {
                vs = exp(s - m);
            }
            let vo = (base + c + jj) * kv_dim + kvh * hd;
            if (lid < hd) {
                acc0 = f16r(fma(vc[vo + lid], vs, acc0));
            }
            if (lid + 64u < hd) {
                acc1 = f16r(fma(vc[vo + lid + 64u], vs, acc1));
            }
            l = l * ms + vs;
        }
        workgroupBarrier();
    }
    let inv = 1.0 / l;
    if (lid < hd) {
        out[qo + lid] = acc0 * inv;
    }
    if (lid + 64u < hd) {
        out[qo + lid + 64u] = acc1 * inv;
    }
}
