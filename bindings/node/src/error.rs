//! The one place where Rust errors become JavaScript errors.
//!
//! Every error thrown by the addon is a JS `Error` whose `code` names its class, so callers can
//! branch without parsing messages, and whose message carries the Rust `source()` chain
//! ("outer: cause: root cause"). The JS side (`errors.js`) re-wraps them into `B3iqError`
//! subclasses: `B3iqValueError` (a `TypeError`-like bad input), `B3iqAuthError`, `B3iqIOError`, ...

use napi::Error;

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
