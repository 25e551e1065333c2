//! The one place where Rust errors become Python exceptions.
//!
//! Every B3IQ crate's error type implements [`ClassifiedError`]: it knows its stable `code()` and
//! its [`ErrorCategory`]. [`raise`] turns any of them into the `b3iq.errors` class that
//! [`class_name`] picks for the category (the same table as the Node and Swift bindings, see
//! `docs/bindings.md`), with `code` set and the Rust `source()` chain kept as `__cause__`. The
//! classes live in `python/b3iq/errors.py` so they can inherit from both `b3iq.B3iqError` and
//! the matching builtin (`ValueError`, `OSError`, `RuntimeError`).

use b3iq_core::{ClassifiedError, ErrorCategory};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The `b3iq.errors` class an error of `category` becomes.
fn class_name(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::InvalidInput => "B3iqValueError",
        ErrorCategory::Unauthenticated => "B3iqAuthError",
        ErrorCategory::Expired => "B3iqExpiredError",
        ErrorCategory::Replayed => "B3iqReplayError",
        ErrorCategory::PolicyDenied => "B3iqPolicyError",
        ErrorCategory::State => "B3iqStateError",
        ErrorCategory::Io => "B3iqIOError",
        ErrorCategory::Runtime => "B3iqRuntimeError",
        // `Internal`, and any category a newer core adds before this table learns it.
        _ => "B3iqError",
    }
}

/// Any B3IQ error (`CoreError`, `RuntimeError`, `HostError`, [`BindingError`]) as the
/// `b3iq.errors` exception for its category, with `code` = `err.code()` and the `source()` chain
/// attached as `__cause__` (one builtin `RuntimeError` per link, outermost first).
pub(crate) fn raise<E: ClassifiedError + 'static>(err: E) -> PyErr {
    Python::attach(|py| {
        let exc = make(py, class_name(err.category()), err.to_string(), err.code());
        let mut causes = Vec::new();
        let mut next = err.source();
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        // Link from the innermost cause outwards.
        let mut chained: Option<PyErr> = None;
        for message in causes.into_iter().rev() {
            let link = PyRuntimeError::new_err(message);
            if let Some(inner) = chained.take() {
                link.set_cause(py, Some(inner));
            }
            chained = Some(link);
        }
        if let Some(cause) = chained {
            exc.set_cause(py, Some(cause));
        }
        exc
    })
}

fn make(py: Python<'_>, class: &str, message: String, code: &str) -> PyErr {
    let class = py.import("b3iq.errors").and_then(|module| module.getattr(class));
    match class {
        Ok(class) => match class.call1((message.clone(), code)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        // The native module was imported without its Python package: still fail loudly.
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// An error the binding raises itself (argument conversion, its own I/O, a stopped node, the
/// test hook), classified like the crates' errors so that it goes through [`raise`] too. The
/// Node and Swift bindings use the same codes.
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
            format!("a {name} error raised by the test hook _error_for_category"),
        )
        .with_source(std::io::Error::other(PROBE_CAUSE)),
        None => BindingError::invalid(format!(
            "unknown error category {name:?}; use one of {}",
            ErrorCategory::ALL.map(ErrorCategory::as_str).join(", ")
        )),
    }
}
