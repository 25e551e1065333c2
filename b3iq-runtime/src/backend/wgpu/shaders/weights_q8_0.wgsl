// Q8_0 weights repacked at load to 9 u32 words per 32-element block: word 0 holds the f16 scale
// d in its low half, words 1-8 the 32 int8 quants (value = d*q). Unit j is elements 8j..8j+7.
fn unit_vals(blk: u32, j: u32) -> array<f32, 8> {
    let base = blk * 9u;
    let d = unpack2x16float(w[base]).x;
    var v: array<f32, 8>;
    for (var m = 0u; m < 2u; m++) {
        let q = bitcast<i32>(w[base + 1u + 2u * j + m]);
        for (var i = 0u; i < 4u; i++) {
            v[4u * m + i] = d * f32(extractBits(q, 8u * i, 8u));
        }
    }
    return v;
}
fn unit_index(j: u32, e: u32) -> u32 {
    return 8u * j + e;
}
fn elem(blk: u32, i: u32) -> f32 {
    let base = blk * 9u;
    let d = unpack2x16float(w[base]).x;
    let q = bitcast<i32>(w[base + 1u + i / 4u]);
    return d * f32(extractBits(q, 8u * (i % 4u), 8u));
}
