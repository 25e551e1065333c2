//! The crate's one error type, and its single mapping to HTTP statuses and OpenAI-shaped bodies.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong in the host, with variants a caller can act on.
///
/// Every variant maps to exactly one HTTP status, OpenAI error `type` and stable `code`
/// (see `docs/api.md`); [`HostError::status`], [`HostError::kind`] and [`HostError::code`] are
/// that mapping.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The request body is not valid JSON or not the expected shape.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// A parameter is missing or out of range.
    #[error("{0}")]
    InvalidParameter(String),
    /// A named request field is wrong (400): the body's `param` names it and `code` is `.code`
    /// (`invalid_parameter`, or `context_length_exceeded` for an input longer than the
    /// context window). Built with [`HostError::field`] and [`HostError::field_too_long`].
    #[error("{message}")]
    InvalidField {
        /// The request field (`input`, `dimensions`, `messages[0].content`, ...), the error
        /// body's `param`.
        param: std::borrow::Cow<'static, str>,
        /// `invalid_parameter` or `context_length_exceeded`.
        code: &'static str,
        /// What was wrong and what to do.
        message: String,
    },
    /// The prompt, or the prompt plus the `max_tokens` asked for, does not fit the model's
    /// context window (400 `context_length_exceeded`, as OpenAI and vLLM answer).
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// The route exists but not for this method (405 with an `Allow` header listing `.0`).
    #[error("method {method} is not allowed on {path}; allowed: {allow}")]
    MethodNotAllowed {
        /// The method sent.
        method: String,
        /// The request path (at most 120 characters).
        path: String,
        /// The methods the route takes, comma-separated (the `Allow` header's value).
        allow: String,
    },
    /// A browser preflight (`OPTIONS` with `Origin`) from an origin the CORS policy does not
    /// grant (see docs/api.md, "CORS").
    #[error("cross-origin requests from {0:?} are not allowed here; loopback origins are, and others can be added to cors_origins in config.json")]
    CorsRefused(String),
    /// The chosen password is too short or too long.
    #[error("password must be 10 to 1024 characters long")]
    WeakPassword,
    /// The chosen username has characters outside `a-z A-Z 0-9 _ . -` or a bad length.
    #[error("username must be 1 to 64 characters of a-z, A-Z, 0-9, '_', '.', '-'")]
    InvalidUsername,
    /// The mode cannot be selected now (managed needs an enrollment; network an enrollment
    /// and a network policy).
    #[error("mode {0:?} cannot be selected now: managed needs `b3iqd enroll`, network an enrollment and a reserved local slot")]
    ModeNotAvailable(String),
    /// The job kind is not one of the closed set.
    #[error("unknown job kind {0:?}; use install_model_profile, remove_model_profile, run_benchmark or build_support_bundle")]
    UnknownJobKind(String),
    /// The model profile is not in the catalog.
    #[error("unknown model {0:?}: not a catalog profile, an installed model's id or a GGUF file; `b3iqd model list` (or GET /api/models) lists the profiles and the installed models")]
    UnknownProfile(String),
    /// The request body is larger than the limit.
    #[error("request body too large (limit {0} bytes)")]
    BodyTooLarge(usize),

    /// No credentials were sent.
    #[error("missing credentials: send `Authorization: Bearer b3iq_local_...` (create a key in the setup page or with `b3iqd keys create`)")]
    MissingCredentials,
    /// The bearer key is malformed or unknown.
    #[error("invalid API key; create a new one with `b3iqd keys create` or in the setup page")]
    InvalidApiKey,
    /// The bearer key was revoked.
    #[error("this API key was revoked; create a new one with `b3iqd keys create`")]
    RevokedApiKey,
    /// The bearer key or grant expired.
    #[error("this API key has expired; create a new one with `b3iqd keys create`")]
    ExpiredApiKey,
    /// The route needs an owner session.
    #[error("owner session required; log in at /setup/")]
    SessionRequired,
    /// Wrong username or password.
    #[error("wrong username or password")]
    BadCredentials,
    /// The setup token is wrong or was already used.
    #[error("setup token invalid or already used; get a new one with `b3iqd setup --reset`")]
    SetupTokenInvalid,
    /// The setup token expired.
    #[error("setup token expired; restart with `b3iqd setup --reset` to get a new one")]
    SetupTokenExpired,

    /// The credential is valid but lacks the scope for this route.
    #[error("this credential lacks the {0:?} scope needed here")]
    InsufficientScope(&'static str),
    /// A cookie-authenticated state change came from another origin.
    #[error("cross-origin request refused; use the setup page served by this node")]
    CrossOrigin,
    /// The Host header is not in the allowlist.
    #[error(
        "host {host:?} is not allowed; use {url} or add the name to allowed_hosts in config.json"
    )]
    HostNotAllowed {
        /// The refused name as sent (at most 80 characters).
        host: String,
        /// A URL this node answers on, in the scheme it serves (`https://127.0.0.1:7420`).
        url: String,
    },

    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// No route has this path (`.0` is `METHOD /path`, the path at most 120 characters).
    #[error("no route {0}; the OpenAI routes served are GET /v1/models, GET /v1/models/{{id}}, POST /v1/chat/completions, POST /v1/completions, POST /v1/responses and POST /v1/embeddings (docs/api.md lists every route)")]
    RouteNotFound(String),
    /// The model asked for is not served here.
    #[error("model {0:?} not found; GET /v1/models lists the models a request may name (on the node's machine `b3iqd model list` shows the installed ones; `b3iqd model pull` or `import` installs one)")]
    ModelNotFound(String),
    /// The model cannot be loaded next to the models in use (503).
    #[error("{0}")]
    ModelMemoryBudget(String),
    /// The model serves requests and cannot be unloaded now (409).
    #[error("{0}")]
    ModelBusy(String),
    /// The node already has an owner.
    #[error("node already claimed; log in instead")]
    AlreadyClaimed,

    /// The runtime queue is full; retry after the given seconds.
    #[error("the inference queue is full; retry after {0} s")]
    QueueFull(u64),
    /// The model's KV cache had no room for this request's tokens (more tokens in flight than
    /// the cache holds): the request was ended so the others could go on (503, `Retry-After: 1`).
    #[error("the model's KV cache is full (more tokens in flight than it holds); retry in a few seconds, or send a shorter prompt or fewer requests at once")]
    KvCacheFull,
    /// The request body did not arrive in full within the given seconds.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// A JSON endpoint got another Content-Type.
    #[error("send the body as JSON with `Content-Type: application/json` (got {0:?})")]
    UnsupportedMediaType(String),
    /// Too many failed logins; retry after the given seconds.
    #[error("too many failed logins; retry after {0} s")]
    LoginBackoff(u64),
    /// Every password-hashing slot is busy (a burst of sign-ins); retry after the given seconds.
    #[error("too many sign-in attempts are being checked right now; retry after {0} s")]
    SignInBusy(u64),

    /// The node has no owner yet.
    #[error("node not claimed; open the setup URL printed by `b3iqd serve` (or run `b3iqd setup --reset`)")]
    NotClaimed,
    /// No model is loaded.
    #[error("no model is loaded; start with `b3iqd serve --model PROFILE_OR_PATH`")]
    ModelNotLoaded,
    /// A tunnelled request's ticket is missing, malformed, not signed by the tunnel's gateway,
    /// for another node, expired or replayed.
    #[error("request ticket refused: {0}")]
    InvalidTicket(String),
    /// The owner's network policy does not allow this request now (schedule, daily tokens,
    /// model allowlist, price floor).
    #[error("refused by the node's network policy: {0}")]
    NetworkPolicy(String),
    /// The network share of the node's slots is in use; retry after the given seconds.
    #[error("this node's network share is busy; retry after {0} s")]
    NetworkBusy(u64),
    /// The control plane refused a managed-mode request, or could not be reached; the message
    /// is the control plane's (or the transport's) and says what to do.
    #[error("control plane: {0}")]
    ControlPlane(String),
    /// A command that talks to the running daemon (`b3iqd model load|unload|ps`) found none, could
    /// not reach it, or was refused; the message is the daemon's (with its error code) or says
    /// what to do.
    #[error("{0}")]
    Daemon(String),
    /// A signed update was refused or failed (TUF verification, the repository, the swap); the
    /// message says which and what to do.
    #[error("update: {0}")]
    Update(#[from] UpdateError),

    /// The home directory could not be read or written.
    #[error("home directory {path}: {source}; check permissions or set B3IQ_HOME")]
    Home {
        /// What was being accessed (never a secret).
        path: String,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file is malformed.
    #[error("config: {0}")]
    Config(String),
    /// state.db failed.
    #[error("state.db: {0}")]
    Db(#[from] rusqlite::Error),
    /// The inference runtime failed (the cause is kept: its code and category classify this).
    #[error("runtime: {0}")]
    Runtime(#[from] b3iq_runtime::RuntimeError),
    /// Core (signing, encoding, verification) failed (the cause is kept).
    #[error("core: {0}")]
    Core(#[from] b3iq_core::CoreError),
    /// Something else internal failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for the crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

impl HostError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        use HostError::*;
        match self {
            InvalidJson(_)
            | InvalidParameter(_)
            | InvalidField { .. }
            | ContextLengthExceeded(_)
            | WeakPassword
            | InvalidUsername
            | ModeNotAvailable(_)
            | UnknownJobKind(_)
            | UnknownProfile(_) => StatusCode::BAD_REQUEST,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            MissingCredentials | InvalidApiKey | RevokedApiKey | ExpiredApiKey
            | SessionRequired | BadCredentials | SetupTokenInvalid | SetupTokenExpired
            | InvalidTicket(_) => StatusCode::UNAUTHORIZED,
            InsufficientScope(_)
            | CrossOrigin
            | CorsRefused(_)
            | HostNotAllowed { .. }
            | NetworkPolicy(_) => StatusCode::FORBIDDEN,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            NotFound(_) | RouteNotFound(_) | ModelNotFound(_) => StatusCode::NOT_FOUND,
            AlreadyClaimed | ModelBusy(_) => StatusCode::CONFLICT,
            QueueFull(_) | LoginBackoff(_) | SignInBusy(_) | NetworkBusy(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            NotClaimed | ModelNotLoaded | KvCacheFull | ModelMemoryBudget(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ControlPlane(_) | Daemon(_) => StatusCode::BAD_GATEWAY,
            Update(UpdateError::Local(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Update(_) => StatusCode::BAD_GATEWAY,
            Home { .. } | Config(_) | Db(_) | Runtime(_) | Core(_) | Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The OpenAI-style error `type`.
    pub fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 405 | 408 | 413 | 415 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    /// The stable machine-readable `code`.
    pub fn code(&self) -> &'static str {
        use HostError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            InvalidParameter(_) => "invalid_parameter",
            InvalidField { code, .. } => code,
            ContextLengthExceeded(_) => "context_length_exceeded",
            MethodNotAllowed { .. } => "method_not_allowed",
            CorsRefused(_) => "cors_origin_not_allowed",
            WeakPassword => "weak_password",
            InvalidUsername => "invalid_username",
            ModeNotAvailable(_) => "mode_not_available",
            UnknownJobKind(_) => "unknown_job_kind",
            UnknownProfile(_) => "unknown_profile",
            BodyTooLarge(_) => "body_too_large",
            UnsupportedMediaType(_) => "unsupported_media_type",
            RequestTimeout(_) => "request_timeout",
            MissingCredentials => "missing_credentials",
            InvalidApiKey => "invalid_api_key",
            RevokedApiKey => "revoked_api_key",
            ExpiredApiKey => "expired_api_key",
            SessionRequired => "session_required",
            BadCredentials => "bad_credentials",
            SetupTokenInvalid => "setup_token_invalid",
            SetupTokenExpired => "setup_token_expired",
            InsufficientScope(_) => "insufficient_scope",
            CrossOrigin => "cross_origin",
            HostNotAllowed { .. } => "host_not_allowed",
            NotFound(_) | RouteNotFound(_) => "not_found",
            ModelNotFound(_) => "model_not_found",
            ModelMemoryBudget(_) => "model_memory_budget",
            ModelBusy(_) => "model_busy",
            AlreadyClaimed => "already_claimed",
            QueueFull(_) => "queue_full",
            KvCacheFull => "kv_cache_full",
            LoginBackoff(_) => "login_backoff",
            SignInBusy(_) => "sign_in_busy",
            NotClaimed => "not_claimed",
            ModelNotLoaded => "model_not_loaded",
            InvalidTicket(_) => "invalid_ticket",
            NetworkPolicy(_) => "network_policy",
            NetworkBusy(_) => "network_busy",
            ControlPlane(_) => "control_plane",
            Daemon(_) => "daemon",
            Update(e) => e.code(),
            Home { .. } | Config(_) | Db(_) | Runtime(_) | Core(_) | Internal(_) => "internal",
        }
    }

    /// The error body `{"error": {"message", "type", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let shown = [StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY];
        let message = if self.status().is_server_error() && !shown.contains(&self.status()) {
            // Internal details stay in the log (they may name paths); the client gets a hint.
            "internal error; see the b3iqd log".to_string()
        } else {
            self.to_string()
        };
        let mut body = serde_json::json!({"error": {"message": message, "type": self.kind(), "code": self.code()}});
        if let HostError::InvalidField { param, .. } = self {
            body["error"]["param"] = serde_json::Value::from(param.to_string());
        }
        body
    }

    /// A 400 `invalid_parameter` about the request field `param`.
    pub fn field(param: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> Self {
        HostError::InvalidField { param: param.into(), code: "invalid_parameter", message: message.into() }
    }

    /// A 400 `context_length_exceeded` about the request field `param`.
    pub fn field_too_long(param: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> Self {
        HostError::InvalidField { param: param.into(), code: "context_length_exceeded", message: message.into() }
    }

    /// A request body that does not parse as `T`: a 400 naming the field serde stopped at
    /// (`param`, as a JSON path like `messages[0].content`) in JSON's words (`an integer`, not
    /// `i64`); `invalid_json` when the body is not JSON at all or the fault has no field.
    pub fn from_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let r: std::result::Result<T, _> = serde_path_to_error::deserialize(&mut *de);
        let v = r.map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = json_words(&inner.to_string());
            // A missing or unknown field is reported at its parent: name the field itself.
            let named = ["missing field `", "unknown field `"].iter().find_map(|p| {
                let rest = message.strip_prefix(p)?;
                Some(rest[..rest.find('`')?].to_string())
            });
            let parent = if path == "." { String::new() } else { path };
            match named {
                Some(f) if inner.is_data() => {
                    let param = if parent.is_empty() { f } else { format!("{parent}.{f}") };
                    HostError::field(param, message)
                }
                _ if !inner.is_data() => HostError::InvalidJson(message),
                // A field of a `#[serde(flatten)]`ed struct is reported without a path: the
                // field is the one top-level key whose removal lets the body parse.
                _ if parent.is_empty() => match culprit::<T>(body) {
                    Some(k) => HostError::field(k.clone(), format!("`{k}`: {message}")),
                    None => HostError::InvalidJson(message),
                },
                _ => HostError::field(parent.clone(), format!("`{parent}`: {message}")),
            }
        })?;
        // Trailing bytes after the value are an error too (serde_json::from_slice's rule).
        de.end().map_err(|e| HostError::InvalidJson(e.to_string()))?;
        Ok(v)
    }

    /// An I/O error on the home directory (`path` names what was accessed, never a secret).
    pub fn home(path: impl Into<String>, source: std::io::Error) -> Self {
        HostError::Home {
            path: path.into(),
            source,
        }
    }
}

impl b3iq_core::ClassifiedError for HostError {
    // `code` stays the HTTP code (a runtime or core cause is `internal` on the wire, where its
    // detail stays in the log); `category` follows the cause, so bindings classify it by source.
    fn code(&self) -> &'static str {
        HostError::code(self)
    }

    fn category(&self) -> b3iq_core::ErrorCategory {
        use b3iq_core::ErrorCategory as C;
        use HostError::*;
        match self {
            InvalidJson(_)
            | InvalidParameter(_)
            | InvalidField { .. }
            | ContextLengthExceeded(_)
            | MethodNotAllowed { .. }
            | WeakPassword
            | InvalidUsername
            | UnknownJobKind(_)
            | UnknownProfile(_)
            | BodyTooLarge(_)
            | UnsupportedMediaType(_)
            | RequestTimeout(_)
            | NotFound(_)
            | RouteNotFound(_)
            | ModelNotFound(_)
            | Config(_) => C::InvalidInput,
            MissingCredentials
            | InvalidApiKey
            | RevokedApiKey
            | SessionRequired
            | BadCredentials
            | SetupTokenInvalid
            | InsufficientScope(_)
            | CrossOrigin
            | CorsRefused(_)
            | HostNotAllowed { .. }
            | InvalidTicket(_) => C::Unauthenticated,
            ExpiredApiKey | SetupTokenExpired => C::Expired,
            ModeNotAvailable(_) | NetworkPolicy(_) => C::PolicyDenied,
            AlreadyClaimed | NotClaimed | ModelNotLoaded | QueueFull(_) | KvCacheFull | ModelMemoryBudget(_) | ModelBusy(_) | LoginBackoff(_)
            | SignInBusy(_) | NetworkBusy(_) => C::State,
            ControlPlane(_) | Daemon(_) => C::Io,
            Update(UpdateError::Unavailable(_) | UpdateError::Local(_)) => C::Io,
            Update(UpdateError::Rollback { .. }) => C::Replayed,
            Update(UpdateError::Expired { .. }) => C::Expired,
            Update(UpdateError::UntrustedSignature { .. } | UpdateError::BadRootRotation { .. }) => C::Unauthenticated,
            Update(_) => C::InvalidInput,
            Home { .. } | Db(_) => C::Io,
            Runtime(e) => e.category(),
            Core(e) => e.category(),
            Internal(_) => C::Internal,
        }
    }
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        let retry = match &self {
            HostError::QueueFull(s)
            | HostError::LoginBackoff(s)
            | HostError::SignInBusy(s)
            | HostError::NetworkBusy(s) => Some(*s),
            HostError::KvCacheFull => Some(1),
            _ => None,
        };
        if let HostError::MethodNotAllowed { allow, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                resp.headers_mut().insert(axum::http::header::ALLOW, v);
            }
        }
        if let Some(s) = retry {
            if let Ok(v) = HeaderValue::from_str(&s.max(1).to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Why an update was refused or failed. The message is for the owner; the variant for code.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The repository served older metadata than the node has already seen (a replay).
    #[error("refused: rollback attack: the repository served older {role} metadata than this node already trusts ({detail})")]
    Rollback {
        /// The TUF role (root, targets, snapshot, timestamp).
        role: String,
        /// tough's description of the failure.
        detail: String,
    },
    /// A role's metadata has expired (a freeze attack, or a repository nobody re-signed).
    #[error("refused: freeze attack or stale repository: the {role} metadata has expired")]
    Expired {
        /// The TUF role (root, targets, snapshot, timestamp).
        role: String,
    },
    /// Metadata not signed by the threshold of keys the trusted root names for its role.
    #[error(
        "refused: {role} metadata is not signed by enough keys trusted by the root ({detail})"
    )]
    UntrustedSignature {
        /// The TUF role (root, targets, snapshot, timestamp).
        role: String,
        /// tough's description of the failure.
        detail: String,
    },
    /// A new root not signed by the old root's threshold (and its own).
    #[error("refused: root rotation not signed by the previous root's keys ({detail})")]
    BadRootRotation {
        /// tough's description of the failure.
        detail: String,
    },
    /// A file whose hash does not match the signed metadata (arbitrary software or a corrupt file).
    #[error("refused: {what} does not match the hash in the signed metadata ({detail})")]
    HashMismatch {
        /// The file or limit concerned.
        what: String,
        /// tough's description of the failure.
        detail: String,
    },
    /// A file larger than the signed length or the metadata limit (an endless data stream).
    #[error("refused: {what} is larger than allowed ({detail})")]
    TooLarge {
        /// The file or limit concerned.
        what: String,
        /// tough's description of the failure.
        detail: String,
    },
    /// Metadata from different releases (snapshot names a version of targets that was not served).
    #[error("refused: mix-and-match: metadata from different releases ({detail})")]
    MixAndMatch {
        /// tough's description of the failure.
        detail: String,
    },
    /// The repository could not be reached or a file was missing.
    #[error("repository unavailable: {0}")]
    Unavailable(String),
    /// Metadata that does not parse or is otherwise invalid.
    #[error("refused: bad metadata: {0}")]
    BadMetadata(String),
    /// The repository has no release for this platform.
    #[error("no release for this platform ({0}) in the repository")]
    NoTarget(String),
    /// The signed current release is older than the version an `update` job asked for (the
    /// repository moved back, or the job was queued for a release not published yet).
    #[error("refused: the repository's signed current release is {available}, older than the {requested} this update asks for; nothing was installed")]
    OlderThanRequested {
        /// The version the job named.
        requested: String,
        /// The signed current release's version.
        available: String,
    },
    /// Nothing to roll back to, no repository configured, or a local file error.
    #[error("{0}")]
    Local(String),
}

impl UpdateError {
    /// Stable machine-readable code (what a control plane is told for a failed `update` job).
    pub fn code(&self) -> &'static str {
        match self {
            UpdateError::Rollback { .. } => "update_rollback",
            UpdateError::Expired { .. } => "update_expired",
            UpdateError::UntrustedSignature { .. } => "update_untrusted_signature",
            UpdateError::BadRootRotation { .. } => "update_bad_root_rotation",
            UpdateError::HashMismatch { .. } => "update_hash_mismatch",
            UpdateError::TooLarge { .. } => "update_too_large",
            UpdateError::MixAndMatch { .. } => "update_mix_and_match",
            UpdateError::Unavailable(_) => "update_unavailable",
            UpdateError::BadMetadata(_) => "update_bad_metadata",
            UpdateError::NoTarget(_) => "update_no_target",
            UpdateError::OlderThanRequested { .. } => "update_older_than_requested",
            UpdateError::Local(_) => "update_local",
        }
    }
}

/// The top-level key of the JSON object `body` whose removal lets it parse as `T` (the one bad
/// field), if there is such a key among at most 64.
fn culprit<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<String> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    // One parse per key: bounded, so a hostile body of many keys costs little.
    if map.len() > 64 {
        return None;
    }
    map.keys()
        .find(|k| {
            let mut m = map.clone();
            m.remove(k.as_str());
            serde_json::from_value::<T>(serde_json::Value::Object(m)).is_ok()
        })
        .cloned()
}

/// serde's type names in JSON's words (`expected i64` -> `expected an integer`), so a client
/// reads what to send, not how the server is written.
fn json_words(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, json) in [
        ("expected u8", "expected a whole number 0 to 255"),
        ("expected u16", "expected a whole number 0 to 65535"),
        ("expected u32", "expected a whole number 0 to 4294967295"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("data did not match any variant of untagged enum MessageContent", "expected a string or an array of content parts"),
    ] {
        m = m.replace(rust, json);
    }
    // `expected struct ChatCompletionRequest` names a Rust type: say what JSON it is.
    if let Some(i) = m.find("expected struct ") {
        let rest = &m[i + "expected struct ".len()..];
        let end = rest.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(rest.len());
        m = format!("{}expected a JSON object{}", &m[..i], &rest[end..]);
    }
    m
}
