// Causal attention over one sequence's KV cache with grouped-query heads: query head h reads
// KV head h / (n_head / n_kv_head), positions 0..=pos of its sequence. One workgroup per
// (head, token); the query is rounded to f16 (llama.cpp's flash attention converts it to the
// f16 KV cache's type); keys are scored 64 at a time and folded into a running softmax (max m, sum l,
// weighted values acc), so any context length fits. head_dim <= 128.
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
        qs[d] = unpack2x16float(pack2x16float(vec2<f32>(q[qo + d], 0.0))).x;
    }
    let n = workgroupUniformLoad(&wn);
    let base = workgroupUniformLoad(&wbase);
    var m = -1e30;
    var l = 0.0;
    var acc0 = 0.0;
    var acc1 = 0.0;
    for (var c = 0u; c < n; c += 64u) {
        let j = c + lid;
        var s = -1e30;
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
        var cm = m;
        for (var jj = 0u; jj < cn; jj++) {
            cm = max(cm, sc[jj]);
        }
        let corr = exp(m - cm);
        l *= corr;
        acc0 *= corr;
        acc1 *= corr;
        for (var jj = 0u; jj < cn; jj++) {
            let e = exp(sc[jj] - cm);
            l += e;
            let vo = (base + c + jj) * kv_dim + kvh * hd;
            if (lid < hd) {
                acc0 += e * vc[vo + lid];
            }
            if (lid + 64u < hd) {
                acc1 += e * vc[vo + lid + 64u];
            }
        }
        m = cm;
        workgroupBarrier();
    }
    if (lid < hd) {
        out[qo + lid] = acc0 / l;
    }
    if (lid + 64u < hd) {
        out[qo + lid + 64u] = acc1 / l;
    }
}
