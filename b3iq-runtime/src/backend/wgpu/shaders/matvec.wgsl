// y[t, r] = sum_k W[r, k] * x[t, k]: one thread per (4 rows, token). No workgroup memory or
// barriers (a CPU driver such as lavapipe runs barriers as coroutine switches); each x value
// loaded serves 4 rows. Rows past the matrix read its last row and are not stored.
struct P { rows: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

//!WEIGHTS

fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}
fn udot(u: Unit, xl: vec4<f32>, xh: vec4<f32>) -> f32 {
    return dot(u.lo, xl) + dot(u.hi, xh);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r0 = 4u * (gid.x + gid.z * nwg.x * 64u);
    let t = gid.y;
    if (r0 >= p.rows) {
        return;
    }
    let last = p.rows - 1u;
    let nb = p.k / 32u;
    let rb = vec4<u32>(r0, min(r0 + 1u, last), min(r0 + 2u, last), min(r0 + 3u, last)) * nb;
    var acc = vec4<f32>(0.0);
    for (var blk = 0u; blk < nb; blk++) {
        let xb = t * p.k + blk * 32u;
        for (var j = 0u; j < 4u; j++) {
            let o = unit_offsets(j);
            let xl = x4(xb + o.x);
            let xh = x4(xb + o.y);
            acc += vec4<f32>(
                udot(unit(rb.x + blk, j), xl, xh),
                udot(unit(rb.y + blk, j), xl, xh),
                udot(unit(rb.z + blk, j), xl, xh),
                udot(unit(rb.w + blk, j), xl, xh),
            );
        }
    }
    let o = t * p.rows;
    y[o + r0] = acc.x;
    if (r0 + 1u < p.rows) { y[o + r0 + 1u] = acc.y; }
    if (r0 + 2u < p.rows) { y[o + r0 + 2u] = acc.z; }
    if (r0 + 3u < p.rows) { y[o + r0 + 3u] = acc.w; }
}
