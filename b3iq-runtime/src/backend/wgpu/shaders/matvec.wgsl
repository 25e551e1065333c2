// y[t, r] = sum_k W[r, k] * x[t, k]: one workgroup per (row r, token t), the row's 8-element
// units spread over 64 threads and summed in workgroup memory. Rows past 65535 workgroups
// wrap into the z dimension.
struct P { rows: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 64>;

//!WEIGHTS

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.z * nwg.x;
    let t = wid.y;
    let nb = p.k / 32u;
    var acc = 0.0;
    if (row < p.rows) {
        let xo = t * p.k;
        for (var u = lid; u < nb * 4u; u += 64u) {
            let blk = u / 4u;
            let j = u % 4u;
            let v = unit_vals(row * nb + blk, j);
            let xb = xo + blk * 32u;
            for (var e = 0u; e < 8u; e++) {
                acc += v[e] * x[xb + unit_index(j, e)];
            }
        }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part[lid] += part[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && row < p.rows) {
        y[t * p.rows + row] = part[0];
    }
}
