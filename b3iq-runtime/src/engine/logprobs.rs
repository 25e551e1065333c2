//! Token log probabilities for the sampler stage (OpenAI's `logprobs` / `top_logprobs`).
//!
//! What is reported is the model's own distribution at a position: the log-softmax of the raw
//! logits the decoder produced, before `logit_bias`, penalties, grammar, truncation (top-k,
//! top-p, min-p) and temperature. That is what OpenAI documents ("the log probability of this
//! token") and what llama-server reports with `n_probs` for its default (post-sampling off)
//! mode. It is read from the logits only: computing it never changes which token is sampled,
//! so seeded and replayed sampling ([`b3iq_core::sampling`], [`crate::verify`]) are untouched.

use super::decoder::TokenId;

/// `ln p` of `chosen` and the `top` most likely tokens at one position, from raw logits.
///
/// The normaliser is computed in f64 (`max + ln Σ exp(l - max)`), so a 49k-entry vocabulary
/// loses no precision; every value is clamped to `<= 0` (rounding can put the best token a hair
/// above 0). The alternatives are sorted most likely first, ties by ascending token id, and
/// hold `min(top, vocabulary)` entries. A `chosen` id outside `logits` gets `-inf` (cannot
/// happen for a token the sampler picked from these logits). Non-finite logits (a banned
/// token's `-inf`) count as probability 0.
pub fn token_logprobs(logits: &[f32], chosen: TokenId, top: usize) -> (f32, Vec<(TokenId, f32)>) {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return (f32::NEG_INFINITY, Vec::new());
    }
    let max = f64::from(max);
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| (f64::from(l) - max).exp())
        .sum();
    let lse = max + sum.ln();
    let lp = |l: f32| -> f32 {
        if l.is_finite() {
            ((f64::from(l) - lse).min(0.0)) as f32
        } else {
            f32::NEG_INFINITY
        }
    };
    let chosen_lp = logits
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |&l| lp(l));
    // A small sorted list (top <= 20): most likely first, ties by lower id (ids arrive in
    // ascending order, so a later equal logit never displaces an earlier one).
    let mut best: Vec<(TokenId, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &l) in logits.iter().enumerate() {
            if !l.is_finite() {
                continue;
            }
            if best.len() == top && l <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (id as TokenId, l));
            best.truncate(top);
        }
    }
    let top = best.into_iter().map(|(id, l)| (id, lp(l))).collect();
    (chosen_lp, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition_and_sums_to_one() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let (lp, top) = token_logprobs(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((f64::from(lp) - (2.0f64.exp() / z).ln()).abs() < 1e-6);
        // Sorted, ties (ids 1 and 3, both 3.0) by id.
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        let (_, all) = token_logprobs(&logits, 0, 10);
        assert_eq!(all.len(), logits.len());
        let mass: f64 = all.iter().map(|t| f64::from(t.1).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6, "{mass}");
        assert!(all.iter().all(|t| t.1 <= 0.0));
    }

    #[test]
    fn banned_tokens_have_zero_probability_and_top_zero_is_empty() {
        let logits = [f32::NEG_INFINITY, 0.0, 0.0];
        let (lp, top) = token_logprobs(&logits, 1, 0);
        assert!((lp - 0.5f32.ln()).abs() < 1e-6);
        assert!(top.is_empty());
        let (lp, top) = token_logprobs(&logits, 0, 5);
        assert_eq!(lp, f32::NEG_INFINITY);
        assert_eq!(top.len(), 2);
        let (lp, top) = token_logprobs(&[f32::NEG_INFINITY], 0, 2);
        assert_eq!((lp, top.len()), (f32::NEG_INFINITY, 0));
    }
}
