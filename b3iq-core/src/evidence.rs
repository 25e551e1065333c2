//! Dispute evidence: the typed, objectively checkable objects a dispute on chain is opened with
//! (`docs/formats.md`, "Dispute evidence"; flow in `docs/verification.md`, "Disputes").
//!
//! An [`Evidence`] is not itself a signed envelope: every claim it makes is carried by the
//! signatures inside it (the accused node's receipts and attestation, the verifiers' verdicts),
//! so who submits it does not matter. [`check_evidence`] verifies every signature and the
//! accusation itself with no I/O; its [`Evidence::hash`] is the `evidenceHash` of
//! `Disputes.open` on chain.
//!
//! Kinds:
//!
//! * [`Evidence::ConflictingReceipts`]: two receipts signed by the same node for the same
//!   network request id (one gateway ticket) with different content. A node signs exactly one
//!   receipt per ticket, so two different ones are equivocation. Objective.
//! * [`Evidence::FailedVerification`]: the node's receipt and the attestation it names, and at
//!   least [`EvidenceRules::min_fail_verdicts`] `fail` verdicts on that attestation from
//!   distinct verifiers the checker trusts (never the accused node). One verifier's `fail` is
//!   not evidence: a lying verifier could accuse an honest node.
//! * A missing receipt after acceptance is **not** evidence: the node signs nothing when it
//!   accepts a ticket, so "accepted, then no receipt" is the gateway's word against the
//!   node's. It hits reputation only.
//!
//! Wire form (little-endian, [`crate::codec`] conventions):
//!
//! ```text
//! version u8 = 1
//! tag     u8       1 conflicting receipts, 2 failed verification
//! tag 1:  bytes a, bytes b          signed receipts (envelope form), a.receipt_id < b.receipt_id
//! tag 2:  bytes receipt, bytes attestation, u32 n, n × bytes verdict
//!                                   verdicts in ascending verifier node id order, 1 to 16
//! ```
//!
//! The canonical order (receipts by id, verdicts by verifier) makes the hash independent of the
//! order the evidence was gathered in. Decoding refuses anything out of order, oversize or with
//! trailing bytes.

use crate::attestation::{SignedAttestation, SignedVerdict, VerdictOutcome};
use crate::codec::{Reader, Writer};
use crate::error::CoreError;
use crate::identity::NodeId;
use crate::receipt::{ReceiptId, RequestId, SignedReceipt};
use crate::signed::{Kind, ENVELOPE_OVERHEAD};
use crate::{Hash32, OperatingMode};

/// The evidence encoding's version byte.
pub const EVIDENCE_VERSION: u8 = 1;
/// The blake3 prefix of [`Evidence::hash`].
pub const EVIDENCE_DOMAIN_TAG: &[u8] = b"b3iq/evidence/v1";
/// Most verdicts in one [`Evidence::FailedVerification`].
pub const MAX_VERDICTS: u32 = 16;

/// Dispute evidence (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Two different receipts by one node for one network request id. Tag 1.
    ConflictingReceipts {
        /// The receipt with the lower receipt id.
        a: SignedReceipt,
        /// The other.
        b: SignedReceipt,
    },
    /// A receipt, the attestation it names, and `fail` verdicts on it. Tag 2.
    FailedVerification {
        /// The accused node's receipt.
        receipt: SignedReceipt,
        /// The attestation the receipt names (`attestation_digest`).
        attestation: SignedAttestation,
        /// Verdicts, ascending by verifier node id.
        verdicts: Vec<SignedVerdict>,
    },
}

/// What kind of evidence it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// [`Evidence::ConflictingReceipts`].
    ConflictingReceipts,
    /// [`Evidence::FailedVerification`].
    FailedVerification,
}

impl EvidenceKind {
    /// The name stored and shown (`conflicting_receipts`, `failed_verification`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::ConflictingReceipts => "conflicting_receipts",
            EvidenceKind::FailedVerification => "failed_verification",
        }
    }
}

/// What checked evidence accuses: the node, of what, in which receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceSubject {
    /// The accused node.
    pub node_id: NodeId,
    /// The evidence's kind.
    pub kind: EvidenceKind,
    /// The disputed network request.
    pub request_id: RequestId,
    /// The accused node's receipts in the evidence (two for a conflict, one otherwise). The
    /// control plane finds the dispute's settlement epoch from whichever of them it accepted.
    pub receipts: Vec<ReceiptId>,
    /// [`Evidence::hash`]: the on-chain `evidenceHash`.
    pub evidence_hash: Hash32,
}

/// Rules of [`check_evidence`] that are the checker's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceRules {
    /// `fail` verdicts from distinct trusted verifiers needed for failed-verification evidence.
    /// Values below 2 are raised to 2.
    pub min_fail_verdicts: usize,
}

impl Default for EvidenceRules {
    fn default() -> Self {
        EvidenceRules {
            min_fail_verdicts: 2,
        }
    }
}

/// Why evidence does not check. Nothing that fails here may open a dispute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The bytes are not an evidence encoding.
    #[error("malformed evidence: {0}")]
    Malformed(#[from] CoreError),
    /// A signed object inside does not verify.
    #[error("evidence: the {what}'s signature does not verify: {source}")]
    BadSignature {
        /// Which object (`receipt a`, `attestation`, `verdict 2`, ...).
        what: String,
        /// Why.
        source: CoreError,
    },
    /// The objects are not about the same node.
    #[error("evidence: {0}")]
    DifferentNodes(String),
    /// The objects verify and name one node but show no fault.
    #[error("evidence shows no fault: {0}")]
    NoFault(String),
    /// A receipt is not a network-mode receipt (only gateway tickets fix request ids).
    #[error("evidence: receipt {0} is not a network-mode receipt")]
    NotNetwork(String),
    /// Fewer `fail` verdicts from distinct trusted verifiers than the rules need.
    #[error("evidence: {got} fail verdict(s) from distinct trusted verifiers, {need} needed")]
    TooFewVerdicts {
        /// Needed.
        need: usize,
        /// Present.
        got: usize,
    },
    /// A verdict is by a node the checker does not trust as a verifier.
    #[error("evidence: verdict by {0}, which is not a known verifier")]
    UnknownVerifier(NodeId),
}

impl EvidenceError {
    /// A stable machine code (`malformed`, `bad_signature`, `different_nodes`, `no_fault`,
    /// `not_network`, `too_few_verdicts`, `unknown_verifier`).
    pub const fn code(&self) -> &'static str {
        match self {
            EvidenceError::Malformed(_) => "malformed",
            EvidenceError::BadSignature { .. } => "bad_signature",
            EvidenceError::DifferentNodes(_) => "different_nodes",
            EvidenceError::NoFault(_) => "no_fault",
            EvidenceError::NotNetwork(_) => "not_network",
            EvidenceError::TooFewVerdicts { .. } => "too_few_verdicts",
            EvidenceError::UnknownVerifier(_) => "unknown_verifier",
        }
    }
}

fn max_signed(kind: Kind) -> u32 {
    kind.max_body_len() + ENVELOPE_OVERHEAD as u32
}

impl Evidence {
    /// Conflicting-receipts evidence in canonical order (lower receipt id first).
    pub fn conflicting_receipts(x: SignedReceipt, y: SignedReceipt) -> Evidence {
        let (a, b) = if x.receipt_id() <= y.receipt_id() { (x, y) } else { (y, x) };
        Evidence::ConflictingReceipts { a, b }
    }

    /// Failed-verification evidence with its verdicts in canonical order (ascending verifier).
    pub fn failed_verification(
        receipt: SignedReceipt,
        attestation: SignedAttestation,
        mut verdicts: Vec<SignedVerdict>,
    ) -> Evidence {
        verdicts.sort_by_key(|v| v.body().verifier.0);
        Evidence::FailedVerification {
            receipt,
            attestation,
            verdicts,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> EvidenceKind {
        match self {
            Evidence::ConflictingReceipts { .. } => EvidenceKind::ConflictingReceipts,
            Evidence::FailedVerification { .. } => EvidenceKind::FailedVerification,
        }
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1024);
        w.u8(EVIDENCE_VERSION);
        match self {
            Evidence::ConflictingReceipts { a, b } => {
                w.u8(1);
                w.bytes(&a.encode());
                w.bytes(&b.encode());
            }
            Evidence::FailedVerification {
                receipt,
                attestation,
                verdicts,
            } => {
                w.u8(2);
                w.bytes(&receipt.encode());
                w.bytes(&attestation.encode());
                w.list(verdicts, |w, v| w.bytes(&v.encode()));
            }
        }
        w.into_bytes()
    }

    /// Strictly decodes [`Evidence::encode`]'s form (does not verify anything inside; see
    /// [`check_evidence`]).
    ///
    /// # Errors
    /// [`CoreError`] for an unknown version or tag, a bad inner object, a non-canonical order,
    /// oversize fields or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Evidence, CoreError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("evidence.version")?;
        if version != EVIDENCE_VERSION {
            return Err(CoreError::UnsupportedVersion {
                kind: "dispute evidence",
                found: version,
                supported: EVIDENCE_VERSION,
            });
        }
        let receipt = |r: &mut Reader<'_>, field| {
            SignedReceipt::decode(r.bytes(max_signed(Kind::Receipt), field)?)
        };
        let e = match r.u8("evidence.tag")? {
            1 => {
                let a = receipt(&mut r, "evidence.a")?;
                let b = receipt(&mut r, "evidence.b")?;
                if a.receipt_id() >= b.receipt_id() {
                    return Err(CoreError::field(
                        "evidence.b",
                        "receipts must be in ascending receipt id order and different",
                    ));
                }
                Evidence::ConflictingReceipts { a, b }
            }
            2 => {
                let receipt = receipt(&mut r, "evidence.receipt")?;
                let attestation = SignedAttestation::decode(
                    r.bytes(max_signed(Kind::InferenceAttestation), "evidence.attestation")?,
                )?;
                let verdicts = r.list(MAX_VERDICTS, "evidence.verdicts", |r| {
                    SignedVerdict::decode(r.bytes(max_signed(Kind::VerificationVerdict), "evidence.verdict")?)
                })?;
                if verdicts.is_empty() {
                    return Err(CoreError::field("evidence.verdicts", "at least one verdict"));
                }
                if verdicts
                    .windows(2)
                    .any(|w| w[0].body().verifier.0 >= w[1].body().verifier.0)
                {
                    return Err(CoreError::field(
                        "evidence.verdicts",
                        "verdicts must be in ascending verifier order, one per verifier",
                    ));
                }
                Evidence::FailedVerification {
                    receipt,
                    attestation,
                    verdicts,
                }
            }
            tag => {
                return Err(CoreError::InvalidTag {
                    field: "evidence.tag",
                    tag,
                })
            }
        };
        r.finish("dispute evidence")?;
        Ok(e)
    }

    /// The on-chain `evidenceHash`: blake3(`b3iq/evidence/v1` || [`Evidence::encode`]).
    pub fn hash(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(EVIDENCE_DOMAIN_TAG);
        h.update(&self.encode());
        Hash32(*h.finalize().as_bytes())
    }
}

fn verified(r: &SignedReceipt, what: &str) -> Result<NodeId, EvidenceError> {
    let node = r.verify_self_certified().map_err(|source| EvidenceError::BadSignature {
        what: what.into(),
        source,
    })?;
    if r.body().mode != OperatingMode::Network {
        return Err(EvidenceError::NotNetwork(what.into()));
    }
    Ok(node)
}

/// Checks evidence completely: every signature, that every object is about one node, and the
/// fault itself. `is_verifier` says whether a node id is one the checker trusts to verify (an
/// enrolled node of its network); failed-verification evidence needs
/// [`EvidenceRules::min_fail_verdicts`] `fail` verdicts by distinct trusted verifiers, none of
/// them the accused node.
///
/// # Errors
/// An [`EvidenceError`] naming what does not hold. Evidence that fails here must never open a
/// dispute.
pub fn check_evidence(
    e: &Evidence,
    rules: &EvidenceRules,
    is_verifier: &dyn Fn(&NodeId) -> bool,
) -> Result<EvidenceSubject, EvidenceError> {
    let evidence_hash = e.hash();
    match e {
        Evidence::ConflictingReceipts { a, b } => {
            let na = verified(a, "receipt a")?;
            let nb = verified(b, "receipt b")?;
            if na != nb {
                return Err(EvidenceError::DifferentNodes(format!(
                    "receipt a is by {na}, receipt b by {nb}"
                )));
            }
            let (ra, rb) = (a.body().request_id, b.body().request_id);
            if ra != rb {
                return Err(EvidenceError::NoFault(format!(
                    "the receipts are for different requests ({} and {})",
                    hex::encode(ra.0),
                    hex::encode(rb.0)
                )));
            }
            if a.receipt_id() == b.receipt_id() {
                return Err(EvidenceError::NoFault("the two receipts are the same receipt".into()));
            }
            Ok(EvidenceSubject {
                node_id: na,
                kind: EvidenceKind::ConflictingReceipts,
                request_id: ra,
                receipts: vec![a.receipt_id(), b.receipt_id()],
                evidence_hash,
            })
        }
        Evidence::FailedVerification {
            receipt,
            attestation,
            verdicts,
        } => {
            let node = verified(receipt, "receipt")?;
            let att_node = attestation
                .verify_self_certified()
                .map_err(|source| EvidenceError::BadSignature {
                    what: "attestation".into(),
                    source,
                })?;
            if att_node != node {
                return Err(EvidenceError::DifferentNodes(format!(
                    "the receipt is by {node}, the attestation by {att_node}"
                )));
            }
            let att_hash = Hash32(attestation.object_hash());
            let r = receipt.body();
            if r.attestation_digest != Some(att_hash) || attestation.body().request_id != r.request_id {
                return Err(EvidenceError::NoFault(
                    "the receipt does not name this attestation".into(),
                ));
            }
            let need = rules.min_fail_verdicts.max(2);
            let mut fails = 0;
            let mut seen = std::collections::BTreeSet::new();
            for (i, v) in verdicts.iter().enumerate() {
                let verifier = v
                    .verify_self_certified()
                    .map_err(|source| EvidenceError::BadSignature {
                        what: format!("verdict {i}"),
                        source,
                    })?;
                let b = v.body();
                if verifier == node {
                    return Err(EvidenceError::NoFault(format!(
                        "verdict {i} is by the accused node itself"
                    )));
                }
                if !seen.insert(verifier) {
                    return Err(EvidenceError::NoFault(format!(
                        "verdict {i} repeats verifier {verifier}: each verifier counts once"
                    )));
                }
                if !is_verifier(&verifier) {
                    return Err(EvidenceError::UnknownVerifier(verifier));
                }
                if b.subject != node || b.request_id != r.request_id || b.attestation_digest != att_hash {
                    return Err(EvidenceError::DifferentNodes(format!(
                        "verdict {i} is not about this receipt's attestation"
                    )));
                }
                match b.outcome {
                    VerdictOutcome::FailChunk(_)
                    | VerdictOutcome::FailPosition(_)
                    | VerdictOutcome::FailProofs => fails += 1,
                    VerdictOutcome::Pass | VerdictOutcome::Inconclusive => {
                        return Err(EvidenceError::NoFault(format!(
                            "verdict {i} (by {verifier}) is not a fail"
                        )))
                    }
                }
            }
            if fails < need {
                return Err(EvidenceError::TooFewVerdicts { need, got: fails });
            }
            Ok(EvidenceSubject {
                node_id: node,
                kind: EvidenceKind::FailedVerification,
                request_id: r.request_id,
                receipts: vec![receipt.receipt_id()],
                evidence_hash,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::{VerificationVerdict, RuntimeFingerprint};
    use crate::digest::Sha256Digest;
    use crate::identity::NodeKey;
    use crate::receipt::{Commitment, CommitmentSalt, Receipt};
    use crate::signed::Signed;

    fn receipt(key: &NodeKey, request: u8, price: u64, att: Option<Hash32>) -> SignedReceipt {
        let salt = CommitmentSalt::from_bytes([request; 32]);
        Receipt {
            node_id: key.node_id(),
            request_id: RequestId([request; 16]),
            model_id: "smollm2".into(),
            artifact_digest: Sha256Digest([5; 32]),
            backend: "llama.cpp".into(),
            mode: OperatingMode::Network,
            prompt_tokens: 10,
            completion_tokens: 20,
            started_at_ms: 1_800_000_000_000,
            ttft_ms: 40,
            duration_ms: 500,
            price_micro_credits: price,
            prompt_commitment: Commitment::prompt(&salt, b"prompt"),
            output_commitment: Commitment::output(&salt, b"output"),
            commitment_basis: att.map(|_| crate::receipt::CommitmentBasis::TokenIds),
            attestation_digest: att,
        }
        .sign(key)
        .unwrap()
    }

    fn verdict(verifier: &NodeKey, subject: &NodeKey, att: &SignedAttestation, outcome: VerdictOutcome) -> SignedVerdict {
        Signed::sign(
            VerificationVerdict {
                verifier: verifier.node_id(),
                subject: subject.node_id(),
                request_id: att.body().request_id,
                attestation_digest: Hash32(att.object_hash()),
                tolerance_profile: "cpu-same-isa-v1".into(),
                outcome,
                metric: String::new(),
                positions: 40,
                boundary_events: 0,
                max_exp_mismatches: 0,
                runtime: RuntimeFingerprint { backend: "b".into(), ggml_flags: "f".into(), isa: "x".into(), threads: 1 },
                verified_at_ms: 1,
            },
            verifier,
        )
        .unwrap()
    }

    fn any(_: &NodeId) -> bool {
        true
    }

    fn rules() -> EvidenceRules {
        EvidenceRules::default()
    }

    #[test]
    fn conflicting_receipts_check_and_roundtrip_in_either_order() {
        let k = NodeKey::from_seed([1; 32]);
        let (x, y) = (receipt(&k, 7, 100, None), receipt(&k, 7, 200, None));
        let e = Evidence::conflicting_receipts(x.clone(), y.clone());
        assert_eq!(e, Evidence::conflicting_receipts(y, x), "canonical order");
        let s = check_evidence(&e, &rules(), &any).unwrap();
        assert_eq!(s.node_id, k.node_id());
        assert_eq!(s.kind, EvidenceKind::ConflictingReceipts);
        assert_eq!(s.request_id, RequestId([7; 16]));
        assert_eq!(s.receipts.len(), 2);
        assert_eq!(s.evidence_hash, e.hash());
        let bytes = e.encode();
        assert_eq!(Evidence::decode(&bytes).unwrap(), e);
        // Non-canonical order, trailing bytes, unknown version and tag are refused.
        let Evidence::ConflictingReceipts { a, b } = &e else { unreachable!() };
        let swapped = Evidence::ConflictingReceipts { a: b.clone(), b: a.clone() };
        assert!(Evidence::decode(&swapped.encode()).is_err());
        let mut t = bytes.clone();
        t.push(0);
        assert!(Evidence::decode(&t).is_err());
        let mut v = bytes.clone();
        v[0] = 2;
        assert!(Evidence::decode(&v).is_err());
        v[0] = 1;
        v[1] = 9;
        assert!(Evidence::decode(&v).is_err());
    }

    #[test]
    fn non_conflicts_and_bad_signatures_are_refused() {
        let (k, other) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        // Same receipt twice.
        let x = receipt(&k, 7, 100, None);
        let same = Evidence::ConflictingReceipts { a: x.clone(), b: x.clone() };
        assert_eq!(check_evidence(&same, &rules(), &any).unwrap_err().code(), "no_fault");
        // Different requests.
        let e = Evidence::conflicting_receipts(x.clone(), receipt(&k, 8, 100, None));
        assert_eq!(check_evidence(&e, &rules(), &any).unwrap_err().code(), "no_fault");
        // Different nodes.
        let e = Evidence::conflicting_receipts(x.clone(), receipt(&other, 7, 200, None));
        assert_eq!(check_evidence(&e, &rules(), &any).unwrap_err().code(), "different_nodes");
        // A signature that does not verify (one byte of the signature flipped).
        let y = receipt(&k, 7, 200, None);
        let mut bytes = y.encode();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let forged = SignedReceipt::decode(&bytes).unwrap();
        let e = Evidence::conflicting_receipts(x.clone(), forged);
        assert_eq!(check_evidence(&e, &rules(), &any).unwrap_err().code(), "bad_signature");
        // Local-mode receipts pick their own request ids: not evidence.
        let mut local = y.body().clone();
        local.mode = OperatingMode::Local;
        let e = Evidence::conflicting_receipts(x, local.sign(&k).unwrap());
        assert_eq!(check_evidence(&e, &rules(), &any).unwrap_err().code(), "not_network");
    }

    #[test]
    fn failed_verification_needs_two_distinct_trusted_fails() {
        let (node, v1, v2, v3) = (
            NodeKey::from_seed([1; 32]),
            NodeKey::from_seed([2; 32]),
            NodeKey::from_seed([3; 32]),
            NodeKey::from_seed([4; 32]),
        );
        let att = Signed::sign(crate::attestation::tests::sample(), &node).unwrap();
        let mut body = receipt(&node, 3, 100, Some(Hash32(att.object_hash()))).into_body();
        body.request_id = att.body().request_id;
        let r = body.sign(&node).unwrap();
        let fail = VerdictOutcome::FailChunk(1);
        let two = Evidence::failed_verification(r.clone(), att.clone(), vec![verdict(&v2, &node, &att, fail), verdict(&v1, &node, &att, fail)]);
        let s = check_evidence(&two, &rules(), &any).unwrap();
        assert_eq!((s.node_id, s.kind), (node.node_id(), EvidenceKind::FailedVerification));
        assert_eq!(Evidence::decode(&two.encode()).unwrap(), two);
        // One fail is not evidence.
        let one = Evidence::failed_verification(r.clone(), att.clone(), vec![verdict(&v1, &node, &att, fail)]);
        assert_eq!(check_evidence(&one, &rules(), &any).unwrap_err(), EvidenceError::TooFewVerdicts { need: 2, got: 1 });
        // A fail and a pass: the verifiers disagree; not evidence.
        let split = Evidence::failed_verification(r.clone(), att.clone(), vec![verdict(&v1, &node, &att, fail), verdict(&v2, &node, &att, VerdictOutcome::Pass)]);
        assert_eq!(check_evidence(&split, &rules(), &any).unwrap_err().code(), "no_fault");
        // The same verifier twice counts once.
        let dup = Evidence::FailedVerification { receipt: r.clone(), attestation: att.clone(), verdicts: vec![verdict(&v1, &node, &att, fail), verdict(&v1, &node, &att, VerdictOutcome::FailProofs)] };
        assert_eq!(check_evidence(&dup, &rules(), &any).unwrap_err().code(), "no_fault");
        // A verifier the checker does not know.
        let known = |n: &NodeId| *n != v3.node_id();
        let unknown = Evidence::failed_verification(r.clone(), att.clone(), vec![verdict(&v1, &node, &att, fail), verdict(&v3, &node, &att, fail)]);
        assert_eq!(check_evidence(&unknown, &rules(), &known).unwrap_err(), EvidenceError::UnknownVerifier(v3.node_id()));
        // The accused node's own verdict.
        let own = Evidence::failed_verification(r.clone(), att.clone(), vec![verdict(&v1, &node, &att, fail), verdict(&node, &node, &att, fail)]);
        assert_eq!(check_evidence(&own, &rules(), &any).unwrap_err().code(), "no_fault");
        // A receipt naming another attestation.
        let other = receipt(&node, 3, 100, Some(Hash32([9; 32])));
        let e = Evidence::failed_verification(other, att.clone(), vec![verdict(&v1, &node, &att, fail), verdict(&v2, &node, &att, fail)]);
        assert_eq!(check_evidence(&e, &rules(), &any).unwrap_err().code(), "no_fault");
        // A higher quorum.
        assert_eq!(check_evidence(&two, &EvidenceRules { min_fail_verdicts: 3 }, &any).unwrap_err().code(), "too_few_verdicts");
    }
}
