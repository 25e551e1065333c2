// Writes the batch's K and V rows into the KV cache at (sequence, position):
// cache[(seq * ctx + pos) * kv_dim + i], rounded to f16 as llama.cpp's default f16 KV cache
// holds them (kept as f32 words).
struct P { kv_dim: u32, ctx: u32, batch: u32, pad0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<f32>;
@group(0) @binding(4) var<storage, read_write> vc: array<f32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;

fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.kv_dim) {
        return;
    }
    let pos = step[4u + p.batch + t];
    let seq = step[4u + 2u * p.batch + t];
    let dst = (seq * p.ctx + pos) * p.kv_dim + i;
    kc[dst] = f16_round(k[t * p.kv_dim + i]);
    vc[dst] = f16_round(v[t * p.kv_dim + i]);
}
