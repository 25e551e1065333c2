//! Hidden-state fingerprints (TOPLOC-style, scheme `b3iq-toploc-v1`): a small commitment to
//! the final-norm hidden state a host computed at its generated positions, which a verifier
//! compares against its own recomputation.
//!
//! Per chunk of up to [`CHUNK_TOKENS`] generated positions, the chunk's hidden states
//! (`rows × hidden` f32, row-major) are rounded to bf16 (round to nearest even); the
//! [`TOP_K`] largest by magnitude (ties: lower flat index first) are committed as a polynomial
//! over GF([`PRIME`]) through the points `(index mod m, bf16 bits)`, where `m` is the largest
//! modulus `≤ PRIME` that keeps the indices distinct. Encoding ([`ChunkProof::encode`]):
//! `m` as u16 BE, then the `k` monomial coefficients (lowest degree first) as u16 BE:
//! `2 + 2k` bytes, 258 for k = 128.
//!
//! Comparison ([`compare`]): the verifier takes its own top-k indices, evaluates the committed
//! polynomial there, and counts sign/exponent mismatches and the absolute differences of the
//! 7-bit mantissas among the exponent-matching entries (mean and median). A [`Profile`] names
//! the thresholds. Constants follow upstream TOPLOC (PrimeIntellect-ai/toploc, `poly.cpp`,
//! `vllm_validate_poly.py`): prime 65,497, k = 128, 32 tokens per chunk.

use crate::error::{CoreError, Result};

/// The field prime (65,497, as upstream TOPLOC).
pub const PRIME: u32 = 65_497;
/// Values committed per chunk.
pub const TOP_K: usize = 128;
/// Generated positions per chunk.
pub const CHUNK_TOKENS: usize = 32;
/// The scheme name attestations carry.
pub const SCHEME: &str = "b3iq-toploc-v1";

/// Rounds an f32 to bf16 bits (round to nearest, ties to even; NaN stays a quiet NaN).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7FFF + lsb) >> 16) as u16
}

fn mul(a: u32, b: u32) -> u32 {
    ((u64::from(a) * u64::from(b)) % u64::from(PRIME)) as u32
}

fn pow(mut a: u32, mut e: u32) -> u32 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, a);
        }
        a = mul(a, a);
        e >>= 1;
    }
    r
}

fn inv(a: u32) -> u32 {
    pow(a, PRIME - 2)
}

fn sub(a: u32, b: u32) -> u32 {
    (a + PRIME - b) % PRIME
}

/// One chunk's commitment: the modulus and the polynomial's coefficients (lowest degree first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProof {
    /// The modulus applied to flat indices before evaluation (`≤ PRIME`).
    pub modulus: u16,
    /// Coefficients in GF(PRIME), lowest degree first.
    pub coeffs: Vec<u16>,
}

impl ChunkProof {
    /// Commits to a chunk of hidden states: `values` is `rows × hidden` f32, row-major.
    /// `None` for an empty chunk or one whose values are all non-finite.
    pub fn commit(values: &[f32]) -> Option<Self> {
        let top = top_k(values, TOP_K);
        if top.is_empty() {
            return None;
        }
        let modulus = modulus_for(&top.iter().map(|&(i, _)| i).collect::<Vec<_>>())?;
        let xs: Vec<u32> = top
            .iter()
            .map(|&(i, _)| (i % modulus as usize) as u32)
            .collect();
        let ys: Vec<u32> = top.iter().map(|&(_, v)| u32::from(v) % PRIME).collect();
        Some(Self {
            modulus,
            coeffs: interpolate(&xs, &ys)
                .into_iter()
                .map(|c| c as u16)
                .collect(),
        })
    }

    /// The claimed bf16 bits at a flat index.
    pub fn eval(&self, index: usize) -> u16 {
        let x = (index % usize::from(self.modulus.max(1))) as u32;
        let mut acc = 0u32;
        for &c in self.coeffs.iter().rev() {
            acc = (mul(acc, x) + u32::from(c)) % PRIME;
        }
        acc as u16
    }

    /// `m` as u16 BE, then each coefficient as u16 BE.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.modulus.to_be_bytes());
        for c in &self.coeffs {
            out.extend_from_slice(&c.to_be_bytes());
        }
    }

    /// Decodes one proof of `2 + 2k` bytes.
    ///
    /// # Errors
    /// [`CoreError::InvalidField`] for an odd or short length, more than [`TOP_K`] coefficients, a
    /// zero modulus or a value outside the field.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 4 || bytes.len() % 2 != 0 || bytes.len() > 2 + 2 * TOP_K {
            return Err(CoreError::InvalidField {
                field: "chunk_proof",
                reason: format!(
                    "a chunk proof is 2 + 2k bytes with 1 <= k <= {TOP_K}, got {} bytes",
                    bytes.len()
                ),
            });
        }
        let words: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect();
        let modulus = words[0];
        if modulus == 0 || u32::from(modulus) > PRIME {
            return Err(CoreError::InvalidField {
                field: "chunk_proof",
                reason: format!("chunk proof modulus must be in 1..={PRIME}, got {modulus}"),
            });
        }
        if words[1..].iter().any(|&c| u32::from(c) >= PRIME) {
            return Err(CoreError::InvalidField {
                field: "chunk_proof",
                reason: format!("chunk proof coefficients must be below {PRIME}"),
            });
        }
        Ok(Self {
            modulus,
            coeffs: words[1..].to_vec(),
        })
    }
}

/// Commits to the hidden states of consecutive generated positions (`rows × dim` f32,
/// row-major): one proof per [`CHUNK_TOKENS`] rows (the last chunk may be shorter).
pub fn commit_positions(hidden: &[f32], dim: usize) -> Vec<ChunkProof> {
    if dim == 0 {
        return Vec::new();
    }
    hidden
        .chunks(CHUNK_TOKENS * dim)
        .filter_map(ChunkProof::commit)
        .collect()
}

/// The `k` entries of largest magnitude after bf16 rounding, as `(flat index, bf16 bits)`,
/// largest first (ties: lower index first). Non-finite values are skipped.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, u16)> {
    let mut v: Vec<(usize, u16)> = values
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .map(|(i, &x)| (i, bf16_bits(x)))
        .collect();
    let key = |&(i, b): &(usize, u16)| (std::cmp::Reverse(b & 0x7FFF), i);
    if v.len() > k {
        v.select_nth_unstable_by_key(k, key);
        v.truncate(k);
    }
    v.sort_unstable_by_key(key);
    v
}

/// The largest modulus `≤ PRIME` under which the indices stay distinct.
fn modulus_for(indices: &[usize]) -> Option<u16> {
    let mut seen = std::collections::HashSet::with_capacity(indices.len());
    (1..=PRIME as usize).rev().find_map(|m| {
        seen.clear();
        indices
            .iter()
            .all(|&i| seen.insert(i % m))
            .then_some(m as u16)
    })
}

/// Newton interpolation over GF(PRIME) through distinct `xs`, returned in monomial form
/// (lowest degree first).
fn interpolate(xs: &[u32], ys: &[u32]) -> Vec<u32> {
    let n = xs.len();
    let mut dd = ys.to_vec();
    for j in 1..n {
        for i in (j..n).rev() {
            dd[i] = mul(sub(dd[i], dd[i - 1]), inv(sub(xs[i], xs[i - j])));
        }
    }
    // Horner on the Newton form: p = dd[n-1]; p = p*(x - xs[i]) + dd[i].
    let mut p = vec![0u32; n];
    p[0] = dd[n - 1];
    for (deg, i) in (0..n - 1).rev().enumerate() {
        // p *= (x - xs[i]); p has degree `deg` here.
        let mut q = vec![0u32; n];
        for d in 0..=deg {
            q[d + 1] = (q[d + 1] + p[d]) % PRIME;
            q[d] = sub(q[d], mul(p[d], xs[i]));
        }
        q[0] = (q[0] + dd[i]) % PRIME;
        p = q;
    }
    p
}

/// The comparison of one chunk: a verifier's recomputed hidden states against a proof.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkMetrics {
    /// Entries (of the verifier's top-k) whose sign or exponent differ from the claim.
    pub exp_mismatches: u32,
    /// Mean |Δ mantissa| (7-bit units) over the exponent-matching entries.
    pub mantissa_mean: f64,
    /// Median |Δ mantissa| over the exponent-matching entries.
    pub mantissa_median: f64,
    /// Entries compared (`min(TOP_K, values)`).
    pub compared: u32,
}

/// Compares a verifier's recomputed chunk (`rows × hidden` f32, row-major, same layout as the
/// host's) against the host's proof.
pub fn compare(proof: &ChunkProof, values: &[f32]) -> ChunkMetrics {
    let top = top_k(values, TOP_K);
    let mut diffs = Vec::with_capacity(top.len());
    let mut exp_mismatches = 0u32;
    for &(i, mine) in &top {
        let claim = proof.eval(i);
        if (mine >> 7) != (claim >> 7) {
            exp_mismatches += 1;
        } else {
            diffs.push(u32::from((mine & 0x7F).abs_diff(claim & 0x7F)));
        }
    }
    diffs.sort_unstable();
    let mean = if diffs.is_empty() {
        f64::INFINITY
    } else {
        diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64
    };
    let median = match diffs.len() {
        0 => f64::INFINITY,
        n if n % 2 == 1 => f64::from(diffs[n / 2]),
        n => (f64::from(diffs[n / 2 - 1]) + f64::from(diffs[n / 2])) / 2.0,
    };
    ChunkMetrics {
        exp_mismatches,
        mantissa_mean: mean,
        mantissa_median: median,
        compared: top.len() as u32,
    }
}

/// A named, versioned tolerance profile: fingerprint thresholds per chunk and sampling-replay
/// tolerances per position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// The name attestations carry.
    pub name: &'static str,
    /// Most exponent mismatches per chunk (of `TOP_K`).
    pub max_exp_mismatches: u32,
    /// Largest mean mantissa difference per chunk.
    pub max_mantissa_mean: f64,
    /// Largest median mantissa difference per chunk.
    pub max_mantissa_median: f64,
    /// Sampling replay tolerance in probability mass ([`crate::sampling::check_draw`]).
    pub draw_eps: f64,
    /// Greedy replay tolerance in logits ([`crate::sampling::check_greedy`]).
    pub greedy_delta: f32,
}

impl Profile {
    /// Same CPU ISA, same llama.cpp build, verifier prefill in chunks below 64 tokens (the
    /// runtime's verifier does this). Calibrated (`scripts/calibrate-verification`, results in
    /// `docs/verification.md`): 32 honest runs (threads 1 and 2, alone and beside 3 batch
    /// neighbours, greedy and T=0.9) were bit-identical (0 exponent mismatches, mantissa 0);
    /// the weakest attack, a Q8_0 requantization, scored 2-11 exponent mismatches and a mean
    /// mantissa error of 2.5-3.8 in its worst chunk. Thresholds sit between.
    pub const CPU_SAME_ISA_V1: Profile = Profile {
        name: "cpu-same-isa-v1",
        max_exp_mismatches: 2,
        max_mantissa_mean: 1.0,
        max_mantissa_median: 1.0,
        draw_eps: 1e-3,
        greedy_delta: 0.05,
    };
    /// Across devices: upstream TOPLOC's thresholds (≤ 38 exponent mismatches of 128, mean
    /// ≤ 10, median ≤ 8).
    pub const CROSS_DEVICE_V1: Profile = Profile {
        name: "cross-device-v1",
        max_exp_mismatches: 38,
        max_mantissa_mean: 10.0,
        max_mantissa_median: 8.0,
        draw_eps: 1e-2,
        greedy_delta: 0.5,
    };

    /// The profile of a name.
    pub fn by_name(name: &str) -> Option<Profile> {
        [Self::CPU_SAME_ISA_V1, Self::CROSS_DEVICE_V1]
            .into_iter()
            .find(|p| p.name == name)
    }

    /// Whether a chunk's metrics are within this profile.
    pub fn accepts(&self, m: &ChunkMetrics) -> bool {
        m.exp_mismatches <= self.max_exp_mismatches
            && m.mantissa_mean <= self.max_mantissa_mean
            && m.mantissa_median <= self.max_mantissa_median
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u32, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 8.0
            })
            .collect()
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        assert_eq!(bf16_bits(-2.0), 0xC000);
        // 1 + 2^-8 is a tie between 1.0 and 1 + 2^-7: to even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    }

    #[test]
    fn proof_roundtrip_and_self_compare() {
        let v = chunk(7, 32 * 576);
        let p = ChunkProof::commit(&v).unwrap();
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        assert_eq!(bytes.len(), 258);
        assert_eq!(ChunkProof::decode(&bytes).unwrap(), p);
        for (i, b) in top_k(&v, TOP_K) {
            assert_eq!(p.eval(i), b);
        }
        let m = compare(&p, &v);
        assert_eq!(m.exp_mismatches, 0);
        assert_eq!(m.mantissa_mean, 0.0);
        assert!(Profile::CPU_SAME_ISA_V1.accepts(&m));
    }

    #[test]
    fn different_states_fail_and_small_drift_passes() {
        let v = chunk(7, 32 * 576);
        let p = ChunkProof::commit(&v).unwrap();
        let other = chunk(8, 32 * 576);
        let m = compare(&p, &other);
        assert!(m.exp_mismatches > 100, "{m:?}");
        assert!(!Profile::CROSS_DEVICE_V1.accepts(&m));
        let drift: Vec<f32> = v.iter().map(|x| x * (1.0 + 1e-6)).collect();
        assert!(Profile::CPU_SAME_ISA_V1.accepts(&compare(&p, &drift)));
    }

    #[test]
    fn short_chunks_and_bad_bytes() {
        let v = chunk(1, 10);
        let p = ChunkProof::commit(&v).unwrap();
        assert_eq!(p.coeffs.len(), 10);
        assert_eq!(compare(&p, &v).exp_mismatches, 0);
        assert!(ChunkProof::commit(&[]).is_none());
        assert!(ChunkProof::decode(&[0, 0, 0, 1]).is_err());
        assert!(ChunkProof::decode(&[0, 1, 0]).is_err());
        assert!(ChunkProof::decode(&[0, 1, 0xFF, 0xFF]).is_err());
        assert!(ChunkProof::decode(&vec![0; 260]).is_err());
        // Indices that collide under PRIME need a smaller modulus.
        let idx = [0usize, PRIME as usize];
        assert_eq!(modulus_for(&idx), Some((PRIME - 1) as u16));
    }
}
