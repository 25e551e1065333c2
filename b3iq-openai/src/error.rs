//! The crate's error type, [`OpenAiError`].

use b3iq_core::{ClassifiedError, ErrorCategory};
use thiserror::Error;

/// What can go wrong when reading OpenAI wire bytes: an SSE stream that breaks its bounds, or a
/// payload that is not the JSON it should be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// One SSE line (a `data:` line, a comment, ...) grew past the parser's limit before its
    /// line break arrived.
    #[error(
        "an SSE line exceeds {limit} bytes; the stream is refused (is the server sending SSE?)"
    )]
    SseLineTooLong {
        /// The limit in bytes ([`crate::sse::SseParser::with_limit`]).
        limit: usize,
    },
    /// The `data:` lines of one SSE event together grew past the parser's limit before the
    /// blank line that ends the event.
    #[error("an SSE event's data exceeds {limit} bytes; the stream is refused")]
    SseEventTooLarge {
        /// The limit in bytes ([`crate::sse::SseParser::with_limit`]).
        limit: usize,
    },
    /// A payload is not valid JSON or does not have the expected shape.
    #[error("{what} is not valid: {reason}")]
    InvalidJson {
        /// What was being read, e.g. "a chat completion chunk".
        what: &'static str,
        /// serde_json's description (line and column, the field that was wrong).
        reason: String,
    },
}

impl OpenAiError {
    pub(crate) fn json(what: &'static str, e: serde_json::Error) -> Self {
        OpenAiError::InvalidJson {
            what,
            reason: e.to_string(),
        }
    }
}

impl ClassifiedError for OpenAiError {
    fn code(&self) -> &'static str {
        match self {
            OpenAiError::SseLineTooLong { .. } => "sse_line_too_long",
            OpenAiError::SseEventTooLarge { .. } => "sse_event_too_large",
            OpenAiError::InvalidJson { .. } => "invalid_json",
        }
    }

    fn category(&self) -> ErrorCategory {
        match self {
            OpenAiError::SseLineTooLong { .. }
            | OpenAiError::SseEventTooLarge { .. }
            | OpenAiError::InvalidJson { .. } => ErrorCategory::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_code_and_a_category() {
        let all = [
            OpenAiError::SseLineTooLong { limit: 1 },
            OpenAiError::SseEventTooLarge { limit: 1 },
            OpenAiError::InvalidJson {
                what: "x",
                reason: "y".into(),
            },
        ];
        let mut codes: Vec<_> = all.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "codes are unique");
        for e in &all {
            assert!(
                e.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                e.code()
            );
            assert_eq!(e.category(), ErrorCategory::InvalidInput);
            assert!(!e.to_string().is_empty());
        }
    }
}
