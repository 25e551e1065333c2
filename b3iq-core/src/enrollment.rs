//! Enrollment proofs: a node proves possession of its key against a control-plane nonce.
//!
//! The control plane issues a single-use, expiring 32-byte nonce; the node signs an
//! [`EnrollmentProof`] naming itself, its public key, the control plane (audience) and the
//! nonce. The control plane calls [`SignedEnrollmentProof::check`] with the nonce it issued,
//! then marks the nonce used.

use crate::bytes::fixed_bytes;
use crate::codec::{read_identifier, Canonical, Reader, Writer};
use crate::error::{CoreError, Result};
use crate::identity::{NodeId, NodePublicKey};
use crate::signed::{Kind, Signed, SignedKind};

/// Maximum length of the audience (control-plane id).
pub const MAX_AUDIENCE_LEN: u32 = 128;

fixed_bytes!(
    /// A 32-byte single-use nonce chosen by the control plane (hex in JSON).
    Nonce,
    32,
    "nonce"
);

/// An enrollment proof (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentProof {
    /// The enrolling node (must be derived from `public_key`).
    pub node_id: NodeId,
    /// Its public key (must be the signer).
    pub public_key: NodePublicKey,
    /// The control plane this proof is for (identifier, e.g. `cp.example`).
    pub audience: String,
    /// The control plane's nonce.
    pub nonce: Nonce,
    /// Signing time, unix ms.
    pub signed_at_ms: u64,
}

/// A signed enrollment proof.
pub type SignedEnrollmentProof = Signed<EnrollmentProof>;

impl Canonical for EnrollmentProof {
    const NAME: &'static str = "enrollment proof";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.node_id);
        w.put(&self.public_key);
        w.str(&self.audience);
        w.put(&self.nonce);
        w.u64(self.signed_at_ms);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            node_id: r.get()?,
            public_key: r.get()?,
            audience: read_identifier(r, MAX_AUDIENCE_LEN, "audience")?,
            nonce: r.get()?,
            signed_at_ms: r.u64("signed_at_ms")?,
        })
    }
}

impl SignedKind for EnrollmentProof {
    const KIND: Kind = Kind::EnrollmentProof;
    crate::canonical_body!();
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
    fn claimed_signer(&self) -> Option<NodePublicKey> {
        Some(self.public_key)
    }
}

impl Signed<EnrollmentProof> {
    /// Control-plane check: self-certified signature, the expected audience and nonce, and a
    /// signing time within `max_age_ms` of `now_ms` (and not more than `max_age_ms` ahead).
    /// Returns the proven node id.
    pub fn check(&self, audience: &str, nonce: &Nonce, now_ms: u64, max_age_ms: u64) -> Result<NodeId> {
        let id = self.verify_self_certified()?;
        let b = self.body();
        if b.audience != audience {
            return Err(CoreError::field("audience", format!("proof is for {:?}, not {audience:?}", b.audience)));
        }
        use subtle::ConstantTimeEq;
        if !bool::from(b.nonce.0.ct_eq(&nonce.0)) {
            return Err(CoreError::field("nonce", "does not match the nonce issued; request a new one"));
        }
        if b.signed_at_ms.abs_diff(now_ms) > max_age_ms {
            return Err(CoreError::field("signed_at_ms", "outside the allowed window; check the node clock and retry"));
        }
        Ok(id)
    }
}
