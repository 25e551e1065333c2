// F16 weights: 16 u32 words per 32-element block, two halves per word (low half first).
fn unit_vals(blk: u32, j: u32) -> array<f32, 8> {
    let base = blk * 16u + 4u * j;
    var v: array<f32, 8>;
    for (var m = 0u; m < 4u; m++) {
        let h = unpack2x16float(w[base + m]);
        v[2u * m] = h.x;
        v[2u * m + 1u] = h.y;
    }
    return v;
}
fn unit_index(j: u32, e: u32) -> u32 {
    return 8u * j + e;
}
fn elem(blk: u32, i: u32) -> f32 {
    let h = unpack2x16float(w[blk * 16u + i / 2u]);
    return select(h.y, h.x, i % 2u == 0u);
}
