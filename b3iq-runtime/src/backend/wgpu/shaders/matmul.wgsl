// Y[t, r] = sum_k W[r, k] * X[t, k] for a batch of tokens: one thread per (row, tile of 8
// tokens); each weight unit is dequantized once and used for the whole tile.
// The token count is step[p.count_slot] (0: the batch's tokens, 1: its output rows).
struct P { rows: u32, k: u32, count_slot: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

//!WEIGHTS

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    let t0 = gid.y * 8u;
    let nt = step[p.count_slot];
    if (row >= p.rows || t0 >= nt) {
        return;
    }
    let tn = min(8u, nt - t0);
    let nb = p.k / 32u;
    var acc: array<f32, 8>;
    for (var blk = 0u; blk < nb; blk++) {
        for (var j = 0u; j < 4u; j++) {
            let v = unit_vals(row * nb + blk, j);
            for (var e = 0u; e < 8u; e++) {
                let kk = blk * 32u + unit_index(j, e);
                for (var tt = 0u; tt < tn; tt++) {
                    acc[tt] += v[e] * x[(t0 + tt) * p.k + kk];
                }
            }
        }
    }
    for (var tt = 0u; tt < tn; tt++) {
        y[(t0 + tt) * p.rows + row] = acc[tt];
    }
}
