// Rounds activations the way llama.cpp's CPU backend does before a quantized matrix product
// (quantize_row_q8_0 / q8_1 in ggml-quants.c): per block of 32 values, d = max|x| / 127,
// q = roundf(x / d) (halves away from zero), x = q * fp16(d). In place, one thread per block.
struct P { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x * 32u >= p.n) {
        return;
    }
    let o = gid.y * p.n + gid.x * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[o + i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    let dh = unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x;
    for (var i = 0u; i < 32u; i++) {
        let v = x[o + i] * id;
        x[o + i] = sign(v) * floor(abs(v) + 0.5) * dh;
    }
}
