//! The one place where Rust errors become Swift (and Python, in tests) errors.
//!
//! `B3iqError` is a flat uniffi error enum: one case per error category a caller can act on,
//! each with the stable `code` and the full message (the Rust `source()` chain joined with
//! ": "). Swift sees `B3iqError.InvalidInput(code:message:)`, `.Auth(code:message:)`, ... and
//! can switch on the case. Every B3IQ crate's error type implements [`ClassifiedError`], and the
//! one `From` impl below picks the case by its [`ErrorCategory`] (the same table as the Python
//! and Node bindings, see `docs/bindings.md`).

use b3iq_core::{ClassifiedError, ErrorCategory};

/// Every error the B3IQ Swift package throws: one case per error category (b3iq-core's
/// `ErrorCategory`).
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
    /// A bug or an invariant that did not hold inside B3IQ (report it with the message).
    #[error("{message}")]
    Internal {
        /// The core's stable snake_case error code (`invalid_signature`, ...), or the
        /// binding's own (`io`, `invalid_input`).
        code: String,
        /// What was wrong and what to do.
        message: String,
    },
}

/// The message of `err` followed by each `source()` whose text it does not already contain.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        next = cause.source();
    }
    message
}

/// Any B3IQ error (`CoreError`, `RuntimeError`, `HostError`, [`BindingError`]) as the case for
/// its category, with `code` = `err.code()` and the message with its cause chain.
impl<E: ClassifiedError + 'static> From<E> for B3iqError {
    fn from(err: E) -> Self {
        let code = err.code().to_owned();
        let message = chain(&err);
        match err.category() {
            ErrorCategory::InvalidInput => B3iqError::InvalidInput { code, message },
            ErrorCategory::Unauthenticated => B3iqError::Auth { code, message },
            ErrorCategory::Expired => B3iqError::Expired { code, message },
            ErrorCategory::Replayed => B3iqError::Replay { code, message },
            ErrorCategory::PolicyDenied => B3iqError::Policy { code, message },
            ErrorCategory::State => B3iqError::State { code, message },
            ErrorCategory::Io => B3iqError::Io { code, message },
            ErrorCategory::Runtime => B3iqError::Runtime { code, message },
            // `Internal`, and any category a newer core adds before this table learns it.
            _ => B3iqError::Internal { code, message },
        }
    }
}

impl B3iqError {
    /// Malformed input with a message (`invalid_input`).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        BindingError::invalid(message).into()
    }
}

/// An error the binding raises itself (argument conversion, its own I/O, a stopped node, the
/// test hook), classified like the crates' errors so that it goes through the same `From`. The
/// Python and Node bindings use the same codes.
#[derive(Debug)]
pub(crate) struct BindingError {
    category: ErrorCategory,
    code: &'static str,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BindingError {
    /// An error of `category` with a stable snake_case `code` and a message that says what was
    /// wrong and what to do.
    pub(crate) fn new(category: ErrorCategory, code: &'static str, message: impl Into<String>) -> Self {
        BindingError { category, code, message: message.into(), source: None }
    }

    /// Malformed argument (`invalid_input`): becomes `B3iqError.InvalidInput`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::InvalidInput, "invalid_input", message)
    }

    /// An I/O failure of the binding itself (`io`): the message is `"<context>: <err>"`, `err`
    /// is kept as the cause. Becomes `B3iqError.Io`.
    pub(crate) fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        Self::new(ErrorCategory::Io, "io", format!("{context}: {err}")).with_source(err)
    }

    /// The same error with `source` as its cause.
    pub(crate) fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl std::fmt::Display for BindingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BindingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ClassifiedError for BindingError {
    fn code(&self) -> &'static str {
        self.code
    }
    fn category(&self) -> ErrorCategory {
        self.category
    }
}

/// The code the test hook's errors carry (not a code any real error uses).
const PROBE_CODE: &str = "error_probe";
/// The message of the test hook's errors' cause.
const PROBE_CAUSE: &str = "the probe's cause";

/// Test-only (not part of the API; Swift: `testingErrorForCategory(category:)`): throws the
/// error an error of `category` becomes (`"expired"`, ... as in `testing_error_categories()`),
/// with code `"error_probe"` and a cause in its message, so the tests check the category -> case
/// table for every category. An unknown name throws `InvalidInput` (code `invalid_input`).
#[uniffi::export]
pub fn testing_error_for_category(category: String) -> Result<(), B3iqError> {
    let err = match ErrorCategory::ALL.into_iter().find(|c| c.as_str() == category) {
        Some(found) => BindingError::new(
            found,
            PROBE_CODE,
            format!("a {category} error raised by the test hook testing_error_for_category"),
        )
        .with_source(std::io::Error::other(PROBE_CAUSE)),
        None => BindingError::invalid(format!(
            "unknown error category {category:?}; use one of {}",
            ErrorCategory::ALL.map(ErrorCategory::as_str).join(", ")
        )),
    };
    Err(err.into())
}

/// Test-only (not part of the API; Swift: `testingErrorCategories()`): the name of every error
/// category, in the core's order.
#[uniffi::export]
pub fn testing_error_categories() -> Vec<String> {
    ErrorCategory::ALL.iter().map(|c| c.as_str().to_owned()).collect()
}
