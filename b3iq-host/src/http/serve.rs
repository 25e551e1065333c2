//! The node's HTTP server: hyper-util's HTTP/1.1 + HTTP/2 connection builder around the axum
//! router, with the bounds a server open to a LAN (or a hostile web page on loopback) needs:
//!
//! - **Header timeout** ([`ServeLimits::header_timeout`]): a connection that has not sent a
//!   whole request head within it is closed. hyper also starts it when a keep-alive connection
//!   goes idle after a response, so it is the idle timeout too (silent connections, a header byte
//!   every few seconds, idle keep-alive).
//! - **Body timeout**: the body extractors ([`super::JsonBody`], [`super::RawBody`]) give up on
//!   a body that has not fully arrived within [`BODY_TIMEOUT`] (408).
//! - **Connection bound** ([`ServeLimits::max_connections`]): beyond it, new connections wait
//!   in the kernel's accept backlog instead of taking memory here.
//! - **Shutdown deadline** ([`ServeLimits::shutdown_grace`]): on shutdown the listener closes at
//!   once, connections finish their in-flight requests, and whatever is still open after the
//!   deadline is dropped, so a half-sent request cannot keep the process alive.
//!
//! - **TLS** (optional, `context::tls`): the handshake must finish within the header timeout;
//!   ALPN offers `h2` and `http/1.1`. A plain-HTTP request on a TLS port gets a short HTTP/1.1
//!   400 naming the `https://` URL to use instead of a failed handshake (nginx answers 497 there):
//!   the address the server listens on, never the request's unchecked `Host`, with the security
//!   headers every other response carries.
//!
//! Each request carries its peer address as [`axum::extract::ConnectInfo`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

/// How long a request body may take to arrive in full when the server set no bound, 30 s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The body timeout of a served request (a request extension the body extractors read).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Bounds on connections (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time to receive a whole request head, and the longest idle keep-alive. Default 10 s.
    pub header_timeout: Duration,
    /// Time for a request body to arrive in full. Default 30 s.
    pub body_timeout: Duration,
    /// Most connections served at once. Default 256.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests. Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits::from_config(&crate::context::Config::default())
    }
}

impl ServeLimits {
    /// The limits `config.json` sets (`header_timeout_s`, `body_timeout_s`, `max_connections`,
    /// `shutdown_grace_s`; a zero is refused when the config is loaded, and taken as 1 here for a
    /// `Config` built in code).
    pub fn from_config(c: &crate::context::Config) -> ServeLimits {
        let s = |v: u64| Duration::from_secs(v.max(1));
        ServeLimits {
            header_timeout: s(c.header_timeout_s),
            body_timeout: s(c.body_timeout_s),
            max_connections: c.max_connections.max(1) as usize,
            shutdown_grace: s(c.shutdown_grace_s),
        }
    }
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown` fires, then drain within the
/// grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: oneshot::Receiver<()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let https_url = listener.local_addr().ok().map(own_https_url).unwrap_or_else(|| "https://<this node>/".to_string());
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot before accepting, so excess connections wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let svc = tower::ServiceExt::map_request(app.clone(), move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(BodyTimeout(limits.body_timeout));
            req
        });
        let (builder, watcher, header_timeout, acceptor) = (builder.clone(), graceful.watcher(), limits.header_timeout, acceptor.clone());
        let https_url = https_url.clone();
        conns.spawn(async move {
            let _permit = permit;
            // hyper-util reads the first bytes to tell HTTP/1.1 from HTTP/2 before either
            // protocol's own timers run: a connection that sends nothing is closed here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let svc = TowerToHyperService::new(svc);
            let Some(acceptor) = acceptor else {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            };
            // A TLS record starts with content type 22 (handshake); anything else is a client
            // speaking plain HTTP to a TLS port.
            if first[0] != 0x16 {
                refuse_plain_http(stream, &https_url).await;
                return;
            }
            let tls_stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(open = conns.len(), grace_s = limits.shutdown_grace.as_secs(), "connections still open after the shutdown deadline were closed");
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// The `https://` URL a plain-HTTP client is pointed to: the listening address and port (a
/// placeholder for the name and the port for a wildcard bind, whose clients may be anywhere).
fn own_https_url(a: std::net::SocketAddr) -> String {
    if a.ip().is_unspecified() {
        format!("https://<this node's address>:{}/", a.port())
    } else {
        format!("https://{a}/")
    }
}

/// Answer a plain-HTTP request on a TLS port with a 400 that says what to do, then close. The
/// request head is read first (up to 8 KiB, 2 s) and dropped, so the client is not reset before
/// it reads the answer; nothing of it is echoed.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, https_url: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    let resp = plain_http_response(https_url);
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(resp.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// The whole HTTP/1.1 answer of [`refuse_plain_http`]: 400 with the JSON error body (OpenAI's
/// shape, code `https_required`) and the headers the router puts on every response
/// (`X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options`).
fn plain_http_response(https_url: &str) -> String {
    let body = serde_json::json!({"error": {
        "message": format!("this node serves HTTPS only: use {https_url} (the certificate's SHA-256 fingerprint is shown by `b3iqd status`)"),
        "type": "invalid_request_error",
        "code": "https_required",
    }})
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\nx-frame-options: DENY\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_names_the_own_address_with_the_security_headers() {
        assert_eq!(own_https_url("127.0.0.1:7420".parse().unwrap()), "https://127.0.0.1:7420/");
        assert_eq!(own_https_url("0.0.0.0:7420".parse().unwrap()), "https://<this node's address>:7420/");
        assert_eq!(own_https_url("[fd00::5]:7420".parse().unwrap()), "https://[fd00::5]:7420/");
        let r = plain_http_response("https://192.168.1.20:7420/");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        for h in ["x-content-type-options: nosniff", "referrer-policy: no-referrer", "x-frame-options: deny", "connection: close"] {
            assert!(lower.contains(h), "{h} missing: {head}");
        }
        assert!(lower.contains(&format!("content-length: {}", body.len())), "{head}");
        let m: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(m["error"]["code"], "https_required");
        assert!(m["error"]["message"].as_str().unwrap().contains("https://192.168.1.20:7420/"));
    }
}
