//! Errors, and how each becomes an HTTP answer (`{"error": {"message", "type", "code"}}`, the
//! OpenAI error shape the node's API uses too).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::Refusal;

/// A control-plane error.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The database failed (SQLite or Postgres); the message names the operation.
    #[error("store: {0}")]
    Store(String),
    /// A rule of the store refused the change.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A request or a signed message is malformed or does not verify.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A gateway request field is wrong (400 `invalid_parameter`, `param` = the field), as the
    /// node answers the same mistake.
    #[error("{reason}")]
    InvalidParameter {
        /// The request field.
        field: &'static str,
        /// What is wrong and what to send.
        reason: String,
    },
    /// A request body over the limit (bytes).
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Too many requests of this kind right now.
    #[error("{0}")]
    TooMany(String),
    /// Bad configuration or home directory.
    #[error("config: {0}")]
    Config(String),
    /// The gateway: no node serves this model now (404).
    #[error("model {0:?} is not served on the network now; GET /v1/models lists the models with ready nodes")]
    ModelNotFound(String),
    /// The gateway: every node serving the model is busy and the model's queue is full (429
    /// with `Retry-After`).
    #[error("{message}")]
    Busy {
        /// What is busy.
        message: String,
        /// Seconds to wait before retrying.
        retry_after_s: u64,
    },
    /// The gateway: every node serving the model refused the request by its owner's policy
    /// (503; retrying soon will not help unless a schedule opens).
    #[error("{0}")]
    NoEligibleNode(String),
    /// The gateway: the node failed before answering, and no other node could take the request
    /// (502).
    #[error("{0}")]
    Upstream(String),
    /// Settlement: the chain refused or could not be reached (502); the message names the call.
    #[error("chain: {0}")]
    Chain(String),
}

/// Result alias.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

impl ControlError {
    /// A store failure of `what`.
    pub fn store(what: &str, e: impl std::fmt::Display) -> ControlError {
        ControlError::Store(format!("{what}: {e}"))
    }

    /// HTTP status, error type and code.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ControlError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "store_failed"),
            ControlError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "config"),
            ControlError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_message"),
            ControlError::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_parameter"),
            ControlError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "body_too_large"),
            ControlError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error", "unauthorized"),
            ControlError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "too_many_requests"),
            ControlError::ModelNotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found"),
            ControlError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "no_capacity"),
            ControlError::Upstream(_) => (StatusCode::BAD_GATEWAY, "server_error", "upstream_failed"),
            ControlError::Chain(_) => (StatusCode::BAD_GATEWAY, "server_error", "chain_failed"),
            ControlError::NoEligibleNode(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "no_eligible_node"),
            ControlError::Refused(r) => match r {
                Refusal::ChallengeUsed => (
                    StatusCode::CONFLICT,
                    "invalid_request_error",
                    "challenge_used",
                ),
                Refusal::TokenUnknown => (
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "token_unknown",
                ),
                Refusal::TokenUsed => (StatusCode::CONFLICT, "invalid_request_error", "token_used"),
                Refusal::TokenExpired => (
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "token_expired",
                ),
                Refusal::OtherOrg => (StatusCode::CONFLICT, "invalid_request_error", "other_org"),
                Refusal::UnknownNode => (
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "node_not_enrolled",
                ),
                Refusal::Suspended(_) => {
                    (StatusCode::FORBIDDEN, "permission_error", "node_suspended")
                }
                Refusal::Revoked(_) => (StatusCode::FORBIDDEN, "permission_error", "node_revoked"),
                Refusal::EnrollmentExpired => (
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    "enrollment_expired",
                ),
                Refusal::StaleSequence { .. } => (
                    StatusCode::CONFLICT,
                    "invalid_request_error",
                    "stale_sequence",
                ),
                Refusal::Replayed { .. } => (StatusCode::CONFLICT, "invalid_request_error", "replayed"),
                Refusal::NotNetworkMode(_) => (StatusCode::CONFLICT, "invalid_request_error", "not_network_mode"),
                Refusal::Exists(_) => (StatusCode::CONFLICT, "invalid_request_error", "exists"),
                Refusal::NotFound(_) => {
                    (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
                }
                // Credits. OpenAI answers an exhausted quota with 429 `insufficient_quota`; we
                // keep its `type` and `code` but answer 402, because the OpenAI SDKs retry
                // every 429 on their own and no retry can pay. Rate limits are 429 with
                // `Retry-After`, which the SDKs honour.
                Refusal::InsufficientCredits { .. } => (
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient_quota",
                    "insufficient_quota",
                ),
                Refusal::SpendLimit { .. } => (
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient_quota",
                    "spend_limit_reached",
                ),
                Refusal::RateLimited { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                ),
                Refusal::KeyRevoked => (
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "gateway_key_revoked",
                ),
                Refusal::HoldClosed(_) => {
                    (StatusCode::CONFLICT, "invalid_request_error", "hold_closed")
                }
                Refusal::ReceiptCharged => (
                    StatusCode::CONFLICT,
                    "invalid_request_error",
                    "receipt_already_charged",
                ),
            },
        }
    }
}

impl ControlError {
    /// How long a refused client should wait before retrying, when the refusal says
    /// (`Retry-After` on the HTTP answer, rounded up to whole seconds).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ControlError::Refused(Refusal::RateLimited { retry_after_ms, .. }) => {
                Some(*retry_after_ms)
            }
            ControlError::Busy { retry_after_s, .. } => Some(retry_after_s.saturating_mul(1000)),
            _ => None,
        }
    }
}

impl From<b3iq_chain::ChainError> for ControlError {
    fn from(e: b3iq_chain::ChainError) -> Self {
        ControlError::Chain(e.to_string())
    }
}

impl From<b3iq_protocol::ProtocolError> for ControlError {
    fn from(e: b3iq_protocol::ProtocolError) -> Self {
        ControlError::Invalid {
            field: "message",
            reason: e.to_string(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let message = match &self {
            // Never leak SQL or paths to a client.
            ControlError::Store(m) | ControlError::Config(m) => {
                tracing::error!(error = %m, "control plane failure");
                "internal error; see the control plane's log".to_string()
            }
            other => other.to_string(),
        };
        // OpenAI's error object: `param` names the request field at fault, else null.
        let param = match &self {
            ControlError::Invalid { field, .. } | ControlError::InvalidParameter { field, .. } => Some(*field),
            _ => None,
        };
        let body = serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms() {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        resp
    }
}
