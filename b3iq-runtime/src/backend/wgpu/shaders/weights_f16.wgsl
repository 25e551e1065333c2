// F16 weights: 16 u32 words per 32-element block, two halves per word (low half first).
// Unit j is elements 8j..8j+7.
struct Unit { lo: vec4<f32>, hi: vec4<f32> }
fn unit(blk: u32, j: u32) -> Unit {
    let base = blk * 16u + 4u * j;
    return Unit(
        vec4<f32>(unpack2x16float(w[base]), unpack2x16float(w[base + 1u])),
        vec4<f32>(unpack2x16float(w[base + 2u]), unpack2x16float(w[base + 3u])),
    );
}
fn unit_offsets(j: u32) -> vec2<u32> {
    return vec2<u32>(8u * j, 8u * j + 4u);
}
fn elem(blk: u32, i: u32) -> f32 {
    let h = unpack2x16float(w[blk * 16u + i / 2u]);
    return select(h.y, h.x, i % 2u == 0u);
}
