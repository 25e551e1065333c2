//! Strict Ed25519 verification of many signatures by one key, with precomputed multiples.
//!
//! A receipt upload carries up to 256 receipts signed by the same node key. The one-by-one
//! check ([`NodePublicKey::verify_raw`], ed25519-dalek's `verify_strict`) spends most of its
//! time in `[s]B - [k]A`: 253 doublings shared by the two scalars. With the multiples of `A`
//! and of the base point `B` computed once, each product is a sum of 32 table entries (a
//! fixed-base comb in signed radix 2^8: Brickell, Gordon, McCurley and Wilson, "Fast
//! exponentiation with precomputation", EUROCRYPT '92; HAC 14.6.3), so a check costs about
//! 64 point additions instead of 253 doublings and about 70 additions, and the final
//! comparison is made on the decompressed `R` instead of compressing `[s]B - [k]A` (a field
//! inversion). Building `A`'s table costs about 4,100 additions, repaid after a handful of
//! signatures; the base point's table is built once per process.
//!
//! The verdict is exactly `verify_strict`'s (RFC 8032 section 5.1.7 with the checks that make
//! it strict), for every input, not just with high probability, unlike batch verification
//! ([`crate::signed::verify_batch`]): a signature `(R, s)` on `M` verifies iff
//! * `s` is canonical (`s < l`);
//! * `R` decompresses to a point that is not of small order, and `A` is not of small order;
//! * `compress([s]B - [k]A) == R` with `k = SHA-512(R || A || M) mod l`.
//!
//! Point arithmetic is exact, so `[s]B - [k]A` is the same point however it is computed; and
//! `compress(P) == R` holds iff `R` is the canonical encoding of a point equal to `P`
//! (compression is injective and its images are exactly the canonical encodings). The only
//! non-canonical encodings that decompress are a `y` at or above the field prime (refused
//! here by comparing bytes) and `x = 0` with the sign bit set (`(0, 1)` and `(0, -1)`, both
//! of small order, refused by the small-order check). The tests compare the verdicts with
//! `verify_strict` on valid, forged, malleable, small-order, non-canonical and mixed-order
//! (torsion-carrying) inputs, the last being where batch verification differs.

use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest, Sha512};

use crate::identity::{NodePublicKey, Signature};

/// Bits per digit of the signed radix-2^8 recoding.
const WINDOW_BITS: u32 = 8;
/// Multiples kept per window: `1..=128` (digits are in `-127..=128`).
const MULTIPLES: usize = 1 << (WINDOW_BITS - 1);
/// Digits of a canonical scalar (below `l < 2^253`).
const WINDOWS: usize = 32;

/// `table[i * MULTIPLES + m] = (m + 1) * 256^i * P`: 4,096 points, about 640 KiB.
struct FixedBase(Vec<EdwardsPoint>);

impl FixedBase {
    fn new(p: &EdwardsPoint) -> FixedBase {
        let mut t = Vec::with_capacity(WINDOWS * MULTIPLES);
        let mut base = *p;
        for _ in 0..WINDOWS {
            let mut acc = base;
            t.push(acc);
            for _ in 1..MULTIPLES {
                acc = &acc + &base;
                t.push(acc);
            }
            // acc = 128 * base; the next window's base is 256 * base.
            base = &acc + &acc;
        }
        FixedBase(t)
    }

    /// `acc + [digits]P`, or `acc - [digits]P` when `negate`.
    fn accumulate(&self, mut acc: EdwardsPoint, digits: &[i16; WINDOWS], negate: bool) -> EdwardsPoint {
        for (i, &d) in digits.iter().enumerate() {
            if d == 0 {
                continue;
            }
            let entry = &self.0[i * MULTIPLES + usize::from(d.unsigned_abs()) - 1];
            acc = if (d < 0) != negate { &acc - entry } else { &acc + entry };
        }
        acc
    }
}

/// The digits `d_i` in `-127..=128` with `s = sum d_i * 256^i`, for `s < 2^255 - 2^7`
/// (every canonical scalar; no carry is left past the last digit).
fn signed_digits(s: &Scalar) -> [i16; WINDOWS] {
    let bytes = s.as_bytes();
    let mut d = [0i16; WINDOWS];
    let mut carry = 0i16;
    for (i, b) in bytes.iter().enumerate() {
        let v = i16::from(*b) + carry;
        (d[i], carry) = if v > 128 { (v - 256, 1) } else { (v, 0) };
    }
    debug_assert_eq!(carry, 0, "a canonical scalar is below 2^253");
    d
}

fn base_point_table() -> &'static FixedBase {
    static TABLE: OnceLock<FixedBase> = OnceLock::new();
    TABLE.get_or_init(|| FixedBase::new(&ED25519_BASEPOINT_POINT))
}

/// Whether 32 bytes encode a field element below `p = 2^255 - 19` (the sign bit aside).
fn canonical_y(bytes: &[u8; 32]) -> bool {
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed)
}

/// A public key with its multiples precomputed, for checking many signatures by that key.
/// Build it with [`NodePublicKey::precompute`] when a key signs more than about ten messages
/// at once; for fewer, [`NodePublicKey::verify_raw`] is cheaper.
pub struct PrecomputedKey {
    key: NodePublicKey,
    small_order: bool,
    table: FixedBase,
}

impl PrecomputedKey {
    /// The key this was built from.
    pub fn public(&self) -> &NodePublicKey {
        &self.key
    }

    /// Strict Ed25519 verification of raw bytes: the same verdict as
    /// [`NodePublicKey::verify_raw`] on every input (see the module documentation).
    pub fn verify_raw(&self, message: &[u8], signature: &Signature) -> bool {
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&signature.0[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&signature.0[32..]);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        if self.small_order || !canonical_y(&r_bytes) {
            return false;
        }
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        if r.is_small_order() {
            return false;
        }
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(self.key.as_bytes());
        h.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let sb = base_point_table().accumulate(EdwardsPoint::identity(), &signed_digits(&s), false);
        let expected_r = self.table.accumulate(sb, &signed_digits(&k), true);
        expected_r == r
    }
}

impl NodePublicKey {
    /// Precomputes this key's multiples for [`PrecomputedKey::verify_raw`] (about 0.6 ms; the
    /// table takes about 640 KiB).
    pub fn precompute(&self) -> PrecomputedKey {
        let point = self.verifying_key().to_edwards();
        PrecomputedKey {
            key: *self,
            small_order: point.is_small_order(),
            table: FixedBase::new(&point),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::VerifyingKey;
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    fn strict(key: &NodePublicKey, m: &[u8], sig: &Signature) -> bool {
        key.verify_raw(m, sig)
    }

    /// Signs `m` with the secret scalar `a` (public key `a_point`, possibly carrying torsion)
    /// and a nonce point `R = [r]B + extra`, as a signer that crafts its own `R` would.
    fn craft(a: &Scalar, a_bytes: &[u8; 32], r: &Scalar, extra: &EdwardsPoint, m: &[u8]) -> Signature {
        let big_r = (ED25519_BASEPOINT_POINT * r + extra).compress();
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(a_bytes);
        h.update(m);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        Signature(sig)
    }

    #[test]
    fn signed_digits_recompose_the_scalar() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut cases = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(128u64), Scalar::from(255u64)];
        for _ in 0..200 {
            let mut w = [0u8; 64];
            rng.fill_bytes(&mut w);
            cases.push(Scalar::from_bytes_mod_order_wide(&w));
        }
        for s in cases {
            let d = signed_digits(&s);
            let mut back = Scalar::ZERO;
            let mut pow = Scalar::ONE;
            for di in d {
                assert!((-127..=128).contains(&di));
                let v = Scalar::from(u64::from(di.unsigned_abs()));
                back += if di < 0 { -(v * pow) } else { v * pow };
                pow *= Scalar::from(256u64);
            }
            assert_eq!(back, s);
            // And the table product is the scalar product.
            let p = ED25519_BASEPOINT_POINT * Scalar::from(7u64);
            let t = FixedBase::new(&p);
            assert_eq!(t.accumulate(EdwardsPoint::identity(), &d, false), p * s);
            assert_eq!(t.accumulate(EdwardsPoint::identity(), &d, true), -(p * s));
        }
    }

    #[test]
    fn same_verdicts_as_verify_strict_on_valid_and_forged_signatures() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for seed in 0..4u8 {
            let k = NodeKey::from_seed([seed; 32]);
            let pk = k.public();
            let pre = pk.precompute();
            assert_eq!(pre.public(), &pk);
            let other = NodeKey::from_seed([seed + 100; 32]);
            for n in 0..64usize {
                let mut m = vec![0u8; n * 5];
                rng.fill_bytes(&mut m);
                let sig = k.sign_raw(&m);
                assert!(strict(&pk, &m, &sig) && pre.verify_raw(&m, &sig));
                // Another key's signature, another message, every single-bit flip of R and s
                // at a few positions, a flipped message bit.
                let mut bad = vec![other.sign_raw(&m), k.sign_raw(b"another message")];
                for bit in [0usize, 7, 100, 255, 256, 300, 509, 511] {
                    let mut s = sig;
                    s.0[bit / 8] ^= 1 << (bit % 8);
                    bad.push(s);
                }
                for s in &bad {
                    assert_eq!(pre.verify_raw(&m, s), strict(&pk, &m, s));
                    assert!(!pre.verify_raw(&m, s));
                }
                if !m.is_empty() {
                    let mut m2 = m.clone();
                    m2[0] ^= 1;
                    assert!(!pre.verify_raw(&m2, &sig) && !strict(&pk, &m2, &sig));
                }
            }
        }
    }

    #[test]
    fn malleable_s_small_order_and_non_canonical_r_are_refused_as_by_verify_strict() {
        let k = NodeKey::from_seed([3; 32]);
        let pk = k.public();
        let pre = pk.precompute();
        let m = b"receipt";
        let sig = k.sign_raw(m);
        // s + l: the same point equation, a non-canonical scalar.
        let mut l = [0u8; 32];
        l[..16].copy_from_slice(&[0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14]);
        l[31] = 0x10;
        assert_eq!(Scalar::from_bytes_mod_order(l), Scalar::ZERO);
        let mut s_plus_l = sig;
        let s = Scalar::from_canonical_bytes(sig.0[32..].try_into().unwrap()).unwrap();
        let mut sum = [0u8; 32];
        let mut carry = 0u16;
        for (i, (a, b)) in s.as_bytes().iter().zip(&l).enumerate() {
            let v = u16::from(*a) + u16::from(*b) + carry;
            sum[i] = v as u8;
            carry = v >> 8;
        }
        s_plus_l.0[32..].copy_from_slice(&sum);
        let mut candidates = vec![s_plus_l];
        // R replaced by each small-order point, with both sign bits.
        for t in EIGHT_TORSION.iter() {
            for sign in [0u8, 0x80] {
                let mut c = sig;
                c.0[..32].copy_from_slice(t.compress().as_bytes());
                c.0[31] ^= sign;
                candidates.push(c);
            }
        }
        // R replaced by non-canonical encodings: y = p + j (j = 0..=18) and y = 2^255 - 1.
        for j in 0..=18u8 {
            for sign in [0u8, 0x80] {
                let mut y = [0xffu8; 32];
                y[0] = 0xed + j;
                y[31] = 0x7f | sign;
                let mut c = sig;
                c.0[..32].copy_from_slice(&y);
                candidates.push(c);
            }
        }
        for c in &candidates {
            assert_eq!(pre.verify_raw(m, c), strict(&pk, m, c), "{:?}", hex::encode(c.0));
            assert!(!pre.verify_raw(m, c));
        }
        assert!(canonical_y(&[0u8; 32]));
        let mut below_p = [0xffu8; 32];
        below_p[0] = 0xec;
        below_p[31] = 0x7f;
        assert!(canonical_y(&below_p));
        below_p[0] = 0xed;
        assert!(!canonical_y(&below_p));
    }

    #[test]
    fn torsion_in_r_or_in_the_key_is_judged_as_by_verify_strict() {
        // Where batch verification may differ: R or A with a small-order component. A signer
        // that knows its secret scalar can make such signatures; the strict check accepts
        // exactly those whose equation holds without the cofactor, and so must this one.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let mut wide = || {
            let mut w = [0u8; 64];
            rng.fill_bytes(&mut w);
            Scalar::from_bytes_mod_order_wide(&w)
        };
        let (mut accepted, mut refused) = (0, 0);
        for i in 0..64usize {
            let a = wide();
            let key_torsion = EIGHT_TORSION[i % 8];
            let a_point = ED25519_BASEPOINT_POINT * a + key_torsion;
            let a_bytes = a_point.compress().to_bytes();
            let Ok(pk) = NodePublicKey::from_bytes(&a_bytes) else {
                continue;
            };
            assert_eq!(VerifyingKey::from_bytes(&a_bytes).unwrap().to_bytes(), a_bytes);
            let pre = pk.precompute();
            for t in EIGHT_TORSION.iter() {
                let m = [i as u8; 40];
                let sig = craft(&a, &a_bytes, &wide(), t, &m);
                let (want, got) = (strict(&pk, &m, &sig), pre.verify_raw(&m, &sig));
                assert_eq!(got, want, "key torsion {}, R torsion {:?}", i % 8, t.compress());
                if want {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Both outcomes occur, so the comparison covered both.
        assert!(accepted > 0 && refused > 0, "{accepted} accepted, {refused} refused");
    }

    #[test]
    fn a_small_order_key_verifies_nothing() {
        // NodePublicKey refuses weak keys at decode; a PrecomputedKey built around the check
        // still refuses (the strict rule refuses a small-order A).
        let k = NodeKey::from_seed([5; 32]);
        let mut pre = k.public().precompute();
        pre.small_order = true;
        assert!(!pre.verify_raw(b"m", &k.sign_raw(b"m")));
    }
}
