//! The one place where Rust errors become JavaScript errors.
//!
//! Every error thrown by the addon is a JS `Error` whose `code` names its class, so callers can
//! branch without parsing messages, and whose message carries the Rust `source()` chain
//! ("outer: cause: root cause"). The JS side (`errors.js`) re-wraps them into `B3iqError`
//! subclasses: `B3iqValueError` (a `TypeError`-like bad input), `B3iqAuthError`, `B3iqIOError`, ...

use b3iq_core::CoreError;
#[cfg(feature = "host")]
use b3iq_host::HostError;
#[cfg(feature = "host")]
use b3iq_runtime::error::RuntimeError;
use napi::Error;

/// What every fallible export returns: the JS error's `code` is our class code.
pub(crate) type Result<T> = napi::Result<T, String>;

/// An error for a rejected Promise. Async exports return `napi::Result<T>` (spelled out: the
/// `#[napi]` macro recognises `Result` by name, and rejects Promises only with `Status`
/// errors), so the class code travels as a `[CODE] ` prefix of the message, which `errors.js`
/// strips back into `code`.
#[cfg(feature = "host")]
pub(crate) fn to_async(err: Error<String>) -> Error {
    Error::new(napi::Status::GenericFailure, format!("[{}] {}", err.status, err.reason))
}

/// Which `B3iqError` subclass a Rust error becomes (the string is the JS `code`).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub(crate) enum Kind {
    /// Malformed or out-of-range input.
    Value,
    /// Bad signature, wrong audience, bad key or password.
    Auth,
    /// Expired or not yet valid.
    Expired,
    /// Replayed job or reused token.
    Replay,
    /// Refused by policy for the current mode.
    Policy,
    /// Filesystem or network failure.
    Io,
    /// Model or runtime failure.
    Runtime,
    /// Host state (not claimed, already claimed, stopped).
    State,
    /// No more specific class.
    Other,
}

impl Kind {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Kind::Value => "B3IQ_VALUE",
            Kind::Auth => "B3IQ_AUTH",
            Kind::Expired => "B3IQ_EXPIRED",
            Kind::Replay => "B3IQ_REPLAY",
            Kind::Policy => "B3IQ_POLICY",
            Kind::Io => "B3IQ_IO",
            Kind::Runtime => "B3IQ_RUNTIME",
            Kind::State => "B3IQ_STATE",
            Kind::Other => "B3IQ_ERROR",
        }
    }
}

/// A napi error with status `code` and the whole cause chain in the message.
pub(crate) fn raise(kind: Kind, err: &(dyn std::error::Error + 'static)) -> Error<String> {
    let mut message = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        next = cause.source();
    }
    raise_msg(kind, message)
}

/// A napi error with a plain message.
pub(crate) fn raise_msg(kind: Kind, message: impl Into<String>) -> Error<String> {
    Error::new(kind.code().to_owned(), message.into())
}

/// A napi error whose JS `code` is `"<CLASS>:<core code>"`; `errors.js` splits it into the
/// error class and `err.code` (the core's stable snake_case code, e.g. `invalid_signature`).
pub(crate) fn raise_coded(kind: Kind, code: &str, err: &(dyn std::error::Error + 'static)) -> Error<String> {
    let plain = raise(kind, err);
    Error::new(format!("{}:{code}", kind.code()), plain.reason.clone())
}

/// The class each `b3iq-core` error becomes; the same table as the Python and Swift bindings.
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

/// A `b3iq-core` error as a JS error with the matching code.
pub(crate) fn core_error(err: CoreError) -> Error<String> {
    raise_coded(core_kind(&err), err.code(), &err)
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
/// A `b3iq-host` error with the host's error code.
pub(crate) fn host_error(err: HostError) -> Error<String> {
    raise_coded(host_kind(&err), err.code(), &err)
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
/// A `b3iq-runtime` error.
pub(crate) fn runtime_error(err: RuntimeError) -> Error<String> {
    let kind = runtime_kind(&err);
    raise_coded(kind, runtime_code(kind), &err)
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
