//! The setup wizard at `/setup/`, embedded at compile time from `apps/setup-wizard/dist/`.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::RustEmbed;

use crate::error::HostError;

#[derive(RustEmbed)]
#[folder = "../apps/setup-wizard/dist/"]
struct Assets;

/// The Content-Security-Policy sent with every wizard file.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /` and `GET /setup`: redirect to the wizard.
pub async fn root_redirect() -> Redirect {
    Redirect::to("/setup/")
}

/// `GET /setup/`.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /setup/{*path}`: the file, or `index.html` for extension-less client routes.
pub async fn asset(Path(path): Path<String>) -> Response {
    if path.is_empty() {
        return serve("index.html");
    }
    if Assets::get(&path).is_some() {
        return serve(&path);
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if !last.contains('.') {
        return serve("index.html");
    }
    HostError::NotFound("file".into()).into_response()
}

fn serve(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return HostError::NotFound("file".into()).into_response();
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut r = Response::new(Body::from(file.data.into_owned()));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    let cache = if path == "index.html" {
        "no-store"
    } else if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
