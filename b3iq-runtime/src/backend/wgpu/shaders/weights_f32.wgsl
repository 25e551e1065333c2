// F32 weights: 32 u32 words per 32-element block. Unit j is elements 8j..8j+7.
struct Unit { lo: vec4<f32>, hi: vec4<f32> }
fn unit(blk: u32, j: u32) -> Unit {
    let b = blk * 32u + 8u * j;
    return Unit(
        bitcast<vec4<f32>>(vec4<u32>(w[b], w[b + 1u], w[b + 2u], w[b + 3u])),
        bitcast<vec4<f32>>(vec4<u32>(w[b + 4u], w[b + 5u], w[b + 6u], w[b + 7u])),
    );
}
fn unit_offsets(j: u32) -> vec2<u32> {
    return vec2<u32>(8u * j, 8u * j + 4u);
}
fn elem(blk: u32, i: u32) -> f32 {
    return bitcast<f32>(w[blk * 32u + i]);
}
