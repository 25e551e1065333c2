// Q4_1 weights as stored in GGUF: 32-element blocks of 5 u32 words (f16 d and f16 m in word 0,
// then 16 bytes of nibbles: low nibbles are elements 0-15, high nibbles 16-31; value = d*q + m).
// Unit j (0..4) of a block is the 8 elements with nibbles in qs word j.
fn unit_vals(blk: u32, j: u32) -> array<f32, 8> {
    let base = blk * 5u;
    let dm = unpack2x16float(w[base]);
    let q = w[base + 1u + j];
    var v: array<f32, 8>;
    for (var i = 0u; i < 4u; i++) {
        let b = (q >> (8u * i)) & 0xffu;
        v[i] = dm.x * f32(b & 0xfu) + dm.y;
        v[4u + i] = dm.x * f32(b >> 4u) + dm.y;
    }
    return v;
}
fn unit_index(j: u32, e: u32) -> u32 {
    return select(12u + 4u * j + e, 4u * j + e, e < 4u);
}
fn elem(blk: u32, i: u32) -> f32 {
    let base = blk * 5u;
    let dm = unpack2x16float(w[base]);
    let b = (w[base + 1u + (i % 16u) / 4u] >> (8u * (i % 4u))) & 0xffu;
    let q = select(b >> 4u, b & 0xfu, i < 16u);
    return dm.x * f32(q) + dm.y;
}
