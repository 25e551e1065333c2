//! The one place where Rust errors become Python exceptions.
//!
//! The exception classes live in `python/b3iq/errors.py` so they can inherit from both
//! `b3iq.B3iqError` and the matching builtin (`ValueError`, `OSError`, ...). Each core variant
//! is mapped on purpose: bad input -> `B3iqValueError` (a `ValueError`), authentication and
//! signature failures -> `B3iqAuthError`, I/O -> `B3iqIOError` (an `OSError`). The Rust
//! `source()` chain is kept as the exception's `__cause__`.

use b3iq_core::CoreError;
#[cfg(feature = "host")]
use b3iq_host::HostError;
#[cfg(feature = "host")]
use b3iq_runtime::error::RuntimeError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Which `b3iq.errors` class a Rust error becomes.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum Kind {
    /// Malformed or out-of-range input: `b3iq.B3iqValueError` (a `ValueError`).
    Value,
    /// Bad signature, wrong audience, bad key or password: `b3iq.B3iqAuthError`.
    Auth,
    /// Expired or not yet valid: `b3iq.B3iqExpiredError` (a `B3iqAuthError`).
    Expired,
    /// Replayed job or reused token: `b3iq.B3iqReplayError` (a `B3iqAuthError`).
    Replay,
    /// Refused by policy for the current mode: `b3iq.B3iqPolicyError`.
    Policy,
    /// Filesystem or network failure: `b3iq.B3iqIOError` (an `OSError`).
    Io,
    /// Model or runtime failure: `b3iq.B3iqRuntimeError`.
    Runtime,
    /// Host state (not claimed, already claimed, stopped): `b3iq.B3iqStateError`.
    State,
    /// A failure with no more specific class: `b3iq.B3iqError`.
    Other,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Value => "B3iqValueError",
            Kind::Auth => "B3iqAuthError",
            Kind::Expired => "B3iqExpiredError",
            Kind::Replay => "B3iqReplayError",
            Kind::Policy => "B3iqPolicyError",
            Kind::Io => "B3iqIOError",
            Kind::Runtime => "B3iqRuntimeError",
            Kind::State => "B3iqStateError",
            Kind::Other => "B3iqError",
        }
    }
}

/// Builds a `b3iq.errors.<class>` exception carrying `err`'s message, with the `source()`
/// chain attached as `__cause__` (one `RuntimeError` per link).
pub(crate) fn raise(kind: Kind, err: &(dyn std::error::Error + 'static)) -> PyErr {
    raise_coded(kind, None, err)
}

/// Like [`raise`], also setting the exception's `code` (the core's stable snake_case code).
pub(crate) fn raise_coded(kind: Kind, code: Option<&str>, err: &(dyn std::error::Error + 'static)) -> PyErr {
    Python::attach(|py| {
        let exc = make(py, kind, err.to_string(), code);
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

/// Builds a `b3iq.errors.<class>` with a plain message.
pub(crate) fn raise_msg(kind: Kind, message: impl Into<String>) -> PyErr {
    Python::attach(|py| make(py, kind, message.into(), None))
}

fn make(py: Python<'_>, kind: Kind, message: String, code: Option<&str>) -> PyErr {
    let class = py
        .import("b3iq.errors")
        .and_then(|module| module.getattr(kind.class_name()));
    match class {
        Ok(class) => match class.call1((message.clone(), code)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        // The native module was imported without its Python package: still fail loudly.
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// I/O errors from the binding itself (building the runtime, reading files).
pub(crate) fn io_error(err: std::io::Error) -> PyErr {
    raise(Kind::Io, &err)
}

/// The class each `b3iq-core` error becomes. Listed variant by variant on purpose: adding a
/// variant to the core makes a reviewer decide here (the `_` arm only covers future variants
/// of the `#[non_exhaustive]` enum).
pub(crate) fn core_kind(err: &CoreError) -> Kind {
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
        | CoreError::ReputationNodeMismatch { .. } => Kind::Value,
        CoreError::InvalidSignature { .. }
        | CoreError::SignerMismatch { .. }
        | CoreError::NodeIdMismatch { .. }
        | CoreError::UntrustedIssuer { .. }
        | CoreError::WrongAudience { .. } => Kind::Auth,
        CoreError::Expired { .. } | CoreError::NotYetValid { .. } => Kind::Expired,
        CoreError::Replayed { .. } | CoreError::StaleSequence { .. } => Kind::Replay,
        CoreError::SeenSet { .. } => Kind::Io,
        _ => Kind::Other,
    }
}

/// A `b3iq-core` error as the matching `b3iq.errors` exception.
pub(crate) fn core_error(err: CoreError) -> PyErr {
    raise_coded(core_kind(&err), Some(err.code()), &err)
}

/// An I/O error with what was being done: `"<context>: <io error>"`, the io error as the cause.
#[derive(Debug)]
pub(crate) struct ContextError(pub(crate) String, pub(crate) std::io::Error);

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl std::error::Error for ContextError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

#[cfg(feature = "host")]
/// The class each `b3iq-host` error becomes (the same table in every binding).
pub(crate) fn host_kind(err: &HostError) -> Kind {
    use HostError::*;
    match err {
        InvalidJson(_) | InvalidParameter(_) | WeakPassword | InvalidUsername | UnknownJobKind(_)
        | UnknownProfile(_) | BodyTooLarge(_) | NotFound(_) | ModelNotFound(_) | Config(_) | Core(_) => {
            Kind::Value
        }
        MissingCredentials | InvalidApiKey | RevokedApiKey | SessionRequired | BadCredentials
        | SetupTokenInvalid | InsufficientScope(_) | CrossOrigin | HostNotAllowed(_) => Kind::Auth,
        ExpiredApiKey | SetupTokenExpired => Kind::Expired,
        ModeNotAvailable(_) => Kind::Policy,
        AlreadyClaimed | NotClaimed | ModelNotLoaded | QueueFull(_) | LoginBackoff(_) => Kind::State,
        Home { .. } | Db(_) => Kind::Io,
        Runtime(_) => Kind::Runtime,
        Internal(_) => Kind::Other,
    }
}

#[cfg(feature = "host")]
/// A `b3iq-host` error as the matching `b3iq.errors` exception, with the host's error code.
pub(crate) fn host_error(err: HostError) -> PyErr {
    raise_coded(host_kind(&err), Some(err.code()), &err)
}

#[cfg(feature = "host")]
/// The class each `b3iq-runtime` error becomes (the same table in every binding).
pub(crate) fn runtime_kind(err: &RuntimeError) -> Kind {
    use RuntimeError::*;
    match err {
        ModelNotFound { .. } | InvalidRequest(_) | ContextOverflow { .. } | InvalidGguf(_) | InvalidDigest(_)
        | DigestMismatch { .. } | SizeMismatch { .. } | UnknownProfile(_) => Kind::Value,
        QueueFull { .. } | ShuttingDown => Kind::State,
        Io { .. } | Download { .. } => Kind::Io,
        _ => Kind::Runtime,
    }
}

#[cfg(feature = "host")]
/// A `b3iq-runtime` error as the matching `b3iq.errors` exception.
pub(crate) fn runtime_error(err: RuntimeError) -> PyErr {
    let kind = runtime_kind(&err);
    raise_coded(kind, Some(runtime_code(kind)), &err)
}

#[cfg(feature = "host")]
/// A stable code for a `b3iq-runtime` error (that crate has no codes of its own).
pub(crate) fn runtime_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Value => "invalid_request",
        Kind::State => "unavailable",
        Kind::Io => "io",
        _ => "runtime",
    }
}
