//! Replayable sampling: the final, random step of a sampler chain, owned by B3IQ so that a
//! verifier can replay it at any single position.
//!
//! The backend runs its deterministic part of the chain (grammar, penalties, top-k, top-p,
//! min-p, temperature) and hands the surviving candidates here. This stage:
//!
//! 1. orders them canonically: logit descending (IEEE total order), token id ascending;
//! 2. computes the softmax in f64 (max-subtracted, summed in that order);
//! 3. draws position `t`'s uniform from the request's [`SeedKey`]:
//!    `u_t = top-53-bits(blake3_keyed(seed_key, "b3iq-u" ‖ t as u64 LE)) × 2⁻⁵³`, in `[0, 1)`;
//! 4. picks the first candidate whose cumulative probability exceeds `u_t`.
//!
//! `t` is the generated token's index (0 for the first generated token), so draws are
//! position-addressable: checking position 17 needs no draws before it.
//!
//! A verifier recomputes the logits, which may differ slightly from the host's (other batch
//! shapes, threads), so [`check_draw`] does not demand the same pick: it checks that `u_t` lies
//! in the claimed token's CDF interval under the verifier's distribution, widened by a
//! tolerance, and reports a draw within the tolerance of an interval edge as a boundary event
//! (neither proof of cheating nor of honesty). Greedy positions use [`check_greedy`] with a
//! logit-gap tolerance. See `docs/formats.md` ("Inference attestation") and
//! `shared/design/verification.md` §1.3 for the scheme.

/// The domain prefix of the per-position uniform (`"b3iq-u"`).
pub const UNIFORM_DOMAIN: &[u8] = b"b3iq-u";

/// The blake3 `derive_key` context that turns a local request's 64-bit seed into a
/// [`SeedKey`].
pub const LOCAL_SEED_CONTEXT: &str = "b3iq 2026 sampling seed_key from a local request seed v1";

/// A 32-byte key from which every per-position uniform of one request is derived. For network
/// requests the gateway issues it inside its signed ticket (the node cannot grind it); local
/// requests derive it from their seed with [`SeedKey::from_request_seed`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeedKey(pub [u8; 32]);

impl std::fmt::Debug for SeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeedKey({})", hex::encode(self.0))
    }
}

impl SeedKey {
    /// The key of a local request with a 64-bit seed: `blake3::derive_key(LOCAL_SEED_CONTEXT,
    /// seed as u64 LE)`.
    pub fn from_request_seed(seed: u64) -> Self {
        Self(blake3::derive_key(LOCAL_SEED_CONTEXT, &seed.to_le_bytes()))
    }

    /// The uniform of generated position `t`, in `[0, 1)` with 53 bits of precision.
    pub fn uniform(&self, t: u64) -> f64 {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(UNIFORM_DOMAIN);
        h.update(&t.to_le_bytes());
        let out = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&out.as_bytes()[..8]);
        (u64::from_le_bytes(b) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One surviving candidate of the deterministic chain: a token id and its (temperature-scaled)
/// logit. Candidates with a logit of `-inf` (masked by a grammar) have no mass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Token id in the model's vocabulary.
    pub token: u32,
    /// Logit after the deterministic chain.
    pub logit: f32,
}

/// Orders candidates canonically: logit descending (`f32::total_cmp`), then token id
/// ascending; drops candidates whose logit is not finite-or-`+inf` (NaN, `-inf`).
pub fn canonical_order(c: &mut Vec<Candidate>) {
    c.retain(|x| !x.logit.is_nan() && x.logit != f32::NEG_INFINITY);
    c.sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit).then(a.token.cmp(&b.token)));
}

/// The cumulative distribution of canonically ordered candidates: `cdf[j]` is the mass of
/// candidates `0..=j` (softmax in f64, max-subtracted, summed in order); the last entry is 1.
/// Empty for no candidates.
pub fn cumulative(c: &[Candidate]) -> Vec<f64> {
    let Some(first) = c.first() else {
        return Vec::new();
    };
    let max = f64::from(first.logit);
    let mut acc = 0.0f64;
    let mut cdf: Vec<f64> = c
        .iter()
        .map(|x| {
            acc += (f64::from(x.logit) - max).exp();
            acc
        })
        .collect();
    let total = acc;
    for v in &mut cdf {
        *v /= total;
    }
    if let Some(last) = cdf.last_mut() {
        *last = 1.0;
    }
    cdf
}

/// Draws a token: canonical order, f64 softmax, the first candidate whose cumulative mass
/// exceeds `u`. `None` when no candidate has mass.
pub fn draw(candidates: &mut Vec<Candidate>, u: f64) -> Option<u32> {
    canonical_order(candidates);
    let cdf = cumulative(candidates);
    let j = cdf
        .iter()
        .position(|&f| u < f)
        .unwrap_or(cdf.len().checked_sub(1)?);
    Some(candidates[j].token)
}

/// The outcome of replaying one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayOutcome {
    /// The claimed token is what the replay draws, with margin.
    Pass,
    /// `u` (or, greedy, the logit gap) lies within the tolerance of the claimed token's edge:
    /// consistent with honest drift, counted but not a failure.
    Boundary {
        /// Distance from `u` to the interval (probability mass), or the logit gap (greedy).
        distance: f64,
    },
    /// The claimed token cannot have been drawn.
    Fail {
        /// How far `u` lies outside the claimed token's interval (probability mass), or the
        /// logit gap (greedy); `f64::INFINITY` when the token had no mass at all.
        distance: f64,
    },
}

/// Checks a sampled position: `candidates` are the verifier's survivors of the deterministic
/// chain, `claimed` the host's token, `u` the position's uniform, `eps` the tolerance in
/// probability mass (calibrated per profile). Pass when `u` lies in the claimed token's
/// interval `[F_{j-1}, F_j)`; boundary when it lies outside but within `eps`; fail otherwise,
/// or when the claimed token was filtered out (no mass).
pub fn check_draw(
    candidates: &mut Vec<Candidate>,
    claimed: u32,
    u: f64,
    eps: f64,
) -> ReplayOutcome {
    canonical_order(candidates);
    let cdf = cumulative(candidates);
    let Some(j) = candidates.iter().position(|c| c.token == claimed) else {
        return ReplayOutcome::Fail {
            distance: f64::INFINITY,
        };
    };
    let lo = if j == 0 { 0.0 } else { cdf[j - 1] };
    let hi = cdf[j];
    if u >= lo && u < hi {
        return ReplayOutcome::Pass;
    }
    let distance = if u < lo { lo - u } else { u - hi };
    if distance <= eps {
        ReplayOutcome::Boundary { distance }
    } else {
        ReplayOutcome::Fail { distance }
    }
}

/// Checks a greedy position over the verifier's survivors of the deterministic chain: the
/// claimed token's logit must be within `delta` of the largest (pass when it is the largest,
/// boundary when within `delta`, fail beyond or when absent or masked).
pub fn check_greedy(candidates: &[Candidate], claimed: u32, delta: f32) -> ReplayOutcome {
    let Some(c) = candidates
        .iter()
        .find(|x| x.token == claimed)
        .map(|x| x.logit)
        .filter(|&l| l != f32::NEG_INFINITY)
    else {
        return ReplayOutcome::Fail {
            distance: f64::INFINITY,
        };
    };
    let max = candidates
        .iter()
        .map(|x| x.logit)
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let gap = f64::from(max) - f64::from(c);
    if c.is_nan() {
        ReplayOutcome::Fail {
            distance: f64::INFINITY,
        }
    } else if gap <= 0.0 {
        ReplayOutcome::Pass
    } else if gap <= f64::from(delta) {
        ReplayOutcome::Boundary { distance: gap }
    } else {
        ReplayOutcome::Fail { distance: gap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(token: u32, logit: f32) -> Candidate {
        Candidate { token, logit }
    }

    #[test]
    fn uniform_is_position_addressed_and_in_range() {
        let k = SeedKey::from_request_seed(42);
        let a: Vec<f64> = (0..1000).map(|t| k.uniform(t)).collect();
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
        assert_eq!(k.uniform(17), a[17]);
        assert_ne!(a[0], a[1]);
        assert_ne!(SeedKey::from_request_seed(43).uniform(0), a[0]);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn draw_is_independent_of_input_order() {
        let base = vec![
            c(5, 1.0),
            c(2, 1.0),
            c(9, 3.0),
            c(1, -2.0),
            c(7, f32::NEG_INFINITY),
        ];
        let mut rev = base.clone();
        rev.reverse();
        for i in 0..200 {
            let u = i as f64 / 200.0;
            assert_eq!(draw(&mut base.clone(), u), draw(&mut rev.clone(), u));
        }
        let mut b = base.clone();
        canonical_order(&mut b);
        assert_eq!(
            b.iter().map(|x| x.token).collect::<Vec<_>>(),
            vec![9, 2, 5, 1]
        );
        assert_eq!(draw(&mut vec![], 0.5), None);
    }

    #[test]
    fn check_draw_accepts_the_pick_and_rejects_others() {
        let cands = vec![c(1, 2.0), c(2, 1.0), c(3, 0.0)];
        for i in 0..100 {
            let u = (i as f64 + 0.5) / 100.0;
            let t = draw(&mut cands.clone(), u).unwrap();
            assert!(!matches!(
                check_draw(&mut cands.clone(), t, u, 1e-3),
                ReplayOutcome::Fail { .. }
            ));
            for other in [1, 2, 3].into_iter().filter(|&o| o != t) {
                let r = check_draw(&mut cands.clone(), other, u, 1e-3);
                let cdf = cumulative(&{
                    let mut x = cands.clone();
                    canonical_order(&mut x);
                    x
                });
                let near = cdf.iter().any(|f| (f - u).abs() <= 1e-3);
                assert!(
                    near || matches!(r, ReplayOutcome::Fail { .. }),
                    "u {u} tok {other} {r:?}"
                );
            }
        }
        assert!(matches!(
            check_draw(&mut cands.clone(), 99, 0.5, 1e-3),
            ReplayOutcome::Fail { distance } if distance.is_infinite()
        ));
    }

    #[test]
    fn check_draw_tolerates_small_logit_drift() {
        let host = vec![c(1, 2.0), c(2, 1.0), c(3, 0.0)];
        let mut cdf_host = host.clone();
        canonical_order(&mut cdf_host);
        let edge = cumulative(&cdf_host)[0];
        // u just under the host's first edge: the host drew token 1; the verifier's logits
        // drifted so its edge moved below u.
        let u = edge - 1e-5;
        assert_eq!(draw(&mut host.clone(), u), Some(1));
        let verifier = vec![c(1, 1.9999), c(2, 1.0), c(3, 0.0)];
        assert!(matches!(
            check_draw(&mut verifier.clone(), 1, u, 1e-3),
            ReplayOutcome::Boundary { .. }
        ));
    }

    #[test]
    fn greedy_gap() {
        let l: Vec<Candidate> = [0.0, 5.0, 4.99, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &x)| c(i as u32, x))
            .collect();
        assert_eq!(check_greedy(&l, 1, 0.05), ReplayOutcome::Pass);
        assert!(matches!(
            check_greedy(&l, 2, 0.05),
            ReplayOutcome::Boundary { .. }
        ));
        assert!(matches!(
            check_greedy(&l, 3, 0.05),
            ReplayOutcome::Fail { .. }
        ));
        assert!(matches!(
            check_greedy(&l, 9, 0.05),
            ReplayOutcome::Fail { .. }
        ));
    }
}
