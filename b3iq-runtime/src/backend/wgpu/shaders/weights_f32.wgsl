// F32 weights: 32 u32 words per 32-element block.
fn unit_vals(blk: u32, j: u32) -> array<f32, 8> {
    let base = blk * 32u + 8u * j;
    var v: array<f32, 8>;
    for (var e = 0u; e < 8u; e++) {
        v[e] = bitcast<f32>(w[base + e]);
    }
    return v;
}
fn unit_index(j: u32, e: u32) -> u32 {
    return 8u * j + e;
}
fn elem(blk: u32, i: u32) -> f32 {
    return bitcast<f32>(w[blk * 32u + i]);
}
