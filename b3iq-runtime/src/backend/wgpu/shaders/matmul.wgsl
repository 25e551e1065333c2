// Y[t, r] = sum_k W[r, k] * X[t, k] for a batch of tokens: one thread per (4 rows, 8 tokens),
// so each dequantized weight unit serves 8 tokens and each x value 4 rows. Rows and tokens past
// the ends read the last one (clamped) and are not stored, so the tile has no branches.
// The token count is step[p.count_slot] (0: the batch's tokens, 1: its output rows).
struct P { rows: u32, k: u32, count_slot: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

//!WEIGHTS

fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}
// The 4 rows' units against one token's x values at `base + o`.
fn tok(u0: Unit, u1: Unit, u2: Unit, u3: Unit, base: u32, o: vec2<u32>) -> vec4<f32> {
    let xl = x4(base + o.x);
    let xh = x4(base + o.y);
    return vec4<f32>(
        dot(u0.lo, xl) + dot(u0.hi, xh),
        dot(u1.lo, xl) + dot(u1.hi, xh),
        dot(u2.lo, xl) + dot(u2.hi, xh),
        dot(u3.lo, xl) + dot(u3.hi, xh),
    );
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = 4u * gid.x;
    let t0 = gid.y * 8u;
    let nt = step[p.count_slot];
    if (r0 >= p.rows || t0 >= nt) {
        return;
    }
    let lt = nt - 1u;
    let lr = p.rows - 1u;
    let k = p.k;
    let nb = k / 32u;
    let rb = vec4<u32>(r0, min(r0 + 1u, lr), min(r0 + 2u, lr), min(r0 + 3u, lr)) * nb;
    let b0 = vec4<u32>(t0, min(t0 + 1u, lt), min(t0 + 2u, lt), min(t0 + 3u, lt)) * k;
    let b1 = vec4<u32>(min(t0 + 4u, lt), min(t0 + 5u, lt), min(t0 + 6u, lt), min(t0 + 7u, lt)) * k;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var blk = 0u; blk < nb; blk++) {
        for (var j = 0u; j < 4u; j++) {
            let u0 = unit(rb.x + blk, j);
            let u1 = unit(rb.y + blk, j);
            let u2 = unit(rb.z + blk, j);
            let u3 = unit(rb.w + blk, j);
            let o = unit_offsets(j) + vec2<u32>(blk * 32u);
            a0 += tok(u0, u1, u2, u3, b0.x, o);
            a1 += tok(u0, u1, u2, u3, b0.y, o);
            a2 += tok(u0, u1, u2, u3, b0.z, o);
            a3 += tok(u0, u1, u2, u3, b0.w, o);
            a4 += tok(u0, u1, u2, u3, b1.x, o);
            a5 += tok(u0, u1, u2, u3, b1.y, o);
            a6 += tok(u0, u1, u2, u3, b1.z, o);
            a7 += tok(u0, u1, u2, u3, b1.w, o);
        }
    }
    let acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var tt = 0u; tt < 8u; tt++) {
        let t = t0 + tt;
        if (t < nt) {
            let o = t * p.rows + r0;
            let v = acc[tt];
            y[o] = v.x;
            if (r0 + 1u < p.rows) { y[o + 1u] = v.y; }
            if (r0 + 2u < p.rows) { y[o + 2u] = v.z; }
            if (r0 + 3u < p.rows) { y[o + 3u] = v.w; }
        }
    }
}
