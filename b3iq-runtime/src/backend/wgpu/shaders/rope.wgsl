// RoPE, llama.cpp's normal mode (LLAMA_ROPE_TYPE_NORM): pairs of consecutive values
// (x[2i], x[2i+1]) of each head rotate by pos * base^(-2i/n_dims); values past n_dims stay.
// The angle is computed as llama.cpp's rope cache does, by i f32 multiplications of pos by
// theta_scale = base^(-2/n_dims).
// In place on a [tokens, heads * head_dim] buffer.
struct P { n_head: u32, head_dim: u32, n_dims: u32, batch: u32, freq_base: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let idx = gid.x;
    let t = gid.y;
    if (idx >= p.n_head * half) {
        return;
    }
    let h = idx / half;
    let i = idx % half;
    if (2u * i >= p.n_dims) {
        return;
    }
    let pos = f32(step[4u + p.batch + t]);
    let theta_scale = pow(p.freq_base, -2.0 / f32(p.n_dims));
    var theta = pos;
    for (var m = 0u; m < i; m++) {
        theta *= theta_scale;
    }
    let c = cos(theta);
    let s = sin(theta);
    let o = t * p.n_head * p.head_dim + h * p.head_dim + 2u * i;
    let x0 = x[o];
    let x1 = x[o + 1u];
    x[o] = x0 * c - x1 * s;
    x[o + 1u] = x0 * s + x1 * c;
}
