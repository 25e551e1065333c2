//! The one error type of this crate. The chain client's errors are `b3iq_chain::ChainError`.

use b3iq_core::receipt::ReceiptId;
use b3iq_core::{ClassifiedError, CoreError, ErrorCategory};

/// Everything that can go wrong in b3iq-protocol (building settlement epochs, validating
/// control-plane messages). Variants say what to do. Each has a stable [`ClassifiedError::code`]
/// and an [`ErrorCategory`]: see the table in `docs/protocol.md`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A receipt's Ed25519 signature (or its node id / key binding) did not verify.
    #[error("receipt {receipt_id} has an invalid signature: {source}; drop it and ask the node to re-send")]
    InvalidReceiptSignature {
        /// The receipt.
        receipt_id: ReceiptId,
        /// What core reported.
        #[source]
        source: CoreError,
    },
    /// A receipt started outside the epoch window `[start_ms, end_ms)`.
    #[error(
        "receipt {receipt_id} started at {started_at_ms} ms, outside epoch {epoch_id} [{start_ms}, {end_ms}); \
         settle it in the epoch that covers its start time"
    )]
    OutsideEpoch {
        /// The receipt.
        receipt_id: ReceiptId,
        /// Epoch being built.
        epoch_id: u64,
        /// Receipt start time.
        started_at_ms: u64,
        /// Epoch start (inclusive).
        start_ms: u64,
        /// Epoch end (exclusive).
        end_ms: u64,
    },
    /// A receipt was not served in network mode, so it is not payable on chain.
    #[error("receipt {receipt_id} was served in {mode} mode; only network-mode receipts are settled on chain")]
    NotNetworkMode {
        /// The receipt.
        receipt_id: ReceiptId,
        /// Its mode.
        mode: String,
    },
    /// A receipt names a node that has no payout account in the epoch's payee directory.
    #[error("receipt {receipt_id} names node {node_id}, which has no payout account; register the node first")]
    UnknownHost {
        /// The receipt.
        receipt_id: ReceiptId,
        /// The node (`b3n_...`).
        node_id: String,
    },
    /// The epoch has nothing to pay (no receipt with a non-zero price).
    #[error("epoch {epoch_id} has nothing to pay ({receipts} receipts, total 0); do not post it")]
    EmptyEpoch {
        /// Epoch id.
        epoch_id: u64,
        /// Receipts accepted.
        receipts: u64,
    },
    /// The epoch configuration is inconsistent.
    #[error("invalid epoch configuration: {0}")]
    InvalidEpochConfig(String),
    /// A sum overflowed (absurd prices or token conversion factor).
    #[error("amount overflow while computing {what}; lower the token conversion factor or split the epoch")]
    AmountOverflow {
        /// Which sum.
        what: &'static str,
    },
    /// Error from b3iq-core (encoding, payout tree, split policy).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A message failed validation (bad identifier, wrong size, forbidden content).
    #[error("invalid {field}: {reason}")]
    InvalidMessage {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result alias.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

impl ClassifiedError for ProtocolError {
    /// Stable snake_case code per variant; [`ProtocolError::Core`] passes on core's code.
    fn code(&self) -> &'static str {
        match self {
            ProtocolError::InvalidReceiptSignature { .. } => "invalid_receipt_signature",
            ProtocolError::OutsideEpoch { .. } => "outside_epoch",
            ProtocolError::NotNetworkMode { .. } => "not_network_mode",
            ProtocolError::UnknownHost { .. } => "unknown_host",
            ProtocolError::EmptyEpoch { .. } => "empty_epoch",
            ProtocolError::InvalidEpochConfig(_) => "invalid_epoch_config",
            ProtocolError::AmountOverflow { .. } => "amount_overflow",
            ProtocolError::Core(e) => e.code(),
            ProtocolError::InvalidMessage { .. } => "invalid_message",
        }
    }

    /// A bad receipt signature is `unauthenticated`; a receipt from another mode is
    /// `policy_denied`; a node without a payout account and an epoch with nothing to pay are
    /// `state`; bad configuration, receipts outside the window, overflow and invalid messages are
    /// `invalid_input`; [`ProtocolError::Core`] passes on core's category.
    fn category(&self) -> ErrorCategory {
        use ErrorCategory as C;
        match self {
            ProtocolError::InvalidReceiptSignature { .. } => C::Unauthenticated,
            ProtocolError::NotNetworkMode { .. } => C::PolicyDenied,
            ProtocolError::UnknownHost { .. } | ProtocolError::EmptyEpoch { .. } => C::State,
            ProtocolError::OutsideEpoch { .. }
            | ProtocolError::InvalidEpochConfig(_)
            | ProtocolError::AmountOverflow { .. }
            | ProtocolError::InvalidMessage { .. } => C::InvalidInput,
            ProtocolError::Core(e) => e.category(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_core_errors_keep_their_class() {
        let id = ReceiptId([7; 32]);
        let core = CoreError::Expired {
            job_id: "00".into(),
            expires_at_ms: 5,
            now_ms: 6,
        };
        let all = vec![
            ProtocolError::InvalidReceiptSignature {
                receipt_id: id,
                source: CoreError::InvalidSignature { kind: "receipt" },
            },
            ProtocolError::OutsideEpoch {
                receipt_id: id,
                epoch_id: 1,
                started_at_ms: 0,
                start_ms: 1,
                end_ms: 2,
            },
            ProtocolError::NotNetworkMode {
                receipt_id: id,
                mode: "local".into(),
            },
            ProtocolError::UnknownHost {
                receipt_id: id,
                node_id: "b3n_x".into(),
            },
            ProtocolError::EmptyEpoch {
                epoch_id: 1,
                receipts: 0,
            },
            ProtocolError::InvalidEpochConfig("x".into()),
            ProtocolError::AmountOverflow { what: "total" },
            ProtocolError::Core(core.clone()),
            ProtocolError::InvalidMessage {
                field: "audience",
                reason: "x".into(),
            },
        ];
        let codes: std::collections::BTreeSet<&str> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len(), "duplicate code in {codes:?}");
        for code in &codes {
            assert!(
                !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code:?} is not snake_case"
            );
        }
        let wrapped = ProtocolError::Core(core.clone());
        assert_eq!(ClassifiedError::code(&wrapped), core.code());
        assert_eq!(ClassifiedError::category(&wrapped), ErrorCategory::Expired);
        assert_eq!(all[0].category(), ErrorCategory::Unauthenticated);
        assert_eq!(all[2].category(), ErrorCategory::PolicyDenied);
        assert_eq!(all[8].category(), ErrorCategory::InvalidInput);
    }
}
