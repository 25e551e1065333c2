// Q4_1 weights as stored in GGUF: 32-element blocks of 5 u32 words (f16 d and f16 m in word 0,
// then 16 bytes of nibbles: low nibbles are elements 0-15, high nibbles 16-31; value = d*q + m).
// Unit j (0..4) of a block is the 8 elements with nibbles in qs word j: `lo` holds elements
// 4j..4j+3, `hi` elements 16+4j..16+4j+3 (unit_offsets gives both starts).
struct Unit { lo: vec4<f32>, hi: vec4<f32> }
fn unit(blk: u32, j: u32) -> Unit {
    let base = blk * 5u;
    let dm = unpack2x16float(w[base]);
    let q = w[base + 1u + j];
    let b = (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
    return Unit(dm.x * vec4<f32>(b & vec4<u32>(0xfu)) + dm.y, dm.x * vec4<f32>(b >> vec4<u32>(4u)) + dm.y);
}
fn unit_offsets(j: u32) -> vec2<u32> {
    return vec2<u32>(4u * j, 16u + 4u * j);
}
fn elem(blk: u32, i: u32) -> f32 {
    let base = blk * 5u;
    let dm = unpack2x16float(w[base]);
    let b = (w[base + 1u + (i % 16u) / 4u] >> (8u * (i % 4u))) & 0xffu;
    let q = select(b >> 4u, b & 0xfu, i < 16u);
    return dm.x * f32(q) + dm.y;
}
