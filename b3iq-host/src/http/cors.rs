//! CORS policy (docs/api.md, "CORS").
//!
//! - Bearer-key routes (`/v1/...`) grant loopback origins (`http(s)://localhost`,
//!   `127.0.0.1`, `[::1]`, any port) and the origins in config.json `cors_origins` (exact
//!   `scheme://host[:port]`, or `*` for any), as Ollama's `OLLAMA_ORIGINS` does. A browser can
//!   only call them with a key it holds; no ambient credential (cookie) is ever accepted there.
//! - Cookie routes (`/api/...`, `/setup/...`, everything else) never grant CORS: the owner's
//!   session must not be usable from another page.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) that is not
//!   granted gets 403 with the error object (`code: "cors_origin_not_allowed"`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::context::NodeState;
use crate::error::HostError;

/// Seconds a browser may cache a granted preflight (`Access-Control-Max-Age`), 600.
pub const PREFLIGHT_MAX_AGE_S: u32 = 600;
/// Methods granted on the bearer-key routes.
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers granted on the bearer-key routes (what the official clients send).
const ALLOW_HEADERS: &str = "authorization, content-type, accept, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-runtime, x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout, x-stainless-helper-method, openai-organization, openai-project, openai-beta";

/// Whether `path` is a bearer-key route (the only ones that may grant CORS).
pub fn bearer_route(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Whether `origin` is a loopback origin: `http` or `https`, host `localhost`, `127.0.0.1` or
/// `[::1]`, any port or none.
pub fn loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(r) = rest.strip_prefix("[::1]") {
        return r.is_empty()
            || r.strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    } else {
        rest
    };
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1")
}

/// Whether the policy grants `origin` on a bearer-key route, with `extra` the configured
/// `cors_origins`.
pub fn origin_allowed(origin: &str, extra: &[String]) -> bool {
    loopback_origin(origin)
        || extra
            .iter()
            .any(|e| e == "*" || e.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The CORS middleware: answers preflights and adds `Access-Control-Allow-Origin` to granted
/// cross-origin answers.
pub async fn cors(State(st): State<Arc<NodeState>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let granted =
        bearer_route(req.uri().path()) && origin_allowed(&origin, &st.config.cors_origins);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !granted {
            let shown: String = origin.chars().take(80).collect();
            return HostError::CorsRefused(shown).into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow_origin(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            asked.unwrap_or(HeaderValue::from_static(ALLOW_HEADERS)),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_S),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    if granted {
        allow_origin(resp.headers_mut(), &origin);
    }
    resp
}

fn allow_origin(h: &mut axum::http::HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_configured_origins() {
        for o in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8443",
            "http://LOCALHOST:5173",
        ] {
            assert!(loopback_origin(o), "{o}");
        }
        for o in [
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "http://[::1]x",
            "http://localhost:",
            "ftp://localhost",
        ] {
            assert!(!loopback_origin(o), "{o}");
        }
        let extra = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed("https://app.example.com", &extra));
        assert!(!origin_allowed("https://evil.example.com", &extra));
        assert!(origin_allowed("https://any.example", &["*".to_string()]));
        assert!(
            bearer_route("/v1/chat/completions")
                && !bearer_route("/api/keys")
                && !bearer_route("/v1x")
        );
    }
}
