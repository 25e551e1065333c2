//! The OpenAI error body, `{"error": {"message", "type", "code", "param"}}`, as a server sends
//! it (HTTP error answers and the error event of a failed stream) and as a client reads it from
//! servers that do not all agree on its shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`]. Serialises all four fields, `null` where absent, as OpenAI
/// does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable message: what was wrong and what to do.
    pub message: String,
    /// The error class, e.g. `invalid_request_error`, `authentication_error`, `server_error`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// A machine-readable code: OpenAI and B3IQ send a snake_case string
    /// (`model_not_found`), llama.cpp's server and vLLM the HTTP status as a number.
    #[serde(default)]
    pub code: Option<ErrorCode>,
    /// The request parameter the error is about, if any.
    #[serde(default)]
    pub param: Option<String>,
}

/// The `code` of an error: a string or, from some servers, a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorCode {
    /// A snake_case code such as `model_not_found`.
    Text(String),
    /// A number, usually the HTTP status (llama.cpp's server, vLLM).
    Number(i64),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Text(s) => f.write_str(s),
            ErrorCode::Number(n) => write!(f, "{n}"),
        }
    }
}

impl ErrorBody {
    /// A body with `message`, `type` and a string `code` (no `param`).
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: Some(kind.into()),
                code: Some(ErrorCode::Text(code.into())),
                param: None,
            },
        }
    }

    /// Reads the error out of a JSON value in any of the shapes servers use, or `None` if the
    /// value is not an error:
    ///
    /// - `{"error": {"message": ..., "type": ..., "code": ..., "param": ...}}` (OpenAI, B3IQ,
    ///   llama.cpp's server, current vLLM; missing or mistyped fields are left empty);
    /// - `{"error": "message"}` (text-generation-inference and some proxies);
    /// - `{"object": "error", "message": ..., "type": ..., "code": ...}` (older vLLM, FastChat).
    pub fn from_value(v: &Value) -> Option<ErrorDetail> {
        match v.get("error") {
            Some(e @ Value::Object(_)) => Some(ErrorDetail::from_object(e)),
            Some(Value::String(s)) => Some(ErrorDetail::message(s.clone())),
            _ if v.get("object").and_then(Value::as_str) == Some("error") => {
                Some(ErrorDetail::from_object(v))
            }
            _ => None,
        }
    }

    /// [`ErrorBody::from_value`] on raw bytes (an HTTP error answer); `None` if they are not
    /// JSON or not an error.
    pub fn from_slice(body: &[u8]) -> Option<ErrorDetail> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .as_ref()
            .and_then(Self::from_value)
    }
}

impl ErrorDetail {
    /// A detail with only a message.
    pub fn message(message: impl Into<String>) -> Self {
        ErrorDetail {
            message: message.into(),
            kind: None,
            code: None,
            param: None,
        }
    }

    /// Reads `message`, `type`, `code` and `param` from a JSON object, leaving missing or
    /// mistyped ones empty (never fails).
    pub fn from_object(o: &Value) -> Self {
        ErrorDetail {
            message: o
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: o.get("type").and_then(Value::as_str).map(str::to_string),
            code: match o.get("code") {
                Some(Value::String(s)) => Some(ErrorCode::Text(s.clone())),
                Some(Value::Number(n)) => n.as_i64().map(ErrorCode::Number),
                _ => None,
            },
            param: o.get("param").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// The error in the data of an SSE event named `error` (llama.cpp's `error: {...}` line, or
    /// `event: error`): a wrapped or bare error object, a JSON string, or plain text (at most
    /// 500 characters of it). Never fails.
    pub fn from_event_data(data: &str) -> Self {
        match serde_json::from_str::<Value>(data) {
            Ok(v) => match ErrorBody::from_value(&v) {
                Some(d) => d,
                None => match &v {
                    Value::Object(_) => Self::from_object(&v),
                    Value::String(s) => Self::message(s.clone()),
                    _ => Self::message(data.trim()),
                },
            },
            Err(_) => Self::message(data.trim().chars().take(500).collect::<String>()),
        }
    }
}
