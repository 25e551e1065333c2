//! Device error paths and every kernel against a CPU reference on random inputs, with shapes
//! that are not multiples of the workgroup size (64) or the matmul tile (8). They run on
//! whatever adapter wgpu finds (lavapipe in CI); no adapter is a failure, not a skip.

use std::sync::OnceLock;

use super::device::{GpuDevice, WgpuError};
use super::kernels::{run_ops, step_words, Count, GpuMatrix, Kernels, WeightType};
use super::reference as cpu;

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

fn dev() -> &'static GpuDevice {
    static DEV: OnceLock<Result<GpuDevice, WgpuError>> = OnceLock::new();
    match DEV.get_or_init(GpuDevice::open) {
        Ok(d) => d,
        Err(e) => panic!("the wgpu tests need a GPU adapter (lavapipe in CI): {e}"),
    }
}

fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| Kernels::new(dev()))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read(buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    let staging = dev().readback("test readback", (len * 4) as u64).unwrap();
    let mut out = Vec::new();
    dev().read_f32(buf, &staging, len, &mut out).unwrap();
    out
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= tol * scale,
            "{what}: element {i} is {g}, the CPU reference says {w} (tolerance {tol} x {scale})"
        );
    }
}

fn step_buf(
    batch: usize,
    tokens: &[u32],
    pos: &[u32],
    seq: &[u32],
    out_rows: &[u32],
) -> wgpu::Buffer {
    dev()
        .storage_init(
            "step",
            &u32_bytes(&step_words(batch, tokens, pos, seq, out_rows)),
        )
        .unwrap()
}

/// Random weights of `ty` (`rows x k`) as GGUF bytes and their dequantized values.
fn random_weights(ty: WeightType, rows: usize, k: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let values = rng.vec(rows * k);
    let bytes = cpu::quantize(ty, &values);
    let deq = cpu::dequantize(ty, &bytes, rows * k);
    (bytes, deq)
}

#[test]
fn broken_kernels_are_typed_errors() {
    let e = dev().compute_pipeline("broken", "fn main( {").unwrap_err();
    assert!(
        matches!(&e, WgpuError::ShaderCompile { kernel, .. } if kernel == "broken"),
        "{e}"
    );
    // Parses, but a u32 is assigned to an f32 (fails validation).
    let bad_type = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
                    @compute @workgroup_size(1) fn main() { y[0] = 1u; }";
    let e = dev().compute_pipeline("bad_type", bad_type).unwrap_err();
    assert!(
        matches!(&e, WgpuError::ShaderCompile { message, .. } if !message.is_empty()),
        "{e}"
    );
    assert!(e.to_string().contains("bad_type"), "{e}");
    // The device still works afterwards.
    dev().check().unwrap();
}

#[test]
fn buffers_past_the_device_limits_are_out_of_memory() {
    let too_big = dev().limits().max_buffer_size.saturating_add(4);
    let e = dev().storage("huge activations", too_big).unwrap_err();
    assert!(
        matches!(&e, WgpuError::OutOfMemory { what, bytes, .. } if what == "huge activations" && *bytes >= too_big),
        "{e}"
    );
    assert!(e.to_string().contains("out of GPU memory"), "{e}");
    dev().check().unwrap();
}

#[test]
fn an_adapter_that_is_not_there_is_no_adapter() {
    let e = GpuDevice::open_matching(Some("no-such-adapter-b3iq")).unwrap_err();
    assert!(
        matches!(&e, WgpuError::NoAdapter(m) if m.contains("no-such-adapter-b3iq")),
        "{e}"
    );
    assert!(e.to_string().contains("mesa-vulkan-drivers"), "{e}");
}

#[test]
fn a_lost_device_fails_every_later_call_without_panicking() {
    let d = GpuDevice::open().unwrap();
    let k = Kernels::new(&d);
    let x = d.storage_init("x", &f32_bytes(&[1.0; 64])).unwrap();
    let y = d.storage_init("y", &f32_bytes(&[2.0; 64])).unwrap();
    let add = k.add(&x, &y, 64).unwrap();
    run_ops(&d, std::slice::from_ref(&add), 1, 0).unwrap();
    d.destroy();
    assert!(d.is_lost());
    let e = run_ops(&d, &[add], 1, 0).unwrap_err();
    assert!(matches!(&e, WgpuError::DeviceLost(_)), "{e}");
    assert!(matches!(
        d.storage("after", 64),
        Err(WgpuError::DeviceLost(_))
    ));
    assert!(matches!(
        k.swiglu(&x, &y, 64),
        Err(WgpuError::DeviceLost(_))
    ));
}

/// Matrix-vector (1 item) and matrix-matrix (11 items: one full tile of 8 and a partial one)
/// products for every weight type, against f64 sums of the CPU-dequantized weights.
#[test]
fn linear_layers_match_the_cpu_for_every_weight_type() {
    let mut rng = Rng::new(1);
    for ty in [
        WeightType::Q4_1,
        WeightType::Q8_0,
        WeightType::F16,
        WeightType::F32,
    ] {
        let (rows, k) = (97usize, 96usize);
        let (bytes, w) = random_weights(ty, rows, k, &mut rng);
        let m = GpuMatrix::upload(dev(), "w", ty, rows as u32, k as u32, &bytes).unwrap();
        for n in [1usize, 11] {
            let x = rng.vec(n * k);
            let xb = dev().storage_init("x", &f32_bytes(&x)).unwrap();
            let yb = dev().storage("y", (n * rows * 4) as u64).unwrap();
            let tokens = vec![0u32; n];
            let step = step_buf(16, &tokens, &tokens, &tokens, &[]);
            let op = kernels()
                .linear(&m, &xb, &yb, &step, Count::Tokens)
                .unwrap();
            run_ops(dev(), &[op], n as u32, 0).unwrap();
            let want = cpu::linear(&w, rows, k, &x, n);
            assert_close(
                &read(&yb, n * rows),
                &want,
                1e-5,
                &format!("{ty:?} linear, {n} items"),
            );
        }
    }
}

/// More rows than one dispatch dimension holds (65,535 workgroups): the z dimension takes the rest.
#[test]
fn matvec_covers_rows_past_one_dispatch_dimension() {
    let mut rng = Rng::new(2);
    let (rows, k) = (65_600usize, 32usize);
    let (bytes, w) = random_weights(WeightType::Q8_0, rows, k, &mut rng);
    let m = GpuMatrix::upload(
        dev(),
        "big",
        WeightType::Q8_0,
        rows as u32,
        k as u32,
        &bytes,
    )
    .unwrap();
    let x = rng.vec(k);
    let xb = dev().storage_init("x", &f32_bytes(&x)).unwrap();
    let yb = dev().storage("y", (rows * 4) as u64).unwrap();
    let step = step_buf(1, &[0], &[0], &[0], &[0]);
    let op = kernels()
        .linear(&m, &xb, &yb, &step, Count::Outputs)
        .unwrap();
    run_ops(dev(), &[op], 1, 1).unwrap();
    assert_close(
        &read(&yb, rows),
        &cpu::linear(&w, rows, k, &x, 1),
        1e-5,
        "65,600-row matvec",
    );
}

#[test]
fn embedding_lookup_matches_the_cpu() {
    let mut rng = Rng::new(3);
    for ty in [WeightType::Q8_0, WeightType::Q4_1, WeightType::F32] {
        let (vocab, dim) = (101usize, 96usize);
        let (bytes, w) = random_weights(ty, vocab, dim, &mut rng);
        let m = GpuMatrix::upload(dev(), "embd", ty, vocab as u32, dim as u32, &bytes).unwrap();
        let tokens = [5u32, 100, 0, 37, 5];
        let out = dev()
            .storage("out", (tokens.len() * dim * 4) as u64)
            .unwrap();
        let step = step_buf(8, &tokens, &[0; 5], &[0; 5], &[]);
        let op = kernels().get_rows(&m, &out, &step, 8).unwrap();
        run_ops(dev(), &[op], tokens.len() as u32, 0).unwrap();
        let want: Vec<f64> = tokens
            .iter()
            .flat_map(|&t| {
                w[t as usize * dim..(t as usize + 1) * dim]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        assert_close(
            &read(&out, tokens.len() * dim),
            &want,
            0.0,
            &format!("{ty:?} get_rows"),
        );
    }
}

#[test]
fn rms_norm_matches_the_cpu() {
    let mut rng = Rng::new(4);
    let (n, dim) = (3usize, 150usize);
    let x = rng.vec(n * dim);
    let w = rng.vec(dim);
    let xb = dev().storage_init("x", &f32_bytes(&x)).unwrap();
    let wb = dev().storage_init("w", &f32_bytes(&w)).unwrap();
    let yb = dev().storage("y", (n * dim * 4) as u64).unwrap();
    let op = kernels()
        .rms_norm(&wb, &xb, &yb, dim as u32, 1e-5, Count::Tokens)
        .unwrap();
    run_ops(dev(), &[op], n as u32, 0).unwrap();
    assert_close(
        &read(&yb, n * dim),
        &cpu::rms_norm(&x, &w, dim, 1e-5),
        1e-5,
        "rms_norm",
    );
}

#[test]
fn rope_matches_the_cpu() {
    let mut rng = Rng::new(5);
    let (n_head, head_dim, n_dims) = (3u32, 48u32, 32u32);
    let pos = [0u32, 1, 17, 1000, 4095];
    let x = rng.vec(pos.len() * (n_head * head_dim) as usize);
    let xb = dev().storage_init("x", &f32_bytes(&x)).unwrap();
    let step = step_buf(8, &[0; 5], &pos, &[0; 5], &[]);
    let op = kernels()
        .rope(&xb, &step, n_head, head_dim, n_dims, 100_000.0, 8)
        .unwrap();
    run_ops(dev(), &[op], pos.len() as u32, 0).unwrap();
    let want = cpu::rope(
        &x,
        &pos,
        n_head as usize,
        head_dim as usize,
        n_dims as usize,
        100_000.0,
    );
    assert_close(&read(&xb, x.len()), &want, 2e-4, "rope");
}

/// Two sequences in one batch: 70 prompt tokens of sequence 1 (more than one 64-key chunk) and
/// 5 of sequence 0, 6 query heads over 2 KV heads of 80 values.
#[test]
fn kv_store_and_attention_match_the_cpu() {
    let mut rng = Rng::new(6);
    let (n_head, n_kv, hd, ctx, batch) = (6usize, 2usize, 80usize, 150usize, 80usize);
    let kv_dim = n_kv * hd;
    let mut seq = vec![1u32; 70];
    seq.extend([0u32; 5]);
    let mut pos: Vec<u32> = (0..70).collect();
    pos.extend(0..5);
    let n = seq.len();
    let q = rng.vec(n * n_head * hd);
    let k = rng.vec(n * kv_dim);
    let v = rng.vec(n * kv_dim);
    let (qb, kb, vb) = (
        dev().storage_init("q", &f32_bytes(&q)).unwrap(),
        dev().storage_init("k", &f32_bytes(&k)).unwrap(),
        dev().storage_init("v", &f32_bytes(&v)).unwrap(),
    );
    let kc = dev().storage("kc", (2 * ctx * kv_dim * 4) as u64).unwrap();
    let vc = dev().storage("vc", (2 * ctx * kv_dim * 4) as u64).unwrap();
    let out = dev().storage("out", (n * n_head * hd * 4) as u64).unwrap();
    let step = step_buf(batch, &vec![0; n], &pos, &seq, &[]);
    let ops = [
        kernels()
            .kv_store(
                &kb,
                &vb,
                &kc,
                &vc,
                &step,
                kv_dim as u32,
                ctx as u32,
                batch as u32,
            )
            .unwrap(),
        kernels()
            .attention(
                &qb,
                &kc,
                &vc,
                &out,
                &step,
                n_head as u32,
                n_kv as u32,
                hd as u32,
                ctx as u32,
                batch as u32,
            )
            .unwrap(),
    ];
    run_ops(dev(), &ops, n as u32, 0).unwrap();
    // f16 accumulation: a score that differs in its last f32 bit can move a value by an f16 ulp.
    let want = cpu::attention(&q, &k, &v, &pos, &seq, n_head, n_kv, hd);
    assert_close(&read(&out, n * n_head * hd), &want, 2e-3, "attention");
    // A head size the kernel cannot hold is refused.
    let e = kernels()
        .attention(
            &qb,
            &kc,
            &vc,
            &out,
            &step,
            2,
            2,
            256,
            ctx as u32,
            batch as u32,
        )
        .unwrap_err();
    assert!(matches!(e, WgpuError::Unsupported(_)), "{e}");
}

#[test]
fn swiglu_add_and_gather_match_the_cpu() {
    let mut rng = Rng::new(7);
    let (n, ff) = (3usize, 200usize);
    let g = rng.vec(n * ff);
    let u = rng.vec(n * ff);
    let gb = dev().storage_init("g", &f32_bytes(&g)).unwrap();
    let ub = dev().storage_init("u", &f32_bytes(&u)).unwrap();
    let out = dev().storage("gathered", (2 * ff * 4) as u64).unwrap();
    let step = step_buf(4, &[0; 3], &[0; 3], &[0; 3], &[2, 0]);
    let ops = [
        kernels().swiglu(&gb, &ub, ff as u32).unwrap(),
        kernels().add(&gb, &ub, ff as u32).unwrap(),
        kernels().gather(&gb, &out, &step, ff as u32, 4).unwrap(),
    ];
    run_ops(dev(), &ops, n as u32, 2).unwrap();
    let want: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| {
            let (g, u) = (g as f64, u as f64);
            g / (1.0 + (-g).exp()) * u + u
        })
        .collect();
    assert_close(&read(&gb, n * ff), &want, 1e-5, "swiglu + add");
    let rows: Vec<f64> = want[2 * ff..3 * ff]
        .iter()
        .chain(&want[..ff])
        .copied()
        .collect();
    assert_close(&read(&out, 2 * ff), &rows, 1e-5, "gather");
}

#[test]
fn activation_rounding_matches_llama_cpps_q8_quantizer() {
    let mut rng = Rng::new(8);
    let (n, dim) = (3usize, 96usize);
    let mut x: Vec<f32> = rng.vec(n * dim).iter().map(|v| v * 7.0).collect();
    x[5] = 0.0;
    x[32..64].iter_mut().for_each(|v| *v = 0.0); // an all-zero block stays zero
    let xb = dev().storage_init("x", &f32_bytes(&x)).unwrap();
    let op = kernels()
        .quantize_q8(&xb, dim as u32, Count::Tokens)
        .unwrap();
    run_ops(dev(), &[op], n as u32, 0).unwrap();
    let want: Vec<f64> = cpu::quantize_activations(&x)
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close(&read(&xb, n * dim), &want, 1e-6, "quantize_q8");
    assert!(want[32..64].iter().all(|&v| v == 0.0));
}

#[test]
fn packing_refuses_a_size_that_is_not_whole_blocks() {
    let e = WeightType::Q8_0.pack(&[0u8; 35], 1).unwrap_err();
    assert!(matches!(e, WgpuError::Unsupported(_)), "{e}");
    assert_eq!(WeightType::Q8_0.pack(&[7u8; 68], 2).unwrap().len(), 72);
    let e = GpuMatrix::upload(dev(), "odd", WeightType::F32, 2, 33, &[0u8; 264]).unwrap_err();
    assert!(matches!(e, WgpuError::Unsupported(_)), "{e}");
}
