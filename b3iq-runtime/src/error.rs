//! The crate's one error type.

use std::path::PathBuf;

use crate::gguf::GgufError;

/// Everything that can go wrong in the runtime. Variants are meant to be matched: the host maps
/// `QueueFull` to 429, `ModelNotFound` to 404, `InvalidRequest`/`ContextOverflow` to 400,
/// `UpstreamUnavailable`/`Backend` to 502/503 and so on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request queue is full; retry after the given delay.
    #[error("the request queue is full; retry in {retry_after_ms} ms or raise the queue capacity")]
    QueueFull {
        /// Suggested delay before retrying.
        retry_after_ms: u64,
    },
    /// No model with this id is loaded (or installed).
    #[error("model `{model}` is not loaded; list models with /v1/models or load it first")]
    ModelNotFound {
        /// The id asked for.
        model: String,
    },
    /// The request is malformed; the message says which field.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt (plus `max_tokens`) does not fit in the context window.
    #[error("the prompt has {prompt_tokens} tokens but the context window per sequence is {context_length}; shorten the prompt or load the model with a larger context")]
    ContextOverflow {
        /// Prompt tokens after templating.
        prompt_tokens: u32,
        /// Context per sequence.
        context_length: u32,
    },
    /// The KV cache filled up while the request was reading its prompt (more tokens in flight
    /// than the cache holds); retry later, or with a shorter prompt.
    #[error("the KV cache is full; retry later or with a shorter prompt")]
    KvCacheFull,
    /// The request was cancelled (stream dropped, model unloaded, runtime shut down).
    #[error("the request was cancelled")]
    Cancelled,
    /// The runtime is shutting down or its engine thread has stopped.
    #[error("the runtime is shut down; restart it")]
    ShuttingDown,
    /// A model could not be loaded.
    #[error("could not load model {path}: {reason}")]
    ModelLoad {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
    /// A GGUF file is malformed or hostile.
    #[error("invalid GGUF file: {0}")]
    InvalidGguf(#[from] GgufError),
    /// A digest string is not 64 lower-case hex characters (optionally prefixed `sha256:`).
    #[error("invalid sha256 digest `{0}`: expected 64 lower-case hex characters, optionally prefixed with `sha256:`")]
    InvalidDigest(String),
    /// Content hashed to something else than expected.
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual}; the file is corrupt or not the one the catalog names, it was not installed")]
    DigestMismatch {
        /// What was checked (URL, path).
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// Content has another size than expected.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}; the download was short or the source changed, it was not installed")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A download failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// Source.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A model profile id is not in the catalog.
    #[error("unknown model profile `{0}`; `b3iqd model list` shows the catalog's profiles")]
    UnknownProfile(String),
    /// A filesystem operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An external command (pip, python3) failed.
    #[error("command `{command}` failed: {reason}")]
    Command {
        /// The command line (no secrets).
        command: String,
        /// Exit status and stderr tail.
        reason: String,
    },
    /// The upstream server cannot be reached or timed out.
    #[error("upstream {url} is unreachable: {reason}; check that it is running and the base URL is right")]
    UpstreamUnavailable {
        /// Base URL.
        url: String,
        /// Cause.
        reason: String,
    },
    /// The upstream answered with an error.
    #[error("upstream answered HTTP {status}: {message}")]
    Upstream {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The upstream refused the API key.
    #[error("upstream refused the API key (HTTP {status}); check the key file or environment variable")]
    UpstreamAuth {
        /// HTTP status (401/403).
        status: u16,
    },
    /// Configuration problem (missing key file, bad URL...).
    #[error("configuration error: {0}")]
    Config(String),
    /// llama.cpp failed internally.
    #[error("backend error: {0}")]
    Backend(String),
    /// b3iq-core refused something (signing or encoding a record).
    #[error("core: {0}")]
    Core(#[from] b3iq_core::CoreError),
    /// A feature is not available in this build or on this backend.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl RuntimeError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io { path: path.into(), source }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::QueueFull { .. }
                | RuntimeError::KvCacheFull
                | RuntimeError::UpstreamUnavailable { .. }
                | RuntimeError::Download { .. }
        )
    }
}

/// Short alias.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl b3iq_core::ClassifiedError for RuntimeError {
    fn code(&self) -> &'static str {
        use RuntimeError::*;
        match self {
            QueueFull { .. } => "queue_full",
            ModelNotFound { .. } => "model_not_found",
            InvalidRequest(_) => "invalid_request",
            ContextOverflow { .. } => "context_length_exceeded",
            KvCacheFull => "kv_cache_full",
            Cancelled => "cancelled",
            ShuttingDown => "shutting_down",
            ModelLoad { .. } => "model_load_failed",
            InvalidGguf(_) => "invalid_gguf",
            InvalidDigest(_) => "invalid_digest",
            DigestMismatch { .. } => "digest_mismatch",
            SizeMismatch { .. } => "size_mismatch",
            Download { .. } => "download_failed",
            UnknownProfile(_) => "unknown_profile",
            Io { .. } => "io",
            Command { .. } => "command_failed",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            Upstream { .. } => "upstream_error",
            UpstreamAuth { .. } => "upstream_auth",
            Config(_) => "config",
            Backend(_) => "backend",
            Core(e) => e.code(),
            Unsupported(_) => "unsupported",
        }
    }

    fn category(&self) -> b3iq_core::ErrorCategory {
        use b3iq_core::ErrorCategory as C;
        use RuntimeError::*;
        match self {
            ModelNotFound { .. } | InvalidRequest(_) | ContextOverflow { .. } | InvalidGguf(_) | InvalidDigest(_)
            | DigestMismatch { .. } | SizeMismatch { .. } | UnknownProfile(_) | Config(_) | Unsupported(_) => {
                C::InvalidInput
            }
            QueueFull { .. } | KvCacheFull | ShuttingDown | Cancelled => C::State,
            Io { .. } | Download { .. } | UpstreamUnavailable { .. } => C::Io,
            UpstreamAuth { .. } => C::Unauthenticated,
            ModelLoad { .. } | Command { .. } | Upstream { .. } | Backend(_) => C::Runtime,
            Core(e) => e.category(),
        }
    }
}
