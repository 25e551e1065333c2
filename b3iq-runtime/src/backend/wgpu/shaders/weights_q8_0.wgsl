// Q8_0 weights repacked at load to 9 u32 words per 32-element block: word 0 holds the f16 scale
// d in its low half, words 1-8 the 32 int8 quants (value = d*q). Unit j is elements 8j..8j+7
// (`lo` 8j..8j+3, `hi` 8j+4..8j+7).
struct Unit { lo: vec4<f32>, hi: vec4<f32> }
fn i8x4(word: u32) -> vec4<f32> {
    // Each byte to the top, then an arithmetic shift back sign-extends it.
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
fn unit(blk: u32, j: u32) -> Unit {
    let base = blk * 9u;
    let d = unpack2x16float(w[base]).x;
    return Unit(d * i8x4(w[base + 1u + 2u * j]), d * i8x4(w[base + 2u + 2u * j]));
}
fn unit_offsets(j: u32) -> vec2<u32> {
    return vec2<u32>(8u * j, 8u * j + 4u);
}
fn elem(blk: u32, i: u32) -> f32 {
    let base = blk * 9u;
    let d = unpack2x16float(w[base]).x;
    let q = bitcast<i32>(w[base + 1u + i / 4u]);
    return d * f32(extractBits(q, 8u * (i % 4u), 8u));
}
