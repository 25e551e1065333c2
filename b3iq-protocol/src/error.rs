//! The one error type of this crate.

use b3iq_core::receipt::ReceiptId;
use b3iq_core::CoreError;

/// Everything that can go wrong in b3iq-protocol. Variants say what to do.
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
    /// The RPC URL could not be parsed.
    #[error("invalid RPC URL {url:?}: {reason}; use http://host:port or https://host")]
    InvalidRpcUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A message failed validation (bad identifier, wrong size, forbidden content).
    #[error("invalid {field}: {reason}")]
    InvalidMessage {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Other chain client failure (ABI decoding, receipt polling timeout, ...).
    #[error("{action} failed: {message}")]
    Chain {
        /// What was attempted.
        action: String,
        /// Details.
        message: String,
    },
}

/// Result alias.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
