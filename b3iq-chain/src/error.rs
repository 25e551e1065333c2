//! The one error type of this crate. The sans-I/O errors (settlement builder, messages) are
//! `b3iq_protocol::ProtocolError`.

use b3iq_core::{ClassifiedError, ErrorCategory};

/// Everything that can go wrong talking to a chain. Variants say what to do. Each has a stable
/// [`ClassifiedError::code`] and an [`ErrorCategory`]: see the table in `docs/protocol.md`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The RPC URL could not be parsed.
    #[error("invalid RPC URL {url:?}: {reason}; use http://host:port or https://host")]
    InvalidRpcUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The chain node did not answer after all retries.
    #[error(
        "chain node at {url} unreachable after {attempts} attempts ({last_error}); \
         check that it is running (for local tests: `contracts/node_modules/.bin/hardhat node`)"
    )]
    ChainUnreachable {
        /// RPC URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        last_error: String,
    },
    /// A call or transaction reverted; `error` is the decoded Solidity custom error.
    #[error("{action} reverted with {error}")]
    Reverted {
        /// What was attempted (e.g. `Settlement.claim`).
        action: String,
        /// The decoded revert, e.g. `AlreadyClaimed(AlreadyClaimed { epochId: 1, index: 3 })`, or the raw data in hex.
        error: String,
    },
    /// The node answered with an error that is not a revert (nonce, funds, bad params).
    #[error("{action} rejected by the chain node: {message}")]
    Rejected {
        /// What was attempted.
        action: String,
        /// Node's message.
        message: String,
    },
    /// A transaction was mined but failed (status 0) without a decodable reason.
    #[error("{action}: transaction {tx_hash} failed on chain (status 0)")]
    TransactionFailed {
        /// What was attempted.
        action: String,
        /// Transaction hash.
        tx_hash: String,
    },
    /// A transaction was written to the node but its answer was lost (timeout, reset), so it may
    /// or may not have been accepted. Never retried automatically: that could send it twice.
    #[error(
        "{action} failed: the node did not answer after the transaction was sent ({reason}); it may or \
         may not have been accepted: check the account's nonce or the expected state before sending it again"
    )]
    SendOutcomeUnknown {
        /// What was attempted.
        action: String,
        /// The transport error.
        reason: String,
    },
    /// A sent transaction's receipt could not be obtained within `RetryPolicy::receipt_timeout`,
    /// or another transport failure that is not worth retrying (malformed or empty answer).
    #[error("{action} failed: {message}")]
    Transport {
        /// What was attempted.
        action: String,
        /// Details (for a receipt, the transaction hash).
        message: String,
    },
    /// An expected event was missing from a transaction receipt.
    #[error("{action}: transaction {tx_hash} did not emit {event}")]
    MissingEvent {
        /// What was attempted.
        action: String,
        /// Transaction hash.
        tx_hash: String,
        /// Expected event.
        event: &'static str,
    },
    /// The chain answered something the client did not expect: an event that does not match the
    /// transaction, an answer the ABI cannot decode. Usually the addresses point at other
    /// contracts (check the `Deployment`) or the bindings are out of date.
    #[error("{action} failed: {message}")]
    Unexpected {
        /// What was attempted.
        action: String,
        /// Details.
        message: String,
    },
    /// The local signer refused to sign (a digest or key problem).
    #[error("{action} failed: {message}")]
    Signing {
        /// What was attempted.
        action: String,
        /// Signer's message.
        message: String,
    },
    /// The HTTP client could not be built (TLS backend setup).
    #[error("build HTTP client failed: {message}")]
    HttpClient {
        /// Details.
        message: String,
    },
}

impl ClassifiedError for ChainError {
    /// Stable snake_case code per variant.
    fn code(&self) -> &'static str {
        match self {
            ChainError::InvalidRpcUrl { .. } => "invalid_rpc_url",
            ChainError::ChainUnreachable { .. } => "chain_unreachable",
            ChainError::Reverted { .. } => "reverted",
            ChainError::Rejected { .. } => "rejected",
            ChainError::TransactionFailed { .. } => "transaction_failed",
            ChainError::SendOutcomeUnknown { .. } => "send_outcome_unknown",
            ChainError::Transport { .. } => "transport",
            ChainError::MissingEvent { .. } => "missing_event",
            ChainError::Unexpected { .. } => "unexpected_answer",
            ChainError::Signing { .. } => "signing_failed",
            ChainError::HttpClient { .. } => "http_client",
        }
    }

    /// A bad URL is `invalid_input`; an unreachable node, a lost send and other transport
    /// failures are `io`; a revert, a rejection by the node and a failed transaction are `state`
    /// (the chain refused the operation as things stand: already claimed, window still open,
    /// missing role, no funds); a missing or mismatched event, an undecodable answer, a signer or
    /// HTTP client failure are `internal`.
    fn category(&self) -> ErrorCategory {
        use ErrorCategory as C;
        match self {
            ChainError::InvalidRpcUrl { .. } => C::InvalidInput,
            ChainError::ChainUnreachable { .. }
            | ChainError::SendOutcomeUnknown { .. }
            | ChainError::Transport { .. } => C::Io,
            ChainError::Reverted { .. }
            | ChainError::Rejected { .. }
            | ChainError::TransactionFailed { .. } => C::State,
            ChainError::MissingEvent { .. }
            | ChainError::Unexpected { .. }
            | ChainError::Signing { .. }
            | ChainError::HttpClient { .. } => C::Internal,
        }
    }
}

/// Result alias.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<ChainError> {
        let s = || String::from("x");
        vec![
            ChainError::InvalidRpcUrl {
                url: s(),
                reason: s(),
            },
            ChainError::ChainUnreachable {
                url: s(),
                attempts: 3,
                last_error: s(),
            },
            ChainError::Reverted {
                action: s(),
                error: s(),
            },
            ChainError::Rejected {
                action: s(),
                message: s(),
            },
            ChainError::TransactionFailed {
                action: s(),
                tx_hash: s(),
            },
            ChainError::SendOutcomeUnknown {
                action: s(),
                reason: s(),
            },
            ChainError::Transport {
                action: s(),
                message: s(),
            },
            ChainError::MissingEvent {
                action: s(),
                tx_hash: s(),
                event: "E",
            },
            ChainError::Unexpected {
                action: s(),
                message: s(),
            },
            ChainError::Signing {
                action: s(),
                message: s(),
            },
            ChainError::HttpClient { message: s() },
        ]
    }

    #[test]
    fn codes_are_unique_snake_case_and_categories_are_decided_per_variant() {
        let all = every_variant();
        let codes: std::collections::BTreeSet<&str> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len(), "duplicate code in {codes:?}");
        for code in &codes {
            assert!(
                !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code:?} is not snake_case"
            );
        }
        let category = |code: &str| all.iter().find(|e| e.code() == code).unwrap().category();
        assert_eq!(category("invalid_rpc_url"), ErrorCategory::InvalidInput);
        assert_eq!(category("chain_unreachable"), ErrorCategory::Io);
        assert_eq!(category("send_outcome_unknown"), ErrorCategory::Io);
        assert_eq!(category("reverted"), ErrorCategory::State);
        assert_eq!(category("missing_event"), ErrorCategory::Internal);
    }

    #[test]
    fn a_lost_send_says_not_to_resend_blindly() {
        let e = ChainError::SendOutcomeUnknown {
            action: "Settlement.claim".into(),
            reason: "operation timed out".into(),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("Settlement.claim failed: "), "{msg}");
        assert!(msg.contains("may or may not have been accepted"), "{msg}");
        assert!(msg.contains("check the account's nonce"), "{msg}");
    }
}
