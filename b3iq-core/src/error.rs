//! The one error type at the `b3iq-core` boundary.
//!
//! Every variant says what was wrong and, where it helps, what to do about it. Callers match on
//! variants (`InvalidSignature`, `Expired`, `Replayed`, ...) rather than on message text.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in `b3iq-core`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CoreError {
    // ---- canonical decoding -------------------------------------------------------------
    /// The input ended before a field was complete.
    #[error("truncated input: {field} needs {needed} more byte(s) but only {remaining} remain")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// Bytes were left over after a complete object.
    #[error("{count} trailing byte(s) after a complete {what}; the input must contain exactly one object")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// The object's version byte is not one this build understands.
    #[error("unsupported {kind} version {found} (this build reads versions 1 to {supported}); upgrade b3iq")]
    UnsupportedVersion {
        /// Object kind.
        kind: &'static str,
        /// Version found in the input.
        found: u8,
        /// The newest version this build reads (it reads every version from 1 up to it).
        supported: u8,
    },
    /// The envelope holds a different kind of object than the caller asked for.
    #[error("expected a signed {expected}, found kind byte {found}")]
    WrongKind {
        /// Kind the caller asked for.
        expected: &'static str,
        /// Kind byte found.
        found: u8,
    },
    /// A length or count field exceeds its documented maximum.
    #[error("{field} length {len} exceeds the maximum of {max}")]
    LengthTooLarge {
        /// Field name.
        field: &'static str,
        /// Length found.
        len: u64,
        /// Maximum allowed.
        max: u64,
    },
    /// An enum tag (or bool / option byte) is not one of the defined values.
    #[error("invalid tag {tag} for {field}")]
    InvalidTag {
        /// Field name.
        field: &'static str,
        /// Tag found.
        tag: u8,
    },
    /// A string field is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// A field holds a value that is well-formed but not allowed.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A hex (JSON) field could not be parsed.
    #[error("invalid hex in {field}: {reason}")]
    InvalidHex {
        /// Field name.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    // ---- keys and signatures ------------------------------------------------------------
    /// The signature does not verify for the given key and bytes.
    #[error("invalid signature on {kind}: the object was altered or signed by another key")]
    InvalidSignature {
        /// Object kind.
        kind: &'static str,
    },
    /// The object was signed by a different key than the verifier expected.
    #[error("{kind} was signed by a different key than expected")]
    SignerMismatch {
        /// Object kind.
        kind: &'static str,
    },
    /// The node id inside the object is not derived from the signing key.
    #[error("{kind} claims node id {claimed} but its signer's node id is {actual}")]
    NodeIdMismatch {
        /// Object kind.
        kind: &'static str,
        /// Node id written in the object.
        claimed: String,
        /// Node id of the signer.
        actual: String,
    },
    /// 32 bytes that are not a valid Ed25519 public key.
    #[error("invalid Ed25519 public key: {reason}")]
    InvalidPublicKey {
        /// Why it was refused.
        reason: String,
    },
    /// A key file could not be parsed.
    #[error("invalid node key file: {reason}; restore the key file from backup or create a new identity")]
    InvalidKeyFile {
        /// Why it was refused.
        reason: String,
    },
    /// A node id string could not be parsed.
    #[error("invalid node id: {reason} (expected `b3n_` followed by 52 lowercase base32 characters)")]
    InvalidNodeId {
        /// Why it was refused.
        reason: String,
    },

    // ---- credentials --------------------------------------------------------------------
    /// A credential string is malformed (prefix, length, alphabet or checksum).
    #[error("invalid credential: {reason}; check that the whole key was copied")]
    InvalidCredential {
        /// Why it was refused (never contains the secret).
        reason: String,
    },
    /// A credential of the wrong kind was presented.
    #[error("wrong credential kind: expected a {expected} key, got a {found} key")]
    WrongCredentialKind {
        /// Kind expected.
        expected: &'static str,
        /// Kind presented.
        found: &'static str,
    },

    // ---- digests and manifests ----------------------------------------------------------
    /// A sha256 digest string is malformed.
    #[error("invalid sha256 digest: {reason} (expected 64 lowercase hex characters, optionally prefixed with `sha256:`)")]
    InvalidDigest {
        /// Why it was refused.
        reason: String,
    },

    // ---- jobs ---------------------------------------------------------------------------
    /// The job's issuer is not in the node's trust roots.
    #[error("job {job_id} was issued by an untrusted key; only control-plane keys in the trust roots may send jobs")]
    UntrustedIssuer {
        /// Job id (hex).
        job_id: String,
    },
    /// The job is addressed to another node.
    #[error("job {job_id} is addressed to node {audience}, not to this node")]
    WrongAudience {
        /// Job id (hex).
        job_id: String,
        /// Audience written in the job.
        audience: String,
    },
    /// The job's expiry time has passed.
    #[error("job {job_id} expired at {expires_at_ms} ms (now {now_ms} ms); ask the control plane to reissue it, and check the node clock")]
    Expired {
        /// Job id (hex).
        job_id: String,
        /// Expiry time.
        expires_at_ms: u64,
        /// Current time.
        now_ms: u64,
    },
    /// The job's issue time is in the future beyond the allowed clock skew.
    #[error("job {job_id} is not valid before {issued_at_ms} ms (now {now_ms} ms); check the node clock")]
    NotYetValid {
        /// Job id (hex).
        job_id: String,
        /// Issue time.
        issued_at_ms: u64,
        /// Current time.
        now_ms: u64,
    },
    /// The job's validity window is empty or longer than allowed.
    #[error("job {job_id} has an invalid validity window: {reason}")]
    InvalidValidity {
        /// Job id (hex).
        job_id: String,
        /// Why it was refused.
        reason: String,
    },
    /// The job was already seen (replay).
    #[error("job {job_id} was already received; replays are refused")]
    Replayed {
        /// Job id (hex).
        job_id: String,
    },
    /// The job's sequence number is not above the last accepted one from this issuer.
    #[error("job {job_id} has sequence {sequence} but the last accepted sequence from this issuer is {last}; stale or reordered jobs are refused")]
    StaleSequence {
        /// Job id (hex).
        job_id: String,
        /// Sequence in the job.
        sequence: u64,
        /// Last accepted sequence.
        last: u64,
    },
    /// The seen-set store failed; the job was not run.
    #[error("replay store failed: {message}; the job was not run")]
    SeenSet {
        /// Error from the store.
        message: String,
    },

    // ---- merkle, split, metering, reputation --------------------------------------------
    /// A Merkle tree needs at least one leaf.
    #[error("a Merkle tree needs at least one leaf")]
    EmptyTree,
    /// A leaf index is outside the tree.
    #[error("leaf index {index} is out of range for a tree of {len} leaves")]
    IndexOutOfRange {
        /// Index asked for.
        index: u64,
        /// Number of leaves.
        len: u64,
    },
    /// Two payout entries share a claim index.
    #[error("payout index {index} appears more than once; claim indices must be unique")]
    DuplicatePayoutIndex {
        /// The repeated index.
        index: u64,
    },
    /// Split basis points do not add up to 10,000.
    #[error("invalid split policy: shares add up to {sum} basis points, they must add up to 10000")]
    InvalidSplitPolicy {
        /// Sum found.
        sum: u32,
    },
    /// Integer arithmetic would overflow.
    #[error("arithmetic overflow in {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A reputation event for another node was applied.
    #[error("reputation is bound to node {expected}; an event for node {found} cannot be applied (reputation is not transferable)")]
    ReputationNodeMismatch {
        /// Node the reputation belongs to.
        expected: String,
        /// Node in the event.
        found: String,
    },
}

/// What kind of failure an error is, decided once at its source (each crate's error type
/// classifies its own variants) so that HTTP, the CLI and every binding map failures the same
/// way. Each binding turns a category into one exception class with one table (see
/// `docs/bindings.md`); the names follow the classes the bindings expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCategory {
    /// Malformed or out-of-range input (bindings: `ValueError` / `TypeError` kin).
    InvalidInput,
    /// Bad signature, wrong audience, bad key, password or credential.
    Unauthenticated,
    /// Expired or not yet valid (a kind of [`ErrorCategory::Unauthenticated`] in the bindings).
    Expired,
    /// A replayed job, a reused token or a stale sequence number.
    Replayed,
    /// Refused by policy for the node's current mode.
    PolicyDenied,
    /// The node is not in a state to do this now (not claimed, already claimed, queue full,
    /// no model loaded, shutting down).
    State,
    /// Filesystem, database or network failure.
    Io,
    /// Model or inference backend failure.
    Runtime,
    /// A bug or an invariant that did not hold.
    Internal,
}

impl ErrorCategory {
    /// Every category, in declaration order (for table-driven tests).
    pub const ALL: [ErrorCategory; 9] = [
        ErrorCategory::InvalidInput,
        ErrorCategory::Unauthenticated,
        ErrorCategory::Expired,
        ErrorCategory::Replayed,
        ErrorCategory::PolicyDenied,
        ErrorCategory::State,
        ErrorCategory::Io,
        ErrorCategory::Runtime,
        ErrorCategory::Internal,
    ];

    /// The stable snake_case name (as in JSON).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::InvalidInput => "invalid_input",
            ErrorCategory::Unauthenticated => "unauthenticated",
            ErrorCategory::Expired => "expired",
            ErrorCategory::Replayed => "replayed",
            ErrorCategory::PolicyDenied => "policy_denied",
            ErrorCategory::State => "state",
            ErrorCategory::Io => "io",
            ErrorCategory::Runtime => "runtime",
            ErrorCategory::Internal => "internal",
        }
    }
}

/// An error that knows its stable code and its [`ErrorCategory`]. Implemented by the error type
/// of every B3IQ crate (`CoreError`, `RuntimeError`, `HostError`, `ProtocolError`, ...), so a
/// binding maps any of them with one function.
pub trait ClassifiedError: std::error::Error {
    /// A stable snake_case code for the variant (HTTP error bodies, bindings' `code`).
    fn code(&self) -> &'static str;
    /// The category the bindings and the CLI map to a class or an exit status.
    fn category(&self) -> ErrorCategory;
}

impl CoreError {
    /// A stable snake_case code for the variant (used in golden vectors, bindings and HTTP
    /// error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Truncated { .. } => "truncated",
            CoreError::TrailingBytes { .. } => "trailing_bytes",
            CoreError::UnsupportedVersion { .. } => "unsupported_version",
            CoreError::WrongKind { .. } => "wrong_kind",
            CoreError::LengthTooLarge { .. } => "length_too_large",
            CoreError::InvalidTag { .. } => "invalid_tag",
            CoreError::InvalidUtf8 { .. } => "invalid_utf8",
            CoreError::InvalidField { .. } => "invalid_field",
            CoreError::InvalidHex { .. } => "invalid_hex",
            CoreError::InvalidSignature { .. } => "invalid_signature",
            CoreError::SignerMismatch { .. } => "signer_mismatch",
            CoreError::NodeIdMismatch { .. } => "node_id_mismatch",
            CoreError::InvalidPublicKey { .. } => "invalid_public_key",
            CoreError::InvalidKeyFile { .. } => "invalid_key_file",
            CoreError::InvalidNodeId { .. } => "invalid_node_id",
            CoreError::InvalidCredential { .. } => "invalid_credential",
            CoreError::WrongCredentialKind { .. } => "wrong_credential_kind",
            CoreError::InvalidDigest { .. } => "invalid_digest",
            CoreError::UntrustedIssuer { .. } => "untrusted_issuer",
            CoreError::WrongAudience { .. } => "wrong_audience",
            CoreError::Expired { .. } => "expired",
            CoreError::NotYetValid { .. } => "not_yet_valid",
            CoreError::InvalidValidity { .. } => "invalid_validity",
            CoreError::Replayed { .. } => "replayed",
            CoreError::StaleSequence { .. } => "stale_sequence",
            CoreError::SeenSet { .. } => "seen_set",
            CoreError::EmptyTree => "empty_tree",
            CoreError::IndexOutOfRange { .. } => "index_out_of_range",
            CoreError::DuplicatePayoutIndex { .. } => "duplicate_payout_index",
            CoreError::InvalidSplitPolicy { .. } => "invalid_split_policy",
            CoreError::Overflow { .. } => "overflow",
            CoreError::ReputationNodeMismatch { .. } => "reputation_node_mismatch",
        }
    }

    /// The variant's [`ErrorCategory`].
    pub fn category(&self) -> ErrorCategory {
        use ErrorCategory as C;
        match self {
            CoreError::InvalidSignature { .. }
            | CoreError::SignerMismatch { .. }
            | CoreError::NodeIdMismatch { .. }
            | CoreError::UntrustedIssuer { .. }
            | CoreError::WrongAudience { .. } => C::Unauthenticated,
            CoreError::Expired { .. } | CoreError::NotYetValid { .. } => C::Expired,
            CoreError::Replayed { .. } | CoreError::StaleSequence { .. } => C::Replayed,
            CoreError::SeenSet { .. } => C::Io,
            CoreError::Truncated { .. }
            | CoreError::TrailingBytes { .. }
            | CoreError::UnsupportedVersion { .. }
            | CoreError::WrongKind { .. }
            | CoreError::LengthTooLarge { .. }
            | CoreError::InvalidTag { .. }
            | CoreError::InvalidUtf8 { .. }
            | CoreError::InvalidField { .. }
            | CoreError::InvalidHex { .. }
            | CoreError::InvalidPublicKey { .. }
            | CoreError::InvalidKeyFile { .. }
            | CoreError::InvalidNodeId { .. }
            | CoreError::InvalidCredential { .. }
            | CoreError::WrongCredentialKind { .. }
            | CoreError::InvalidDigest { .. }
            | CoreError::InvalidValidity { .. }
            | CoreError::EmptyTree
            | CoreError::IndexOutOfRange { .. }
            | CoreError::DuplicatePayoutIndex { .. }
            | CoreError::InvalidSplitPolicy { .. }
            | CoreError::Overflow { .. }
            | CoreError::ReputationNodeMismatch { .. } => C::InvalidInput,
        }
    }

    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl ClassifiedError for CoreError {
    fn code(&self) -> &'static str {
        CoreError::code(self)
    }
    fn category(&self) -> ErrorCategory {
        CoreError::category(self)
    }
}
