// Keeps the output rows: out[o, i] = x[out_row[o], i].
struct P { dim: u32, batch: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.dim) {
        return;
    }
    let r = step[4u + 3u * p.batch + gid.y];
    out[gid.y * p.dim + gid.x] = x[r * p.dim + gid.x];
}
