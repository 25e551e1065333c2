// RMSNorm (llama.cpp ggml_rms_norm then the weight): y = x / sqrt(mean(x^2) + eps) * w,
// one workgroup per token.
struct P { dim: u32, eps: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> nw: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.y * p.dim;
    var acc = 0.0;
    for (var i = lid; i < p.dim; i += 64u) {
        let v = x[o + i];
        acc += v * v;
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part[lid] += part[lid + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(part[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 64u) {
        y[o + i] = x[o + i] * scale * nw[i];
    }
}
