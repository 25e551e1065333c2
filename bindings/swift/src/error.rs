//! The one place where Rust errors become Swift (and Python, in tests) errors.
//!
//! `B3iqError` is a flat uniffi error enum: one case per kind of failure a caller can act on,
//! each with the full message (the Rust `source()` chain joined with ": "). Swift sees
//! `B3iqError.InvalidInput(message:)`, `.Auth(message:)`, ... and can switch on the case.

use b3iq_core::CoreError;
#[cfg(feature = "host")]
use b3iq_host::HostError;
#[cfg(feature = "host")]
use b3iq_runtime::error::RuntimeError;

/// Every error the B3IQ Swift package throws.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum B3iqError {
    /// Malformed or out-of-range input (bad hex, wrong length, bad encoding, bad key text).
    #[error("{message}")]
    InvalidInput {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// A signature, key, password or audience check failed.
    #[error("{message}")]
    Auth {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// Expired or not yet valid (check the clock).
    #[error("{message}")]
    Expired {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// A replayed job or a reused token.
    #[error("{message}")]
    Replay {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// Refused by the node's policy for its current mode.
    #[error("{message}")]
    Policy {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// A file or network operation failed.
    #[error("{message}")]
    Io {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// The model runtime failed.
    #[error("{message}")]
    Runtime {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// The host is in the wrong state (not claimed, already claimed, stopped).
    #[error("{message}")]
    State {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
}

/// The message of `err` followed by its `source()` chain.
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

impl B3iqError {
    /// Malformed input with a message.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        B3iqError::InvalidInput { code: "invalid_input".into(), message: message.into() }
    }
}

/// The class each `b3iq-core` error becomes; the same table as the Python and Node bindings.
impl From<CoreError> for B3iqError {
    fn from(err: CoreError) -> Self {
        let message = chain(&err);
        let code = err.code().to_owned();
        match err {
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
            | CoreError::ReputationNodeMismatch { .. } => B3iqError::InvalidInput { code, message },
            CoreError::InvalidSignature { .. }
            | CoreError::SignerMismatch { .. }
            | CoreError::NodeIdMismatch { .. }
            | CoreError::UntrustedIssuer { .. }
            | CoreError::WrongAudience { .. } => B3iqError::Auth { code, message },
            CoreError::Expired { .. } | CoreError::NotYetValid { .. } => B3iqError::Expired { code, message },
            CoreError::Replayed { .. } | CoreError::StaleSequence { .. } => B3iqError::Replay { code, message },
            CoreError::SeenSet { .. } => B3iqError::Io { code, message },
            _ => B3iqError::InvalidInput { code, message },
        }
    }
}

#[cfg(feature = "host")]
/// The class each `b3iq-host` error becomes (the same table in every binding).
impl From<HostError> for B3iqError {
    fn from(err: HostError) -> Self {
        use HostError::*;
        let message = chain(&err);
        let code = err.code().to_owned();
        match err {
            InvalidJson(_) | InvalidParameter(_) | WeakPassword | InvalidUsername | UnknownJobKind(_)
            | UnknownProfile(_) | BodyTooLarge(_) | NotFound(_) | ModelNotFound(_) | Config(_) | Core(_) => {
                B3iqError::InvalidInput { code, message }
            }
            MissingCredentials | InvalidApiKey | RevokedApiKey | SessionRequired | BadCredentials
            | SetupTokenInvalid | InsufficientScope(_) | CrossOrigin | HostNotAllowed(_) => B3iqError::Auth { code, message },
            ExpiredApiKey | SetupTokenExpired => B3iqError::Expired { code, message },
            ModeNotAvailable(_) => B3iqError::Policy { code, message },
            AlreadyClaimed | NotClaimed | ModelNotLoaded | QueueFull(_) | LoginBackoff(_) => B3iqError::State { code, message },
            Home { .. } | Db(_) => B3iqError::Io { code, message },
            Runtime(_) | Internal(_) => B3iqError::Runtime { code, message },
        }
    }
}

#[cfg(feature = "host")]
/// The class each `b3iq-runtime` error becomes (the same table in every binding).
impl From<RuntimeError> for B3iqError {
    fn from(err: RuntimeError) -> Self {
        use RuntimeError::*;
        let message = chain(&err);
        match err {
            ModelNotFound { .. } | InvalidRequest(_) | ContextOverflow { .. } | InvalidGguf(_) | InvalidDigest(_)
            | DigestMismatch { .. } | SizeMismatch { .. } | UnknownProfile(_) => {
                B3iqError::InvalidInput { code: "invalid_request".into(), message }
            }
            QueueFull { .. } | ShuttingDown => B3iqError::State { code: "unavailable".into(), message },
            Io { .. } | Download { .. } => B3iqError::Io { code: "io".into(), message },
            _ => B3iqError::Runtime { code: "runtime".into(), message },
        }
    }
}
