// Embedding lookup: out[t, i] = W[token[t], i] (dequantized).
struct P { dim: u32, batch: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

//!WEIGHTS

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.dim) {
        return;
    }
    let tok = step[4u + t];
    let nb = p.dim / 32u;
    out[t * p.dim + i] = elem(tok * nb + i / 32u, i % 32u);
}
