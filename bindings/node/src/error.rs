//! The one place where Rust errors become JavaScript errors.
//!
//! Every B3IQ crate's error type implements [`ClassifiedError`]: it knows its stable `code()` and
//! its [`ErrorCategory`]. [`raise`] turns any of them into a JS `Error` whose `code` is
//! `"B3IQ:<category>:<code>"` and whose message carries the Rust `source()` chain ("outer: cause:
//! root cause"). The JS side (`errors.js`) holds the one category -> class table (the same as the
//! Python and Swift bindings, see `docs/bindings.md`) and re-wraps the error into that
//! `B3iqError` subclass, with `err.code` the stable code and the native error as `err.cause`.

use b3iq_core::{ClassifiedError, ErrorCategory};
use napi::Error;

/// What every fallible export returns: the JS error's `code` is `"B3IQ:<category>:<code>"`.
pub(crate) type Result<T> = napi::Result<T, String>;

/// An error for a rejected Promise. Async exports return `napi::Result<T>` (spelled out: the
/// `#[napi]` macro recognises `Result` by name, and rejects Promises only with `Status`
/// errors), so the `B3IQ:<category>:<code>` tag travels as a `[tag] ` prefix of the message,
/// which `errors.js` strips back into the class and `code`.
#[cfg(feature = "host")]
pub(crate) fn to_async(err: Error<String>) -> Error {
    Error::new(napi::Status::GenericFailure, format!("[{}] {}", err.status, err.reason))
}

/// Any B3IQ error (`CoreError`, `RuntimeError`, `HostError`, [`BindingError`]) as a napi error
/// tagged `B3IQ:<category>:<code>`, its message followed by each `source()` whose text it does
/// not already contain.
pub(crate) fn raise<E: ClassifiedError + 'static>(err: E) -> Error<String> {
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
    Error::new(format!("B3IQ:{}:{}", err.category().as_str(), err.code()), message)
}

/// An error the binding raises itself (argument conversion, its own I/O, a stopped node, the
/// test hook), classified like the crates' errors so that it goes through [`raise`] too. The
/// Python and Swift bindings use the same codes.
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

    /// Malformed argument (`invalid_input`): becomes `B3iqValueError`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::InvalidInput, "invalid_input", message)
    }

    /// An I/O failure of the binding itself (`io`): the message is `"<context>: <err>"`, `err`
    /// is kept as the cause. Becomes `B3iqIOError`.
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
pub(crate) const PROBE_CODE: &str = "error_probe";
/// The message of the test hook's errors' cause.
pub(crate) const PROBE_CAUSE: &str = "the probe's cause";

/// Test-only: the error [`raise`] gets for an error of the category named `name` (snake_case,
/// as `ErrorCategory::as_str`), with code [`PROBE_CODE`] and a cause; an unknown name is an
/// `invalid_input` error listing the known ones.
pub(crate) fn probe(name: &str) -> BindingError {
    match ErrorCategory::ALL.into_iter().find(|c| c.as_str() == name) {
        Some(category) => BindingError::new(
            category,
            PROBE_CODE,
            format!("a {name} error raised by the test hook __testingErrorForCategory"),
        )
        .with_source(std::io::Error::other(PROBE_CAUSE)),
        None => BindingError::invalid(format!(
            "unknown error category {name:?}; use one of {}",
            ErrorCategory::ALL.map(ErrorCategory::as_str).join(", ")
        )),
    }
}
