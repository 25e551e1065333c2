//! The local HTTP API (axum): router, guards (Host allowlist, CSRF, body limit), extractors.
//! Routes and shapes are documented in `docs/api.md`.
//!
//! A response sent before its request body was read (a 401 or 403 from a guard or an extractor)
//! first reads a small body to its end ([`finish_request_body`]): over HTTP/2 the stream then
//! closes cleanly instead of with RST_STREAM(NO_ERROR), which some clients (curl 7.88) report as
//! a framing error instead of the status.

mod api;
pub mod cors;
pub mod embeddings;
pub mod openai;
pub mod responses;
pub mod serve;
pub mod tunnel;
/// The header types of [`same_origin`] (re-exported for embedders and the fuzz targets).
pub use axum::http::{HeaderMap, HeaderName, HeaderValue};
mod wizard;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::context::NodeState;
use crate::error::HostError;
use crate::owner::auth::{self, Session};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Name of the owner session cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "b3iq_session";
/// Name of the owner session cookie over TLS. Browsers keep a `__Host-` cookie only when it is
/// `Secure`, has `Path=/` and no `Domain` (RFC 6265bis, "Cookie Name Prefixes"), so neither a
/// plain-HTTP page nor a sibling domain can set or shadow it.
pub const SESSION_COOKIE_TLS: &str = "__Host-b3iq_session";

/// The scheme this node's server speaks (`https` when config.json `tls` is not `off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme a node serves: `Https` once its server runs with TLS.
    pub fn of(st: &NodeState) -> Scheme {
        if st.tls.get().is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The session cookie's name over this scheme ([`SESSION_COOKIE`], [`SESSION_COOKIE_TLS`]).
    pub fn session_cookie_name(self) -> &'static str {
        match self {
            Scheme::Http => SESSION_COOKIE,
            Scheme::Https => SESSION_COOKIE_TLS,
        }
    }
}

type St = State<Arc<NodeState>>;

/// Build the full router for a node.
pub fn router(state: Arc<NodeState>) -> Router {
    let api = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/api/setup/status", get(api::setup_status))
        .route("/api/setup/claim", post(api::setup_claim))
        .route("/api/session/login", post(api::login))
        .route("/api/session/logout", post(api::logout))
        .route("/api/session/logout-all", post(api::logout_all))
        .route("/api/session", get(api::session_info))
        .route("/api/node", get(api::node_info))
        .route("/api/hardware", get(api::hardware))
        .route("/api/models", get(api::models))
        .route("/api/models/load", post(api::model_load))
        .route("/api/models/unload", post(api::model_unload))
        .route("/api/mode", get(api::mode_get).post(api::mode_set))
        .route("/api/network", get(api::network_get).put(api::network_put))
        .route("/api/keys", get(api::keys_list).post(api::keys_create))
        .route("/api/keys/{id}", delete(api::keys_revoke))
        .route("/api/receipts", get(api::receipts_list))
        .route("/api/receipts/{id}", get(api::receipt_get))
        .route("/api/audit", get(api::audit))
        .route("/api/update", get(api::update_status))
        .route("/api/usage", get(api::usage))
        .route("/api/jobs", get(api::jobs_list).post(api::jobs_create))
        .route("/api/jobs/{id}", get(api::job_get))
        .route("/api/jobs/{id}/approve", post(api::job_approve))
        .route("/api/jobs/{id}/reject", post(api::job_reject))
        .route("/api/playground/chat", post(api::playground_chat))
        .route(
            "/api/support/grants",
            get(api::grants_list).post(api::grants_create),
        )
        .route("/api/support/grants/{id}", delete(api::grants_revoke))
        .route("/api/support/bundle", get(api::support_bundle))
        .route("/metrics", get(api::metrics))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model_get))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/", get(wizard::root_redirect))
        .route("/setup", get(wizard::root_redirect))
        .route("/setup/", get(wizard::index))
        .route("/setup/{*path}", get(wizard::asset))
        .fallback(fallback);
    api.layer(middleware::from_fn_with_state(
        state.clone(),
        count_requests,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        rotate_session,
    ))
    .layer(middleware::from_fn_with_state(state.clone(), cors::cors))
    .layer(middleware::from_fn_with_state(state.clone(), guard))
    .layer(middleware::from_fn(finish_request_body))
    .layer(middleware::from_fn(error_bodies))
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .with_state(state)
}

async fn fallback(method: Method, uri: axum::http::Uri) -> HostError {
    HostError::RouteNotFound(format!(
        "{method} {}",
        uri.path().chars().take(120).collect::<String>()
    ))
}

/// The methods each route takes, for the `Allow` header of a 405 (axum leaves it empty once the
/// router is wrapped in layers). Kept equal to [`router`]'s routes by the test
/// `allow_table_matches_the_router`.
const ROUTE_METHODS: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/api/setup/status", "GET"),
    ("/api/setup/claim", "POST"),
    ("/api/session/login", "POST"),
    ("/api/session/logout", "POST"),
    ("/api/session/logout-all", "POST"),
    ("/api/session", "GET"),
    ("/api/node", "GET"),
    ("/api/hardware", "GET"),
    ("/api/models", "GET"),
    ("/api/models/load", "POST"),
    ("/api/models/unload", "POST"),
    ("/api/mode", "GET, POST"),
    ("/api/network", "GET, PUT"),
    ("/api/keys", "GET, POST"),
    ("/api/keys/{id}", "DELETE"),
    ("/api/receipts", "GET"),
    ("/api/receipts/{id}", "GET"),
    ("/api/audit", "GET"),
    ("/api/update", "GET"),
    ("/api/usage", "GET"),
    ("/api/jobs", "GET, POST"),
    ("/api/jobs/{id}", "GET"),
    ("/api/jobs/{id}/approve", "POST"),
    ("/api/jobs/{id}/reject", "POST"),
    ("/api/playground/chat", "POST"),
    ("/api/support/grants", "GET, POST"),
    ("/api/support/grants/{id}", "DELETE"),
    ("/api/support/bundle", "GET"),
    ("/metrics", "GET"),
    ("/v1/models", "GET"),
    ("/v1/models/{id}", "GET"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
    ("/v1/responses", "POST"),
    ("/v1/embeddings", "POST"),
    ("/", "GET"),
    ("/setup", "GET"),
    ("/setup/", "GET"),
    ("/setup/{*path}", "GET"),
];

/// The `Allow` value of the route `path` matches (`{x}` one segment, `{*x}` the rest).
fn allowed_methods(path: &str) -> Option<&'static str> {
    let matches = |pat: &str| {
        let (mut p, mut q) = (pat.split('/'), path.split('/'));
        loop {
            match (p.next(), q.next()) {
                (None, None) => return true,
                (Some(a), Some(_)) if a.starts_with("{*") => return true,
                (Some(a), Some(b)) if a.starts_with('{') => {
                    if b.is_empty() {
                        return false;
                    }
                }
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    };
    ROUTE_METHODS
        .iter()
        .find(|(pat, _)| matches(pat))
        .map(|(_, m)| *m)
}

/// Every status >= 400 carries the OpenAI error object: an answer from a lower layer (axum's
/// method router: 405 with an empty body; an extractor's text rejection; a body limit) that is
/// not JSON gets it here, keeping its status and headers. A 405 gets `code:
/// "method_not_allowed"` and keeps axum's `Allow` header.
pub async fn error_bodies(req: Request, next: Next) -> Response {
    let (method, path) = (
        req.method().clone(),
        req.uri().path().chars().take(120).collect::<String>(),
    );
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let err = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = match parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => allowed_methods(&path).unwrap_or("").to_string(),
        };
        HostError::MethodNotAllowed {
            method: method.to_string(),
            path,
            allow,
        }
    } else {
        let text = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let text = if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.trim().chars().take(300).collect()
        };
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => HostError::BodyTooLarge(MAX_BODY_BYTES),
            StatusCode::NOT_FOUND => HostError::RouteNotFound(format!("{method} {path}")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => HostError::UnsupportedMediaType(text),
            s if s.is_client_error() => HostError::InvalidParameter(text),
            _ => HostError::Internal(text),
        }
    };
    let fresh = err.into_response();
    let (fparts, fbody) = fresh.into_parts();
    for (k, v) in fparts.headers.iter() {
        parts.headers.insert(k.clone(), v.clone());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        fparts.status
    };
    Response::from_parts(parts, fbody)
}

/// Host allowlist (DNS rebinding) and security headers on every response. The name checked is
/// the request's authority: the `Host` header (HTTP/1.1), else the URI's authority (HTTP/2's
/// `:authority`, which hyper puts there); an HTTP/2 request gets it copied into `Host` so every
/// later check (CSRF) reads one place.
async fn guard(State(st): St, mut req: Request, next: Next) -> Response {
    let host = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().unwrap_or("").to_string(),
        None => req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
    };
    if !host_matches(&host, &st.config.allowed_hosts) {
        let shown: String = host.chars().take(80).collect();
        tracing::warn!(host = %shown, "refused request with a Host header outside the allowlist");
        return HostError::HostNotAllowed {
            host: shown,
            url: own_url(&st),
        }
        .into_response();
    }
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&host) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

/// Most bytes of an unread request body that [`finish_request_body`] reads before the response
/// goes out, 64 KiB: a body declared larger is left unread (the stream is reset, as before).
pub const FINISH_BODY_MAX_BYTES: u64 = 64 * 1024;
/// How long [`finish_request_body`] waits for the rest of a small body, 1 s.
pub const FINISH_BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// A request body shared between the handler (which may read it, or drop it unread) and
/// [`finish_request_body`], which reads what the handler left once the response is ready.
struct SharedBody(Arc<Mutex<TrackedBody>>);

struct TrackedBody {
    body: Body,
    /// The body reached its end (or failed): nothing is left to read.
    done: bool,
}

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let polled = std::pin::Pin::new(&mut t.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            t.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.done || t.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .body
            .size_hint()
    }
}

/// Read the rest of a small request body that the handler did not read (an early 401 or 403)
/// before the response goes out: at most [`FINISH_BODY_MAX_BYTES`] (a body declared larger is
/// not read), for at most [`FINISH_BODY_TIMEOUT`]. Over HTTP/2 the request stream is then closed
/// by the client when the response ends it, so hyper does not reset it with
/// RST_STREAM(NO_ERROR), which curl 7.88 reports as "HTTP/2 framing layer" about half the time
/// instead of the status; over HTTP/1.1 the connection can be kept.
pub async fn finish_request_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let shared = Arc::new(Mutex::new(TrackedBody { body, done: false }));
    let resp = next
        .run(Request::from_parts(
            parts,
            Body::new(SharedBody(shared.clone())),
        ))
        .await;
    let left = {
        let mut t = shared.lock().unwrap_or_else(|p| p.into_inner());
        (!t.done && !t.body.is_end_stream()).then(|| std::mem::replace(&mut t.body, Body::empty()))
    };
    if let Some(mut body) = left.filter(|_| declared.is_none_or(|n| n <= FINISH_BODY_MAX_BYTES)) {
        let read_rest = async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > FINISH_BODY_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(FINISH_BODY_TIMEOUT, read_rest).await;
    }
    resp
}

/// A URL this node answers on, in the scheme it serves: the address it listens on
/// (`127.0.0.1` for a wildcard bind) and its port; `PORT` when it is not listening (a router
/// driven in-process).
fn own_url(st: &NodeState) -> String {
    let scheme = Scheme::of(st).as_str();
    match st.listen.get() {
        Some(a) if a.ip().is_unspecified() => format!("{scheme}://127.0.0.1:{}", a.port()),
        Some(a) => format!("{scheme}://{a}"),
        None => format!("{scheme}://127.0.0.1:PORT"),
    }
}

/// Session rotation: a request whose session secret is `session_rotate_s` old or more goes on
/// under a fresh secret (same session, same end) and its response sets the new cookie, unless
/// the handler set a cookie itself (sign-in, sign-out). The old secret works for
/// [`auth::SESSION_ROTATE_GRACE_S`] more, for requests already in flight.
async fn rotate_session(State(st): St, mut req: Request, next: Next) -> Response {
    let scheme = Scheme::of(&st);
    let name = scheme.session_cookie_name();
    let Some(secret) = cookie_value(req.headers(), name).map(str::to_string) else {
        return next.run(req).await;
    };
    let now = st.now();
    let fresh = match auth::rotate_session(&st.db, &secret, now, st.config.session_rotate_s) {
        Ok(Some(f)) => f,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={}", fresh.secret)) {
        req.headers_mut().insert(header::COOKIE, v);
    }
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key(header::SET_COOKIE) {
        let max_age = fresh.expires_at.saturating_sub(now);
        resp.headers_mut().insert(
            header::SET_COOKIE,
            session_cookie(&fresh.secret, max_age, scheme),
        );
    }
    resp
}

/// Count requests by route template and status for `/metrics`.
async fn count_requests(State(st): St, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics.request(&route, resp.status().as_u16());
    tracing::debug!(%method, route = %route, status = resp.status().as_u16(), ms = t0.elapsed().as_millis() as u64, "request");
    resp
}

/// Whether a `Host` header value names this node (any port).
pub fn host_matches(host: &str, extra: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, tail)) => {
                if !(tail.is_empty()
                    || (tail.starts_with(':') && tail[1..].chars().all(|c| c.is_ascii_digit())))
                {
                    return false;
                }
                return inner == "::1"
                    || extra
                        .iter()
                        .any(|e| e.eq_ignore_ascii_case(&format!("[{inner}]")));
            }
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => n,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return false;
    }
    // `b3iq.local` is not built in: nothing advertises it, and a LAN machine answering mDNS for
    // it could rebind a browser to this node. A node that advertises a name lists it in
    // `allowed_hosts`.
    name.eq_ignore_ascii_case("localhost")
        || name == "127.0.0.1"
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// CSRF check for cookie-authenticated state changes: `Origin`, if present, must be this host
/// over the scheme this server speaks (`http://host` on a plain server, `https://host` over TLS;
/// the other scheme is another origin); `Sec-Fetch-Site`, if present, must be `same-origin` or
/// `none`.
pub fn same_origin(headers: &HeaderMap, scheme: Scheme) -> Result<(), HostError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let s = site.to_str().unwrap_or("");
        if s != "same-origin" && s != "none" {
            return Err(HostError::CrossOrigin);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if host.is_empty() || origin != format!("{}://{host}", scheme.as_str()) {
            return Err(HostError::CrossOrigin);
        }
    }
    Ok(())
}

/// A JSON body whose errors are our typed 400/413 errors.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HostError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HostError> {
        // JSON only as JSON: a cross-site HTML form can send text/plain or form bodies without a
        // CORS preflight, but not application/json.
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(HostError::UnsupportedMediaType(
                ct.chars().take(80).collect(),
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.is_empty() {
            return Err(HostError::InvalidJson(
                "the body is empty; send a JSON object".into(),
            ));
        }
        HostError::from_json_body(&bytes).map(JsonBody)
    }
}

/// The raw body with our typed errors: 413 beyond [`MAX_BODY_BYTES`], 408 when it has not
/// arrived in full within the server's body timeout ([`serve::BodyTimeout`]).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = HostError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HostError> {
        let limit = req
            .extensions()
            .get::<serve::BodyTimeout>()
            .map(|t| t.0)
            .unwrap_or(serve::BODY_TIMEOUT);
        let read = Bytes::from_request(req, state);
        let bytes = tokio::time::timeout(limit, read)
            .await
            .map_err(|_| HostError::RequestTimeout(limit.as_secs()))?;
        bytes.map(RawBody).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HostError::BodyTooLarge(MAX_BODY_BYTES)
            } else {
                HostError::InvalidJson(e.body_text())
            }
        })
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client's IP address, when the server was started with connect info (the node's own
/// server always is; a router driven in-process has none).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientAddr {
    /// The sign-in source this client counts against: its IP address (IPv4-mapped IPv6 shown as
    /// IPv4), else `http`.
    pub fn source(&self) -> String {
        match self.0 {
            Some(std::net::IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_else(|| v6.to_string()),
            Some(ip) => ip.to_string(),
            None => "http".to_string(),
        }
    }
}

/// The bearer token, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, tok) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim())
}

/// An authenticated owner (session cookie). For state-changing methods the CSRF check runs too.
pub struct Owner {
    /// The session.
    pub session: Session,
    /// The raw cookie value (to log out).
    pub secret: String,
}

impl FromRequestParts<Arc<NodeState>> for Owner {
    type Rejection = HostError;
    async fn from_request_parts(parts: &mut Parts, st: &Arc<NodeState>) -> Result<Self, HostError> {
        let now = st.now();
        let scheme = Scheme::of(st);
        if let Some(secret) = cookie_value(&parts.headers, scheme.session_cookie_name()) {
            if let Some(session) = auth::session(&st.db, secret, now)? {
                if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
                    same_origin(&parts.headers, scheme)?;
                }
                return Ok(Owner {
                    session,
                    secret: secret.to_string(),
                });
            }
        }
        // A support grant or an API key is not an owner: say so clearly.
        if let Some(tok) = bearer(&parts.headers) {
            if auth::authenticate_grant(&st.db, tok, now).is_ok()
                || auth::authenticate_key(&st.db, tok, auth::SCOPE_INFERENCE, now).is_ok()
            {
                return Err(HostError::InsufficientScope("owner"));
            }
        }
        Err(HostError::SessionRequired)
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<NodeState>> for Owner {
    type Rejection = HostError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<NodeState>,
    ) -> Result<Option<Self>, HostError> {
        match <Owner as FromRequestParts<Arc<NodeState>>>::from_request_parts(parts, st).await {
            Ok(o) => Ok(Some(o)),
            Err(HostError::SessionRequired | HostError::InsufficientScope(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `Set-Cookie` value for a session secret: `HttpOnly; SameSite=Strict; Path=/`, and over TLS
/// the `__Host-` name with `Secure`.
pub fn session_cookie(secret: &str, max_age_s: u64, scheme: Scheme) -> HeaderValue {
    let name = scheme.session_cookie_name();
    let secure = if scheme == Scheme::Https {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| clear_cookie(scheme))
}

/// `Set-Cookie` value clearing the session cookie of `scheme`.
pub fn clear_cookie(scheme: Scheme) -> HeaderValue {
    match scheme {
        Scheme::Http => {
            HeaderValue::from_static("b3iq_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
        }
        Scheme::Https => HeaderValue::from_static(
            "__Host-b3iq_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure",
        ),
    }
}

/// A JSON response with a status.
pub fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A plain empty response.
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn allow_table_matches_the_router() {
        // Every `.route("PATH", METHOD(..)...)` in `router`, read from this file's source.
        let src = include_str!("mod.rs");
        let body =
            &src[src.find("pub fn router(").unwrap()..src.find(".fallback(fallback);").unwrap()];
        let mut routes = Vec::new();
        for part in body.split(".route(").skip(1) {
            let path = part.split('"').nth(1).unwrap();
            let methods: Vec<&str> = ["get(", "post(", "put(", "delete("]
                .iter()
                .filter(|m| {
                    part.contains(&format!(" {m}"))
                        || part.contains(&format!("\n{m}"))
                        || part.contains(&format!(".{m}"))
                        || part.trim_start().contains(&format!(", {m}"))
                        || part.contains(&format!("\t{m}"))
                        || part.split_whitespace().any(|w| w.starts_with(*m))
                })
                .map(|m| m.trim_end_matches('('))
                .collect();
            routes.push((
                path.to_string(),
                methods
                    .iter()
                    .map(|m| m.to_uppercase())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        let table: Vec<(String, String)> = ROUTE_METHODS
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(routes, table);
        assert_eq!(allowed_methods("/v1/chat/completions"), Some("POST"));
        assert_eq!(allowed_methods("/api/keys/key_1"), Some("DELETE"));
        assert_eq!(allowed_methods("/setup/a/b.js"), Some("GET"));
        assert_eq!(allowed_methods("/v1/nothing"), None);
    }

    use super::*;

    #[test]
    fn host_allowlist() {
        let extra = vec!["gamer-pc.lan".to_string()];
        for ok in [
            "127.0.0.1:7420",
            "localhost",
            "LOCALHOST:80",
            "[::1]:7420",
            "[::1]",
            "gamer-pc.lan:7420",
            "localhost.",
        ] {
            assert!(host_matches(ok, &extra), "{ok}");
        }
        for bad in [
            "",
            "evil.com",
            "127.0.0.1.evil.com:7420",
            "attacker.localhost.com",
            "[::2]:1",
            "localhost:7420:evil",
            "10.0.0.5:7420",
            "[::1",
            "[::1]evil",
            "localhost:",
            ":7420",
            "b3iq.local",
            "b3iq.local:7420",
        ] {
            assert!(!host_matches(bad, &extra), "{bad}");
        }
    }

    #[test]
    fn csrf_rules() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7420"));
        assert!(
            same_origin(&h, Scheme::Http).is_ok(),
            "no Origin (curl) is fine"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7420"),
        );
        assert!(same_origin(&h, Scheme::Http).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, Scheme::Http).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h, Scheme::Http).is_err());
        h.remove("sec-fetch-site");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h, Scheme::Http).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h, Scheme::Http).is_err());
        // Not the scheme this server speaks.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:7420"),
        );
        assert!(same_origin(&h, Scheme::Http).is_err());
        // Over TLS it is, and plain http:// is the other origin.
        assert!(same_origin(&h, Scheme::Https).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7420"),
        );
        assert!(same_origin(&h, Scheme::Https).is_err());
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; b3iq_session=xyz; c=3"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("xyz"));
        let c = session_cookie("abc", 60, Scheme::Http);
        let s = c.to_str().unwrap();
        assert!(
            s.starts_with("b3iq_session=abc;")
                && s.contains("HttpOnly")
                && s.contains("SameSite=Strict")
                && s.contains("Path=/")
        );
        assert!(!s.contains("Secure"));
        let c = session_cookie("abc", 60, Scheme::Https);
        let s = c.to_str().unwrap();
        assert!(
            s.starts_with("__Host-b3iq_session=abc;")
                && s.ends_with("; Secure")
                && s.contains("Path=/")
                && !s.contains("Domain")
        );
        assert!(clear_cookie(Scheme::Https)
            .to_str()
            .unwrap()
            .starts_with("__Host-b3iq_session=;"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-b3iq_session=tls; b3iq_session=plain"),
        );
        assert_eq!(
            cookie_value(&h, Scheme::Https.session_cookie_name()),
            Some("tls")
        );
        assert_eq!(
            cookie_value(&h, Scheme::Http.session_cookie_name()),
            Some("plain")
        );
    }
}
