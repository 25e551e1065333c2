//! The one place where Rust errors become Swift (and Python, in tests) errors.
//!
//! `B3iqError` is a flat uniffi error enum: one case per kind of failure a caller can act on,
//! each with the full message (the Rust `source()` chain joined with ": "). Swift sees
//! `B3iqError.InvalidInput(message:)`, `.Auth(message:)`, ... and can switch on the case.

/// Every error the B3IQ Swift package throws.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum B3iqError {
    /// Malformed or out-of-range input (bad hex, wrong length, bad encoding, bad key text).
    #[error("{message}")]
    InvalidInput {
        /// What was wrong and what to do.
        message: String,
    },
    /// A signature, key, password or audience check failed.
    #[error("{message}")]
    Auth {
        /// What was wrong and what to do.
        message: String,
    },
    /// Expired or not yet valid (check the clock).
    #[error("{message}")]
    Expired {
        /// What was wrong and what to do.
        message: String,
    },
    /// A replayed job or a reused token.
    #[error("{message}")]
    Replay {
        /// What was wrong and what to do.
        message: String,
    },
    /// Refused by the node's policy for its current mode.
    #[error("{message}")]
    Policy {
        /// What was wrong and what to do.
        message: String,
    },
    /// A file or network operation failed.
    #[error("{message}")]
    Io {
        /// What was wrong and what to do.
        message: String,
    },
    /// The model runtime failed.
    #[error("{message}")]
    Runtime {
        /// What was wrong and what to do.
        message: String,
    },
    /// The host is in the wrong state (not claimed, already claimed, stopped).
    #[error("{message}")]
    State {
        /// What was wrong and what to do.
        message: String,
    },
}

/// The message of `err` followed by its `source()` chain.
#[allow(dead_code)]
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        next = cause.source();
    }
    message
}
